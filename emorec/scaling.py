"""Scaling sweeps: the same job at 1, 2, 4, ... workers, what each run measures, and what it means.

A sweep whose `grid` has `ray.workers: [1, 2, 4, ...]` is a scaling sweep. emorec scales *weakly*: every
worker keeps `micro_batch_size x grad_accum` samples per optimizer step, so the global batch grows with
the worker count (and so does the number of samples one step sees).

Each run measures itself with `Throughput` (samples/s, tokens/s, step time, time to first step) and
records the model's size with `model_facts`; both are flat dicts merged into metrics.json.

The analysis compares every run with the smallest worker count of its group (speedup, efficiency) and
projects to larger counts with a bandwidth-only ring-collective model:

    step(N) = compute + comm(N),      comm(N) = bytes_per_gpu(stage, N) / bandwidth

`compute` is the measured step time at the smallest count minus the model's own communication estimate
there (zero at one worker). Per optimizer step and per GPU, with P_t trainable and P frozen+trainable
parameters, g / p bytes per gradient / parameter element, GA micro-steps and f = (N-1)/N:

    ZeRO-0 : all-reduce of trainable grads                2 f P_t g
    ZeRO-1 : all-reduce of grads + all-gather of params   2 f P_t g + f P_t p
    ZeRO-2 : reduce-scatter of grads every micro-step     GA f P_t g + f P_t p
             + all-gather of the updated partitions
    ZeRO-3 : every micro-step all-gathers *all* params    GA (2 f P p + f P_t g)
             for the forward and again for the backward
             (the frozen base included) + reduce-scatter

For adapters P_t is ~0.1% of P: ZeRO-2 moves megabytes per step, ZeRO-3 moves the whole base model
twice per micro-step, which dominates unless the bandwidth is very high or the step's compute is long.
No overlap of communication with compute and no per-message latency are assumed (a pessimistic bound
for bandwidth-bound collectives); both assumptions are stated in every projection.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

# Keys a run writes into metrics.json (flat, so Ray Tune's scalar results carry them too).
THROUGHPUT_KEYS = ("samples_per_s", "tokens_per_s", "step_time_s", "step_time_mean_s", "time_to_first_step_s",
                   "setup_s", "first_step_s", "measured_steps", "samples_per_step", "tokens_per_step")
MODEL_KEYS = ("trainable_params", "total_params", "param_bytes", "grad_bytes", "zero_stage", "micro_batch_size",
              "grad_accum")
DEFAULT_BANDWIDTH_GBS = 50.0  # GB/s per GPU: one 400 Gb/s InfiniBand NIC per GPU, inter-node
WORKER_KEY = "ray.workers"


# --------------------------------------------------------------------------------------------------
# Measuring a run (called from the training loop)
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Which sweeps are scaling sweeps
# --------------------------------------------------------------------------------------------------

def worker_counts(sweep) -> list[int]:
    values = (getattr(sweep, "grid", None) or {}).get(WORKER_KEY) or []
    return sorted({int(v) for v in values})


def is_scaling_sweep(sweep) -> bool:
    return len(worker_counts(sweep)) >= 2


def concurrency_for(sweep, default: int) -> int:
    """Scaling jobs must not share the machines while they are timed: one at a time unless the user
    asked for more explicitly (`max_concurrent` > 0)."""
    if is_scaling_sweep(sweep) and not getattr(sweep, "max_concurrent", 0):
        return 1
    return default


def scaling_warnings(sweep) -> list[str]:
    out = []
    if is_scaling_sweep(sweep) and getattr(sweep, "max_concurrent", 0) not in (0, 1):
        out.append(f"scaling sweep with max_concurrent={sweep.max_concurrent}: jobs will share resources while "
                   "timed, so speedups are not comparable; set max_concurrent=1")
    return out


# --------------------------------------------------------------------------------------------------
# Analysis: measured speedup and efficiency
# --------------------------------------------------------------------------------------------------

def _workers(row: dict) -> int:
    return int(row.get("world_size") or row.get("workers") or 1)


_WORKERS_SUFFIX = r"_workers\d+(?=_|$)"  # what sweep_config.expand appends for the grid key ray.workers


def group_key(row: dict) -> str | None:
    """Jobs of a scaling sweep that differ only in their worker count share a key: the job name without
    its `_workersN` part. Jobs not named by a `ray.workers` grid have none."""
    import re

    name = str(row.get("name", ""))
    if not re.search(_WORKERS_SUFFIX, name):
        return None
    return re.sub(_WORKERS_SUFFIX, "", name)


def scaling_groups(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """Finished runs with a throughput, grouped by job key; only groups with >= 2 worker counts
    (the first run of each worker count counts)."""
    groups: dict[str, dict[int, dict]] = {}
    for row in rows:
        key = group_key(row)
        if key is None or row.get("status", "ok") != "ok" or not row.get("samples_per_s"):
            continue
        groups.setdefault(key, {}).setdefault(_workers(row), row)
    return {k: [v[n] for n in sorted(v)] for k, v in groups.items() if len(v) >= 2}


def speedup_table(rows: Iterable[dict]) -> list[dict]:
    """Speedup and efficiency of each run against the smallest worker count of its group.

    speedup = throughput(N) / throughput(N0);  efficiency = speedup / (N / N0)   (1.0 = linear)."""
    rows = sorted(rows, key=_workers)
    base = rows[0]
    n0, thr0 = _workers(base), float(base["samples_per_s"])
    out = []
    for r in rows:
        n, thr = _workers(r), float(r["samples_per_s"])
        speedup = thr / thr0
        out.append({
            "job": r.get("name"), "workers": n, "samples_per_s": thr, "tokens_per_s": r.get("tokens_per_s"),
            "step_time_s": r.get("step_time_s"), "time_to_first_step_s": r.get("time_to_first_step_s"),
            "speedup": speedup, "efficiency": speedup / (n / n0), "base_workers": n0,
        })
    return out


# --------------------------------------------------------------------------------------------------
# Analysis: projection to larger worker counts
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CommModel:
    """Per-GPU bus bandwidth for ring collectives, bandwidth-only, no compute/communication overlap."""
    bandwidth_gbs: float = DEFAULT_BANDWIDTH_GBS

    def describe(self) -> str:
        return (f"{self.bandwidth_gbs:g} GB/s per GPU bus bandwidth for ring collectives, bandwidth only "
                "(no latency term), no overlap of communication with compute")

    def seconds(self, nbytes: float) -> float:
        return nbytes / (self.bandwidth_gbs * 1e9)


def comm_bytes_per_step(stage: int, world: int, trainable: int, total: int, *, param_bytes: int = 2,
                        grad_bytes: int = 2, grad_accum: int = 1) -> dict[str, float]:
    """Bytes each GPU sends per optimizer step, split into gradients, trainable params, frozen params."""
    if world <= 1:
        return {"grads": 0.0, "trainable_params": 0.0, "frozen_params": 0.0, "total": 0.0}
    f = (world - 1) / world
    ga = max(1, grad_accum)
    frozen = max(0, total - trainable)
    if stage == 0:
        parts = {"grads": 2 * f * trainable * grad_bytes, "trainable_params": 0.0, "frozen_params": 0.0}
    elif stage == 1:
        parts = {"grads": 2 * f * trainable * grad_bytes, "trainable_params": f * trainable * param_bytes,
                 "frozen_params": 0.0}
    elif stage == 2:
        parts = {"grads": ga * f * trainable * grad_bytes, "trainable_params": f * trainable * param_bytes,
                 "frozen_params": 0.0}
    elif stage == 3:
        parts = {"grads": ga * f * trainable * grad_bytes, "trainable_params": ga * 2 * f * trainable * param_bytes,
                 "frozen_params": ga * 2 * f * frozen * param_bytes}
    else:
        raise ValueError(f"ZeRO stage must be 0-3, got {stage}")
    parts["total"] = sum(parts.values())
    return parts


def _facts(row: dict, stage: int | None) -> dict[str, Any]:
    missing = [k for k in ("trainable_params", "total_params") if not row.get(k)]
    if missing:
        raise ValueError(f"run {row.get('name')} has no {', '.join(missing)} in its metrics: cannot project")
    return {
        "trainable": int(row["trainable_params"]), "total": int(row["total_params"]),
        "param_bytes": int(row.get("param_bytes") or 2), "grad_bytes": int(row.get("grad_bytes") or row.get("param_bytes") or 2),
        "grad_accum": int(row.get("grad_accum") or 1),
        "stage": int(stage if stage is not None else row.get("zero_stage", 2)),
    }


def _step0(base: dict) -> float:
    value = base.get("step_time_mean_s") or base.get("step_time_s")
    if not value:
        raise ValueError(f"run {base.get('name')} has no step time in its metrics: cannot project")
    return float(value)


def _comm(facts: dict, world: int, stage: int | None = None) -> dict[str, float]:
    return comm_bytes_per_step(facts["stage"] if stage is None else stage, world, facts["trainable"], facts["total"],
                               param_bytes=facts["param_bytes"], grad_bytes=facts["grad_bytes"],
                               grad_accum=facts["grad_accum"])


def compute_seconds(base: dict, model: CommModel) -> float:
    """Compute time per step: the measured step minus the model's communication for the run's own stage
    and worker count (zero at one worker, where the measurement is pure compute)."""
    own = _facts(base, None)
    return max(_step0(base) - model.seconds(_comm(own, _workers(base))["total"]), 1e-9)


def project(base: dict, workers: Iterable[int], *, model: CommModel = CommModel(), stage: int | None = None) -> list[dict]:
    """Projected throughput at each worker count from one measured run (normally the smallest count).

    base: a metrics row with samples_per_s, step_time_mean_s (or step_time_s), world_size and the
    model_facts keys. stage: the ZeRO stage to project (default: the run's own). Speedup and efficiency
    are against the projection at the base run's worker count, so stages compare on equal footing."""
    facts = _facts(base, stage)
    n0 = _workers(base)
    samples_per_worker_step = float(base["samples_per_s"]) * _step0(base) / n0
    compute = compute_seconds(base, model)
    thr0 = samples_per_worker_step * n0 / (compute + model.seconds(_comm(facts, n0)["total"]))
    out = []
    for n in sorted({int(w) for w in workers}):
        parts = _comm(facts, n)
        comm_s = model.seconds(parts["total"])
        step = compute + comm_s
        thr = samples_per_worker_step * n / step
        speedup = thr / thr0
        out.append({
            "workers": n, "zero_stage": facts["stage"], "compute_s": compute, "comm_s": comm_s,
            "frozen_gather_s": model.seconds(parts["frozen_params"]), "comm_gb_per_step": parts["total"] / 1e9,
            "step_time_s": step, "samples_per_s": thr, "speedup": speedup, "efficiency": speedup / (n / n0),
            "comm_fraction": comm_s / step, "comm_dominates": comm_s > compute,
            "bandwidth_gbs": model.bandwidth_gbs, "base_workers": n0,
        })
    return out


def breakeven_bandwidth_gbs(base: dict, workers: int, *, model: CommModel = CommModel(), stage: int = 3) -> float:
    """The bandwidth (GB/s per GPU) below which `stage`'s communication takes longer than compute."""
    facts = _facts(base, stage)
    if workers <= 1:
        return 0.0
    return _comm(facts, workers)["total"] / compute_seconds(base, model) / 1e9


def default_projection_counts(measured: Iterable[int], up_to: int = 64) -> list[int]:
    top = max(list(measured) + [1])
    counts = sorted(set(measured) | {2 ** k for k in range(0, int(math.log2(max(up_to, top))) + 1)})
    return [c for c in counts if c <= max(up_to, top)]


def dominance_note(base: dict, model: CommModel, counts: list[int]) -> str:
    """One paragraph: where ZeRO-3's all-gather of the frozen base dominates the step."""
    try:
        z3 = project(base, counts, model=model, stage=3)
        z2 = project(base, counts, model=model, stage=2)
    except ValueError as e:
        return str(e)
    big = max(counts)
    z3_big, z2_big = z3[-1], z2[-1]
    first = next((p for p in z3 if p["comm_dominates"]), None)
    gb = z3_big["comm_gb_per_step"]
    frozen_share = z3_big["frozen_gather_s"] / z3_big["comm_s"] if z3_big["comm_s"] else 0.0
    lines = [
        f"At {big} workers ZeRO-3 moves {gb:.3g} GB per GPU per step ({100 * frozen_share:.0f}% of it the frozen base's "
        f"parameters, all-gathered for every forward and backward), ZeRO-2 {z2_big['comm_gb_per_step']:.3g} GB "
        f"(trainable gradients and parameters only).",
        f"At the assumed {model.bandwidth_gbs:g} GB/s that is {z3_big['comm_s']:.3g} s of communication against "
        f"{z3_big['compute_s']:.3g} s of compute per step for ZeRO-3 (efficiency {100 * z3_big['efficiency']:.0f}%), "
        f"{z2_big['comm_s']:.3g} s for ZeRO-2 (efficiency {100 * z2_big['efficiency']:.0f}%).",
    ]
    if first is not None:
        lines.append(f"ZeRO-3's communication exceeds compute from {first['workers']} workers on: it dominates "
                     f"unless the bandwidth is above {breakeven_bandwidth_gbs(base, big, model=model, stage=3):.3g} GB/s per GPU.")
    else:
        lines.append(f"ZeRO-3's communication stays below compute up to {big} workers; it would dominate below "
                     f"{breakeven_bandwidth_gbs(base, big, model=model, stage=3):.3g} GB/s per GPU.")
    return " ".join(lines)


# --------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------

def scaling_plot(groups: dict[str, list[dict]], projections: dict[str, dict[int, list[dict]]],
                 model: CommModel) -> bytes:
    """PNG: throughput vs workers (measured, linear ideal, projections per ZeRO stage) and efficiency."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_eff) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {2: "--", 3: ":"}
    for i, (key, rows) in enumerate(sorted(groups.items())):
        color = colors[i % len(colors)]
        table = speedup_table(rows)
        xs = [r["workers"] for r in table]
        ax.plot(xs, [r["samples_per_s"] for r in table], "o-", color=color, label=f"{key} measured")
        ax_eff.plot(xs, [r["efficiency"] for r in table], "o-", color=color, label=f"{key} measured")
        n0, thr0 = table[0]["workers"], table[0]["samples_per_s"]
        for stage, proj in sorted(projections.get(key, {}).items()):
            px = [p["workers"] for p in proj]
            ax.plot(px, [p["samples_per_s"] for p in proj], styles.get(stage, "-."), color=color, alpha=0.8,
                    label=f"{key} projected ZeRO-{stage}")
            ax_eff.plot(px, [p["efficiency"] for p in proj], styles.get(stage, "-."), color=color, alpha=0.8,
                        label=f"{key} projected ZeRO-{stage}")
        top = max([*xs, *[p["workers"] for proj in projections.get(key, {}).values() for p in proj]])
        ideal_x = [n0, top]
        ax.plot(ideal_x, [thr0, thr0 * top / n0], "-", color="grey", linewidth=0.8, alpha=0.6,
                label="linear" if i == 0 else None)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for a in (ax, ax_eff):
        a.set_xscale("log", base=2)
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("workers")
        a.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("samples/s")
    ax.set_title("throughput")
    ax_eff.set_ylabel("efficiency (speedup / workers ratio)")
    top_eff = max([1.0, *(line.get_ydata().max() for line in ax_eff.get_lines() if len(line.get_ydata()))])
    ax_eff.set_ylim(0, 1.1 * top_eff)
    ax_eff.set_title("scaling efficiency")
    ax_eff.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"projection: {model.describe()}", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Tables (markdown and CSV rows) for the report
# --------------------------------------------------------------------------------------------------

def analyse(rows: Iterable[dict], *, model: CommModel = CommModel(), project_to: int = 64) -> dict[str, Any]:
    """Everything the report shows about scaling: measured tables, projections for ZeRO-2 and ZeRO-3
    (and the run's own stage), and the dominance note, per group of jobs."""
    groups = scaling_groups(rows)
    out: dict[str, Any] = {"groups": {}, "assumption": model.describe(), "bandwidth_gbs": model.bandwidth_gbs}
    for key, group in groups.items():
        measured = speedup_table(group)
        base = group[0]
        counts = default_projection_counts([r["workers"] for r in measured], up_to=project_to)
        entry: dict[str, Any] = {"measured": measured, "projections": {}, "note": None}
        try:
            stages = sorted({2, 3, int(base.get("zero_stage", 2))})
            for stage in stages:
                entry["projections"][stage] = project(base, counts, model=model, stage=stage)
            entry["note"] = dominance_note(base, model, counts)
        except ValueError as e:
            entry["note"] = f"no projection: {e}"
        entry["own_stage"] = base.get("zero_stage")
        out["groups"][key] = entry
    return out


def markdown(analysis: dict[str, Any]) -> str:
    lines = []
    for key, entry in sorted(analysis["groups"].items()):
        lines += [f"### {key}", "", "Measured (weak scaling: each worker keeps its micro-batch x grad_accum per step):", "",
                  "| workers | samples/s | tokens/s | step time (s) | time to first step (s) | speedup | efficiency |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in entry["measured"]:
            lines.append(f"| {r['workers']} | {_f(r['samples_per_s'])} | {_f(r.get('tokens_per_s'))} | "
                         f"{_f(r.get('step_time_s'), 4)} | {_f(r.get('time_to_first_step_s'))} | "
                         f"{r['speedup']:.2f}x | {100 * r['efficiency']:.0f}% |")
        if entry["projections"]:
            lines += ["", f"Projected from {entry['measured'][0]['workers']} worker(s); assumption: {analysis['assumption']}."
                      f" The run's own stage is ZeRO-{entry.get('own_stage')}.", "",
                      "| ZeRO | workers | compute (s) | comm (s) | of which frozen-base gather (s) | GB/GPU/step | "
                      "samples/s | efficiency | comm > compute |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
            for stage, proj in sorted(entry["projections"].items()):
                for p in proj:
                    lines.append(f"| {stage} | {p['workers']} | {_f(p['compute_s'], 4)} | {_f(p['comm_s'], 4)} | "
                                 f"{_f(p['frozen_gather_s'], 4)} | {_f(p['comm_gb_per_step'], 4)} | {_f(p['samples_per_s'])} | "
                                 f"{100 * p['efficiency']:.0f}% | {'yes' if p['comm_dominates'] else ''} |")
        if entry.get("note"):
            lines += ["", entry["note"]]
        lines.append("")
    return "\n".join(lines)


def csv_rows(analysis: dict[str, Any]) -> list[dict]:
    rows = []
    for key, entry in sorted(analysis["groups"].items()):
        for r in entry["measured"]:
            rows.append({"group": key, "kind": "measured", "zero_stage": entry.get("own_stage"), "workers": r["workers"],
                         "samples_per_s": r["samples_per_s"], "tokens_per_s": r.get("tokens_per_s"),
                         "step_time_s": r.get("step_time_s"), "time_to_first_step_s": r.get("time_to_first_step_s"),
                         "speedup": r["speedup"], "efficiency": r["efficiency"], "comm_s": None,
                         "bandwidth_gbs": None})
        for stage, proj in sorted(entry["projections"].items()):
            for p in proj:
                rows.append({"group": key, "kind": "projected", "zero_stage": stage, "workers": p["workers"],
                             "samples_per_s": p["samples_per_s"], "tokens_per_s": None, "step_time_s": p["step_time_s"],
                             "time_to_first_step_s": None, "speedup": p["speedup"], "efficiency": p["efficiency"],
                             "comm_s": p["comm_s"], "bandwidth_gbs": p["bandwidth_gbs"]})
    return rows


def _f(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"
    return str(value)
