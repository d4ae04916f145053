"""Export the trained adapter in peft format (safetensors), gathering ZeRO-3 partitions first."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file

from emorec.dist import Dist
from emorec.io.storage import RunStore
from emorec.model.adapters import ADAPTER, trainable_parameters
from emorec.model.packed_lm import unwrap


def export_adapter(engine, zero_stage: int, store: RunStore, dist: Dist) -> None:
    import deepspeed

    model = unwrap(engine.module)
    params = trainable_parameters(model)
    gather = deepspeed.zero.GatheredParameters(params, modifier_rank=None) if zero_stage == 3 else contextlib.nullcontext()
    from peft import get_peft_model_state_dict

    with gather:
        # Every rank builds the state dict: for prefix tuning it runs the prompt encoder, a ZeRO-3 collective.
        state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in get_peft_model_state_dict(model, save_embedding_layers=False).items()}
        if dist.is_main:
            tmp = tempfile.mkdtemp(prefix="emorec-adapter-")
            try:
                save_file(state, os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
                model.peft_config["default"].save_pretrained(tmp)
                for name in os.listdir(tmp):
                    store.put_file(os.path.join(tmp, name), f"{ADAPTER}/{name}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def export_run(run_url: str, out: str, layout: str = "peft", storage_options: dict | None = None) -> str:
    """Copy a finished run's adapter to the local folder `out`: as trained (peft on native GLM), or in ChatGLM2/3's
    own layout (`chatglm`: LoRA on query_key_value, or THUDM's P-Tuning v2 prefix checkpoint). Returns the method."""
    from emorec.errors import CheckpointError, ConfigError
    from emorec.model.chatglm_adapters import to_chatglm_layout

    store = _open(run_url, storage_options)
    if not store.exists(f"{ADAPTER}/adapter_config.json") or not store.exists("config.json"):
        raise CheckpointError(f"{run_url}: no {ADAPTER}/adapter_config.json; is this a finished `emorec train` run?")
    if os.path.isdir(out) and os.listdir(out):
        raise ConfigError(f"{out} exists and is not empty; pick a new folder")
    local = tempfile.mkdtemp(prefix="emorec-adapter-")
    try:
        for name in store.listdir(ADAPTER):
            store.get_file(f"{ADAPTER}/{name}", os.path.join(local, name))
        if layout == "peft":
            shutil.copytree(local, out, dirs_exist_ok=True)
            import json

            with open(os.path.join(local, "adapter_config.json"), encoding="utf-8") as f:
                return "lora" if json.load(f).get("peft_type") == "LORA" else "ptuning"
        model_name = store.read_json("config.json").get("model", {}).get("name", "")
        return to_chatglm_layout(local, out, model_name)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _open(run_url: str, storage_options: dict | None):
    from emorec.io.storage import open_store

    return open_store(run_url, storage_options)
