"""A run's training curve and final metrics as TensorBoard event files, written at the end of training."""

from __future__ import annotations

import os
import posixpath
import tempfile

from emorec.io.storage import RunStore, open_store


def write_tensorboard(store: RunStore | str, curve: list, metrics: dict, *, rel: str = "tensorboard",
                      storage_options: dict | None = None) -> list[str]:
    """Write one run's training curve (train_curve.json: [[step, loss], ...]) as TensorBoard event files
    under STORE/rel, so `tensorboard --logdir OUTPUT/tensorboard` shows it (s3:// logdirs work with
    TensorBoard's S3 support). Scalars: train/loss per step ([[step, loss], ...]); eval/<metric> and
    perf/<throughput key> at the last step. Returns the paths written (relative to the store).

    Call it on rank 0 after metrics.json is written; an existing event file of the same run is replaced,
    so a resumed run shows one curve, not two."""
    if isinstance(store, str):
        store = open_store(store, storage_options)
    from torch.utils.tensorboard import SummaryWriter

    written = []
    with tempfile.TemporaryDirectory(prefix="emorec-tb-") as tmp:
        writer = SummaryWriter(log_dir=tmp, filename_suffix=".emorec")
        last = 0
        for step, loss in curve:
            writer.add_scalar("train/loss", float(loss), int(step))
            last = max(last, int(step))
        if isinstance(metrics.get("values"), dict):
            for key, value in metrics["values"].items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(f"eval/{key}", float(value), last)
        for key in ("samples_per_s", "tokens_per_s", "step_time_s", "time_to_first_step_s"):
            if isinstance(metrics.get(key), (int, float)):
                writer.add_scalar(f"perf/{key}", float(metrics[key]), last)
        writer.flush()
        writer.close()
        for old in store.listdir(rel):
            if old.startswith("events.out.tfevents") and old.endswith(".emorec"):
                store.rm(posixpath.join(rel, old))
        for name in sorted(os.listdir(tmp)):
            target = posixpath.join(rel, name)
            store.put_file(os.path.join(tmp, name), target)
            written.append(target)
    return written
