"""How many jobs of a sweep run at once: a scaling sweep (a `ray.workers` grid) times its jobs one at a time."""

from __future__ import annotations

WORKER_KEY = "ray.workers"

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
