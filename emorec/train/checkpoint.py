"""Sharded DeepSpeed checkpoints on any fsspec URL, each made valid by a manifest written last.

Layout under the run's output URL:
    checkpoints/step-0000050/
        mp_rank_00_model_states.pt          DeepSpeed shards: adapter and optimizer only, never the base
        zero_pp_rank_R_mp_rank_00_optim_states.pt
        rng_rank_R.safetensors              each rank's RNG, without pickle
        trainer_state.json                  step, data position, loss curve
        parts/rank_R.json                   what rank R uploaded (written after its files)
        MANIFEST.json                       every file, size, sha256: written last, by rank 0,
                                            once every rank's part is there. No manifest, no checkpoint.

Saving blocks training only while DeepSpeed writes to local disk. Uploads run in a background
thread (or in Ray Train's asynchronous checkpoint upload); the store retries each operation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from emorec.dist import Dist
from emorec.errors import CheckpointError, EmorecError
from emorec.io.secrets import redact_text
from emorec.io.storage import RunStore, check_relative
from emorec.train.rng import load_rng, save_rng

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MANIFEST = "MANIFEST.json"
STATE = "trainer_state.json"
CURVE = "train_curve.json"
PARTS = "parts"
SHA256 = re.compile(r"[0-9a-f]{64}")


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


# publish(local_tag_dir, tag, upload) hands a staged shard to whoever uploads it.
Publisher = Callable[[str, str, Callable[[str, str], None]], None]


@dataclass
class Checkpointer:
    store: RunStore
    dist: Dist
    scratch: str
    keep_last: int
    parts_timeout_s: float = 600.0
    publisher: Publisher | None = None
    zero_stage: int | None = None  # when known, a manifest must list every shard DeepSpeed needs at this stage
    _pool: ThreadPoolExecutor | None = None
    _pending: list[Future] = field(default_factory=list)
    fetched: dict[str, str] = field(default_factory=dict)  # tag -> its verified local copy, from fetch()

    # ---- saving ---------------------------------------------------------------------------

    def save(self, engine, step: int, state: dict) -> str:
        """Write this rank's shard locally, then hand it to the uploader; returns without waiting."""
        self.raise_failed_uploads()
        tag = tag_for(step)
        stage = os.path.join(self.scratch, f"{tag}-rank{self.dist.rank}")
        shutil.rmtree(stage, ignore_errors=True)
        engine.save_checkpoint(stage, tag=tag, save_latest=False, exclude_frozen_parameters=True)
        tag_dir = os.path.join(stage, tag)
        os.makedirs(tag_dir, exist_ok=True)
        save_rng(os.path.join(tag_dir, f"rng_rank_{self.dist.rank}.safetensors"))
        if self.dist.is_main:
            with open(os.path.join(tag_dir, STATE), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2)
        if self.publisher is not None:
            self.publisher(tag_dir, tag, self.upload_shard)
        else:
            self._pool = self._pool or ThreadPoolExecutor(max_workers=1, thread_name_prefix="emorec-upload")
            self._pending.append(self._pool.submit(self._upload_and_clean, stage, tag_dir, tag))
        return tag

    def _upload_and_clean(self, stage: str, tag_dir: str, tag: str) -> None:
        self.upload_shard(tag_dir, tag)
        shutil.rmtree(stage, ignore_errors=True)

    def upload_shard(self, tag_dir: str, tag: str) -> None:
        """Upload this rank's files, then its part list; rank 0 then writes the manifest."""
        started = time.perf_counter()
        files = describe_dir(tag_dir)
        remote = f"{CHECKPOINTS}/{tag}"
        for rel in files:
            self.store.put_file(os.path.join(tag_dir, rel), f"{remote}/{rel}")
        part = {"rank": self.dist.rank, "world": self.dist.world, "files": files}
        self.store.write_json(f"{remote}/{PARTS}/rank_{self.dist.rank}.json", part)
        if self.dist.is_main:
            self._write_manifest(tag)
            with open(os.path.join(tag_dir, STATE), encoding="utf-8") as f:
                self.store.write_json(CURVE, json.load(f)["curve"])
            self._prune(tag)
            size = sum(meta["size"] for meta in files.values())
            log.info("checkpoint %s complete (rank 0 uploaded %.1f MB in %.1fs)", tag, size / 1e6,
                     time.perf_counter() - started)

    def _write_manifest(self, tag: str) -> None:
        remote = f"{CHECKPOINTS}/{tag}"
        deadline = time.monotonic() + self.parts_timeout_s
        while True:
            listed = self.store.listdir(f"{remote}/{PARTS}")
            names = [n for n in listed if re.fullmatch(r"rank_\d+\.json", n)]
            if len(names) >= self.dist.world:
                break
            if time.monotonic() > deadline:
                raise CheckpointError(f"checkpoint {tag}: only {len(names)} of {self.dist.world} ranks uploaded "
                                      f"their shards within {self.parts_timeout_s:.0f}s")
            time.sleep(0.2)
        files: dict[str, dict] = {}
        for r in range(self.dist.world):
            part = self.store.read_json(f"{remote}/{PARTS}/rank_{r}.json")
            files.update(part["files"])
        manifest = {"tag": tag, "step": int(tag.split("-")[1]), "world_size": self.dist.world, "files": files}
        self.store.write_json(f"{remote}/{MANIFEST}", manifest)

    def flush(self) -> None:
        """Wait for every pending upload; re-raise the first failure."""
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()

    def raise_failed_uploads(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for fut in done:
            fut.result()

    def close(self) -> None:
        self.flush()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # ---- finding and loading ----------------------------------------------------------------

    def complete_tags(self) -> list[str]:
        tags = [t for t in self.store.listdir(CHECKPOINTS) if t.startswith("step-")]
        return [t for t in tags if self.store.exists(f"{CHECKPOINTS}/{t}/{MANIFEST}")]

    def _prune(self, saved: str) -> None:
        """Keep the newest keep_last complete checkpoints up to the one just saved. Newer ones (left by an earlier
        life of this run, corrupt or not) are not this save's to judge: the run overwrites them when it gets there."""
        complete = [t for t in self.complete_tags() if t <= saved]
        keep = set(complete[-self.keep_last:]) | {saved}
        for tag in self.store.listdir(CHECKPOINTS):
            if not tag.startswith("step-") or tag in keep or tag > saved:
                continue
            self.store.rm(f"{CHECKPOINTS}/{tag}")  # old complete ones, and partial ones a crash left behind

    def resolve(self, resume: str, *, fetch: bool = False) -> str | None:
        """The checkpoint to resume from, verified against its manifest (every byte of it) before any model exists.
        resume=auto takes the newest one that verifies, saying which ones it skipped and why.

        `fetch`: verify by downloading into scratch (what a process that trains would download anyway; `load`
        then uses that copy), so each process reads a checkpoint's bytes once. Without it, the bytes are streamed
        and hashed in place: for a driver that only checks."""
        check = self.fetch if fetch else self.verify
        if resume == "never":
            return None
        complete = self.complete_tags()
        if resume != "auto":
            if resume not in complete:
                raise CheckpointError(
                    f"resume={resume!r}: no complete checkpoint of that name under {self._shown(CHECKPOINTS)} "
                    f"(complete ones: {', '.join(complete) or 'none'})"
                )
            check(resume)
            return resume
        skipped = []
        for tag in reversed(complete):
            try:
                check(tag)
            except CheckpointError as e:
                log.warning("skipping checkpoint %s: %s", tag, e)
                skipped.append(f"{tag} ({e})")
                continue
            if skipped:
                log.warning("resuming from %s, the newest checkpoint that verifies (skipped %d newer: %s)", tag,
                            len(skipped), ", ".join(t.split(" ", 1)[0] for t in skipped))
            return tag
        if skipped:
            raise CheckpointError(
                f"resume=auto: no checkpoint under {self._shown(CHECKPOINTS)} verifies: {'; '.join(skipped)}. "
                "Remove them, or set output to a new folder"
            )
        return None

    def _shown(self, rel: str) -> str:
        return f"{redact_text(self.store.url).rstrip('/')}/{rel}"

    def manifest(self, tag: str) -> dict:
        """The checkpoint's MANIFEST.json, checked: a JSON object whose files are plain paths inside the checkpoint,
        each with a size and a sha256, and which lists every shard DeepSpeed will ask for."""
        rel = f"{CHECKPOINTS}/{tag}/{MANIFEST}"
        where = self._shown(rel)
        data = self.store.read_bytes(rel)
        if not data.strip():
            raise CheckpointError(f"{where}: the file is empty (expected a JSON object listing the checkpoint's files)")
        try:
            manifest = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{where}: not valid JSON ({e}); the manifest is truncated or corrupt") from None
        check_manifest(manifest, where, self.zero_stage)
        return manifest

    def verify(self, tag: str) -> dict:
        """The manifest, once every file it lists is in storage with its size and sha256 (read, not downloaded)."""
        manifest = self.manifest(tag)
        for rel, meta in manifest["files"].items():
            try:
                size, digest = self.store.digest(f"{CHECKPOINTS}/{tag}/{rel}")
            except FileNotFoundError:
                raise CheckpointError(f"checkpoint {tag}: its manifest lists {rel}, which is missing") from None
            if size != meta["size"] or digest != meta["sha256"]:
                why = f"{size} bytes, the manifest says {meta['size']}" if size != meta["size"] else "sha256 differs"
                raise CheckpointError(f"checkpoint {tag}: {rel} does not match its manifest ({why})")
        return manifest

    def download(self, tag: str) -> str:
        """Fetch a checkpoint into local scratch and check every file against the manifest."""
        remote = f"{CHECKPOINTS}/{tag}"
        manifest = self.manifest(tag)
        stage = os.path.join(self.scratch, f"load-{tag}-rank{self.dist.rank}")
        shutil.rmtree(stage, ignore_errors=True)
        tag_dir = os.path.join(stage, tag)
        for rel, meta in manifest["files"].items():
            local = os.path.join(tag_dir, *rel.split("/"))
            try:
                self.store.get_file(f"{remote}/{rel}", local)
            except FileNotFoundError:
                shutil.rmtree(stage, ignore_errors=True)
                raise CheckpointError(f"checkpoint {tag}: its manifest lists {rel}, which is missing") from None
            if os.path.getsize(local) != meta["size"] or sha256(local) != meta["sha256"]:
                shutil.rmtree(stage, ignore_errors=True)
                raise CheckpointError(f"checkpoint {tag}: {rel} does not match its manifest (size or sha256)")
        return stage

    def fetch(self, tag: str) -> None:
        """Download and verify `tag` now; `load` uses this copy instead of downloading it again."""
        self.fetched[tag] = self.download(tag)

    def load(self, engine, tag: str) -> dict:
        """Restore engine (adapter, optimizer, scheduler), this rank's RNG, and the trainer state."""
        stage = self.fetched.pop(tag, None) or self.download(tag)
        engine.load_checkpoint(stage, tag=tag, load_module_strict=False)
        tag_dir = os.path.join(stage, tag)
        rng = os.path.join(tag_dir, f"rng_rank_{self.dist.rank}.safetensors")
        if os.path.exists(rng):
            load_rng(rng)
        else:
            log.warning("checkpoint %s has no RNG state for rank %d (world size changed?)", tag, self.dist.rank)
        try:
            with open(os.path.join(tag_dir, STATE), encoding="utf-8") as f:
                state = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"checkpoint {tag}: {STATE} is not valid JSON ({e})") from None
        shutil.rmtree(stage, ignore_errors=True)
        return state


