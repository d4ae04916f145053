"""`emorec bench` (one model's training and eval speed) and `emorec bench-sweep` (a sweep's makespan)."""

from __future__ import annotations


def register(sub) -> None:
    from emorec.bench import cluster, model

    model.register(sub)
    cluster.register(sub)
