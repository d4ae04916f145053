"""Export the trained adapter in peft format (safetensors), gathering ZeRO-3 partitions first."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file

from .engine import Dist
from .packing import unwrap
from .storage import RunStore

ADAPTER = "adapter"


def export_adapter(engine, zero_stage: int, store: RunStore, dist: Dist) -> None:
    import deepspeed

    model = unwrap(engine.module)
    params = [p for p in model.parameters() if p.requires_grad]
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
