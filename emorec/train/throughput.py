"""What one training run measures of itself (step times, samples and tokens per second, the model's size):
flat dicts merged into metrics.json, which the scaling analysis (emorec.report.scaling) reads back."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, Iterator


class Throughput:
    """Step timing for one rank; `summary()` sums the counts over ranks (a collective: every rank calls it).

    Create it when the run starts (before the model loads): `time_to_first_step_s` runs from then to
    the end of the first optimizer step. Call `start()` right before the loop, `step(samples, tokens)`
    after each optimizer step with this rank's counts, and wrap checkpoint saves and other non-training
    work in `with tp.paused():` so they do not count as step time. The first `warmup` steps (allocator,
    kernel selection, lazy init) are left out of the steady-state rates unless they are all there is.
    """

    def __init__(self, warmup: int = 1, clock: Callable[[], float] = time.perf_counter):
        self.warmup = max(0, int(warmup))
        self.clock = clock
        self.t0 = clock()
        self.t_start: float | None = None
        self.t_first_step: float | None = None
        self._last: float | None = None
        self._paused = 0.0
        self.steps: list[tuple[float, int, int]] = []  # (seconds, samples, tokens) per step, this rank

    def start(self) -> None:
        self.t_start = self._last = self.clock()

    def step(self, n_samples: int, n_tokens: int) -> None:
        now = self.clock()
        if self._last is None:  # start() was not called: the step began at creation
            self.t_start = self._last = self.t0
        self.steps.append((max(0.0, now - self._last - self._paused), int(n_samples), int(n_tokens)))
        if self.t_first_step is None:
            self.t_first_step = now
        self._last, self._paused = now, 0.0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t = self.clock()
        try:
            yield
        finally:
            self._paused += self.clock() - t

    def _totals(self) -> tuple[list[float], float, float, float]:
        steady = self.steps[self.warmup:] if len(self.steps) > self.warmup else self.steps
        seconds = [s for s, _, _ in steady]
        return seconds, float(sum(seconds)), float(sum(n for _, n, _ in steady)), float(sum(t for _, _, t in steady))

    def summary(self, reduce: bool = True) -> dict[str, Any]:
        seconds, total_s, samples, tokens = self._totals()
        world = 1
        if reduce:
            samples, tokens, total_s, world = _reduce_over_ranks(samples, tokens, total_s)
        n = len(seconds)
        out: dict[str, Any] = {"measured_steps": n}
        if n == 0:
            return out
        out.update(
            samples_per_s=samples / total_s if total_s > 0 else None,
            tokens_per_s=tokens / total_s if total_s > 0 else None,
            step_time_s=statistics.median(seconds),
            step_time_mean_s=total_s / n,
            samples_per_step=samples / n,
            tokens_per_step=tokens / n,
            first_step_s=self.steps[0][0],
            time_to_first_step_s=(self.t_first_step - self.t0) if self.t_first_step is not None else None,
            setup_s=(self.t_start - self.t0) if self.t_start is not None else None,
        )
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


def _reduce_over_ranks(samples: float, tokens: float, seconds: float) -> tuple[float, float, float, int]:
    """Global samples and tokens (sums), and the slowest rank's time (the step waits for it)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return samples, tokens, seconds, 1
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return samples, tokens, seconds, 1
    counts = torch.tensor([samples, tokens], dtype=torch.float64)
    slowest = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(counts)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return float(counts[0]), float(counts[1]), float(slowest[0]), dist.get_world_size()


def batch_counts(batch: dict, ignore_index: int = -100) -> tuple[int, int]:
    """(samples, real tokens) in one collated micro-batch, padded or packed.

    Padded (batches.collate): rows, and the ones in the 2-D attention mask. Packed (packing.collate_packed):
    the segments of the row that carry labels, and their tokens (the label-free filler is not counted)."""
    ids = batch["input_ids"]
    seq = batch.get("seq_ids")
    if seq is not None:
        labels = batch["labels"]
        real = seq[labels != ignore_index].unique()
        import torch

        return int(real.numel()), int(torch.isin(seq, real).sum())
    mask = batch.get("attention_mask")
    tokens = int(mask.sum()) if mask is not None and mask.dim() == 2 else int(ids.numel())
    return int(ids.shape[0]), tokens


def model_facts(model, *, zero_stage: int | None = None, micro_batch_size: int | None = None,
                grad_accum: int | None = None, grad_bytes: int | None = None) -> dict[str, Any]:
    """Parameter counts and element sizes for the communication model. Call it before DeepSpeed
    partitions the model (under ZeRO-3 `numel()` is 0 afterwards; `ds_numel` is read when present)."""
    trainable = total = 0
    param_bytes = None
    for p in model.parameters():
        n = int(getattr(p, "ds_numel", 0) or p.numel())
        total += n
        if p.requires_grad:
            trainable += n
        elif param_bytes is None:
            param_bytes = p.element_size()
    if param_bytes is None:
        param_bytes = next(iter(model.parameters())).element_size()
    out = {"trainable_params": trainable, "total_params": total, "param_bytes": int(param_bytes),
           # DeepSpeed reduces gradients in the compute dtype (bf16: 2 bytes; fp32 on CPU: 4)
           "grad_bytes": int(grad_bytes or param_bytes)}
    for key, value in (("zero_stage", zero_stage), ("micro_batch_size", micro_batch_size), ("grad_accum", grad_accum)):
        if value is not None:
            out[key] = int(value)
    return out
