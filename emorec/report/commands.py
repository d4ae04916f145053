"""`emorec report`: tables and plots from a sweep's or a run's output."""

from __future__ import annotations


def register(sub) -> None:
    from emorec.report import build

    build.register(sub)
