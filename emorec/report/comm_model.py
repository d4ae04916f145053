"""A bandwidth-only ring-collective model of ZeRO's communication, for projecting a measured run to more GPUs:

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

import math
from dataclasses import dataclass
from typing import Any, Iterable

DEFAULT_BANDWIDTH_GBS = 50.0  # GB/s per GPU: one 400 Gb/s InfiniBand NIC per GPU, inter-node


def _workers(row: dict) -> int:
    return int(row.get("world_size") or row.get("workers") or 1)


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
