"""Sharded DeepSpeed checkpoints on any fsspec URL, each made valid by a manifest written last.

Layout under the run's output URL:
    checkpoints/step-0000050/            one directory per checkpoint
        mp_rank_00_model_states.pt       DeepSpeed shards (adapter only; frozen base excluded)
        zero_pp_rank_R_mp_rank_00_optim_states.pt
        rng_rank_R.safetensors           every rank's RNG, without pickle
        trainer_state.json               step, data position, loss curve
        MANIFEST.json                    files, sizes, sha256 -- written last; no manifest, no checkpoint
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass

import torch

from .engine import Dist
from .errors import CheckpointError
from .rng import load_rng, save_rng
from .storage import RunStore

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MANIFEST = "MANIFEST.json"
STATE = "trainer_state.json"


def tag_for(step: int) -> str:
    return f"step-{step:07d}"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_dir(root: str) -> dict[str, dict]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            out[rel] = {"size": os.path.getsize(full), "sha256": sha256(full)}
    return out


def _all_gather(obj) -> list:
    if not torch.distributed.is_initialized():
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


@dataclass
class Checkpointer:
    store: RunStore
    dist: Dist
    scratch: str
    keep_last: int

    def _stage(self, kind: str) -> str:
        path = os.path.join(self.scratch, f"{kind}-rank{self.dist.rank}")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def save(self, engine, step: int, state: dict) -> str:
        """Every rank writes and uploads its own shard; rank 0 then writes the manifest."""
        tag = tag_for(step)
        stage = self._stage("save")
        started = time.perf_counter()
        engine.save_checkpoint(stage, tag=tag, save_latest=False, exclude_frozen_parameters=True)
        tag_dir = os.path.join(stage, tag)
        os.makedirs(tag_dir, exist_ok=True)
        save_rng(os.path.join(tag_dir, f"rng_rank_{self.dist.rank}.safetensors"))
        if self.dist.is_main:
            import json

            with open(os.path.join(tag_dir, STATE), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2)
        mine = describe_dir(tag_dir)
        for rel in mine:
            self.store.put_file(os.path.join(tag_dir, rel), f"{CHECKPOINTS}/{tag}/{rel}")
        everyone = _all_gather(mine)
        if self.dist.is_main:
            files: dict[str, dict] = {}
            for part in everyone:
                files.update(part)
            self.store.write_json(f"{CHECKPOINTS}/{tag}/{MANIFEST}", {"tag": tag, "step": step, "files": files})
            self._prune()
        _barrier()
        shutil.rmtree(stage, ignore_errors=True)
        if self.dist.is_main:
            log.info("checkpoint %s saved (%d files) in %.1fs", tag, sum(len(p) for p in everyone), time.perf_counter() - started)
        return tag

    def complete_tags(self) -> list[str]:
        tags = [t for t in self.store.listdir(CHECKPOINTS) if t.startswith("step-")]
        return [t for t in tags if self.store.exists(f"{CHECKPOINTS}/{t}/{MANIFEST}")]

    def _prune(self) -> None:
        complete = self.complete_tags()
        if not complete:
            return
        newest = complete[-1]
        keep = set(complete[-self.keep_last:])
        for tag in self.store.listdir(CHECKPOINTS):
            partial_and_old = tag not in complete and tag < newest
            if (tag in complete and tag not in keep) or partial_and_old:
                self.store.rm(f"{CHECKPOINTS}/{tag}")

    def resolve(self, resume: str) -> str | None:
        if resume == "never":
            return None
        complete = self.complete_tags()
        if resume == "auto":
            return complete[-1] if complete else None
        if resume not in complete:
            raise CheckpointError(
                f"resume={resume!r}: no complete checkpoint of that name under {self.store.url}/{CHECKPOINTS} "
                f"(complete ones: {', '.join(complete) or 'none'})"
            )
        return resume

    def download(self, tag: str) -> str:
        """Fetch a checkpoint into local scratch and check every file against the manifest."""
        manifest = self.store.read_json(f"{CHECKPOINTS}/{tag}/{MANIFEST}")
        stage = self._stage("load")
        tag_dir = os.path.join(stage, tag)
        for rel, meta in manifest["files"].items():
            local = os.path.join(tag_dir, rel)
            self.store.get_file(f"{CHECKPOINTS}/{tag}/{rel}", local)
            if os.path.getsize(local) != meta["size"] or sha256(local) != meta["sha256"]:
                raise CheckpointError(f"checkpoint {tag}: {rel} does not match its manifest (size or sha256)")
        return stage

    def load(self, engine, tag: str) -> dict:
        import json

        stage = self.download(tag)
        engine.load_checkpoint(stage, tag=tag, load_module_strict=False)
        tag_dir = os.path.join(stage, tag)
        rng = os.path.join(tag_dir, f"rng_rank_{self.dist.rank}.safetensors")
        if os.path.exists(rng):
            load_rng(rng)
        else:
            log.warning("checkpoint %s has no RNG state for rank %d (world size changed?)", tag, self.dist.rank)
        with open(os.path.join(tag_dir, STATE), encoding="utf-8") as f:
            state = json.load(f)
        _barrier()
        shutil.rmtree(stage, ignore_errors=True)
        return state
