"""Where this process stands in a distributed run (rank, world size, local rank), and joining the process group."""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist(0, 1, 0)


def on_gpu() -> bool:
    return torch.cuda.is_available()


def _in_ray_train() -> bool:
    try:
        import ray.train

        ray.train.get_context()
        return True
    except Exception:
        return False


def setup_distributed() -> Dist:
    """Join the process group started by torchrun or Ray Train, or make a one-process group."""
    import deepspeed

    if torch.distributed.is_initialized() and _in_ray_train():
        import ray.train

        ctx = ray.train.get_context()
        os.environ.update(RANK=str(ctx.get_world_rank()), WORLD_SIZE=str(ctx.get_world_size()),
                          LOCAL_RANK=str(ctx.get_local_rank()))
    backend = "nccl" if on_gpu() else "gloo"
    if not torch.distributed.is_initialized() and "RANK" not in os.environ:
        # One process: a file rendezvous, so no port can be taken by someone else in the meantime.
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        handle, path = tempfile.mkstemp(prefix="emorec-rendezvous-")
        os.close(handle)
        os.unlink(path)
        torch.distributed.init_process_group(backend, init_method=f"file://{path}", rank=0, world_size=1)
    if not on_gpu():
        # The shared-memory all-reduce is an optional speed-up that JIT-compiles for ~40 s; gloo suffices.
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if on_gpu():
        torch.cuda.set_device(local_rank)
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank)