def required_files(world: int, zero_stage: int | None) -> list[str | tuple[str, ...]]:
    """What a checkpoint of `world` ranks holds besides extras: each entry a name, or a tuple of alternatives."""
    need: list[str | tuple[str, ...]] = [STATE, *(f"rng_rank_{r}.safetensors" for r in range(world))]
    if zero_stage == 3:
        need += [f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(world)]
    elif zero_stage is not None:
        need.append("mp_rank_00_model_states.pt")
    if zero_stage is not None and zero_stage >= 1:
        need += [(f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt", f"bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt")
                 for r in range(world)]
    return need


def check_manifest(manifest, where: str, zero_stage: int | None = None) -> None:
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{where}: expected a JSON object with 'files' and 'world_size', got a JSON "
                              f"{type(manifest).__name__}")
    files, world = manifest.get("files"), manifest.get("world_size")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{where}: key 'files' must be a non-empty object of path -> {{size, sha256}}")
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        raise CheckpointError(f"{where}: key 'world_size' must be a positive integer, got {world!r}")
    for rel, meta in files.items():
        try:
            check_relative(rel, f"{where}: files")
        except EmorecError as e:
            raise CheckpointError(str(e)) from None
        if (not isinstance(meta, dict) or not isinstance(meta.get("size"), int) or isinstance(meta["size"], bool)
                or meta["size"] < 0 or not isinstance(meta.get("sha256"), str) or not SHA256.fullmatch(meta["sha256"])):
            raise CheckpointError(f"{where}: files[{rel!r}] must be {{\"size\": bytes, \"sha256\": 64 hex digits}}, "
                                  f"got {meta!r}"[:400])
    missing = [need if isinstance(need, str) else need[0] for need in required_files(world, zero_stage)
               if not any(n in files for n in ((need,) if isinstance(need, str) else need))]
    if missing:
        stage = f"ZeRO-{zero_stage}, " if zero_stage is not None else ""
        raise CheckpointError(f"{where}: does not list the shards {', '.join(missing)} ({stage}{world} rank(s)); "
                              "the checkpoint is incomplete")
