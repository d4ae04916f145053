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


def register(sub) -> None:
    c = sub.add_parser(
        "convert", help="convert a ChatGLM2/3 checkpoint into a standard transformers GLM checkpoint",
        description="Read a ChatGLM2-6B / ChatGLM3-6B folder (or hub id, downloaded without its code files) and "
                    "write DST: config.json (model_type glm), safetensors shards and a fast tokenizer, loadable by "
                    "stock GlmForCausalLM / AutoTokenizer. No file of the checkpoint is executed; pickled .bin "
                    "shards are read with torch.load(weights_only=True). Example: emorec convert THUDM/chatglm2-6b "
                    "models/chatglm2-6b-glm")
    c.add_argument("src", help="ChatGLM2/3 checkpoint folder or hub id")
    c.add_argument("dst", help="output folder (must be new or empty)")
    c.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="weights' dtype in DST (auto: the checkpoint's torch_dtype)")
    c.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    c.add_argument("--overwrite", action="store_true", help="write into a non-empty DST")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    family = convert(args.src, args.dst, dtype=args.dtype, max_shard_size=args.max_shard_size,
                     overwrite=args.overwrite, show_progress=not args.no_progress)
    print(f"{args.src} ({family}) -> {args.dst}: model_type glm, load it with GlmForCausalLM.from_pretrained")
    return 0
