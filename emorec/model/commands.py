"""`emorec convert`: a ChatGLM2/3 checkpoint to a native GLM one."""

from __future__ import annotations


def register(sub) -> None:
    from emorec.model import convert

    convert.register(sub)
