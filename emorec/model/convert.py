"""`emorec convert`: a ChatGLM2/3 checkpoint written as a standard transformers GLM checkpoint.

The result is `model_type: glm` with safetensors shards and a fast tokenizer; stock `GlmForCausalLM.from_pretrained`
and `AutoTokenizer.from_pretrained` load it without emorec. The tokenizer keeps the family's chat format
(`chat_format` in tokenizer_config.json), so emorec prompts the converted model as it prompted the original.
"""

from __future__ import annotations

import logging
import os

import torch

from emorec.errors import ConfigError
from emorec.model.chatglm_weights import is_chatglm_dir, read_json, weight_files

log = logging.getLogger(__name__)


def checkpoint_dtype(path: str) -> torch.dtype:
    name = read_json(os.path.join(path, "config.json")).get("torch_dtype", "float32")
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def convert(src: str, dst: str, *, dtype: str = "auto", max_shard_size: str = "5GB", overwrite: bool = False,
            show_progress: bool = True) -> str:
    """Write `src` (a ChatGLM2/3 folder or hub id) to `dst` as a native GLM checkpoint; returns the family."""
    from tqdm.auto import tqdm

    from emorec.model.families import check_chatglm_dir, load_chatglm, local_chatglm

    if os.path.isdir(dst) and os.listdir(dst) and not overwrite:
        raise ConfigError(f"{dst} exists and is not empty; pick a new folder or pass --overwrite")
    path = local_chatglm(src)
    if not is_chatglm_dir(path):
        raise ConfigError(f"{os.path.join(path, 'config.json')}: not a ChatGLM2/3 checkpoint (model_type 'chatglm')")
    check_chatglm_dir(path)
    torch_dtype = checkpoint_dtype(path) if dtype == "auto" else getattr(torch, dtype)
    files = weight_files(path)
    with tqdm(total=len(files), desc="reading shards", unit="file", disable=not show_progress) as bar:
        model, tokenizer, family = load_chatglm(path, dtype=torch_dtype, progress=bar)
    os.makedirs(dst, exist_ok=True)
    log.info("writing %s as a native GLM checkpoint (%s) to %s", family, torch_dtype, dst)
    model.config._name_or_path = os.path.basename(os.path.normpath(dst))
    # Kept so that adapters trained on DST can be written back in ChatGLM's layout (emorec export --layout chatglm).
    model.config.chatglm_config = {k: v for k, v in read_json(os.path.join(path, "config.json")).items()
                                   if k != "auto_map"}
    model.config.chatglm_version = int(family[-1])
    model.save_pretrained(dst, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(dst)
    return family
