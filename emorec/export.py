"""Export the trained adapter in peft format (safetensors), gathering ZeRO-3 partitions first."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import torch

from .engine import Dist
from .storage import RunStore

ADAPTER = "adapter"


def export_adapter(engine, zero_stage: int, store: RunStore, dist: Dist) -> None:
    import deepspeed

    model = engine.module
    params = [p for p in model.parameters() if p.requires_grad]
    gather = deepspeed.zero.GatheredParameters(params, modifier_rank=None) if zero_stage == 3 else contextlib.nullcontext()
    with gather:
        if dist.is_main:
            from peft import get_peft_model_state_dict

            state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in get_peft_model_state_dict(model).items()}
            tmp = tempfile.mkdtemp(prefix="emorec-adapter-")
            try:
                model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
                for name in os.listdir(tmp):
                    store.put_file(os.path.join(tmp, name), f"{ADAPTER}/{name}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
