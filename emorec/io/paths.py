"""Paths, URLs and names as every launcher (local, torchrun, Ray Job API, Slurm) and the report treat them."""

from __future__ import annotations

import os
import re

NAME_CHARS = "A-Za-z0-9._-"  # what a job, submission, Slurm job or report file name may hold
_NOT_NAME = re.compile(f"[^{NAME_CHARS}]+")


def is_url(path: str) -> bool:
    """s3://, gs://, file://...: a location fsspec resolves, never relative to a working directory."""
    return "://" in path


def absolute(path: str, base: str | None = None) -> str:
    """`path` as another process in another directory must see it: URLs and absolute paths as they are, relative
    paths joined to `base` (default: this process's working directory)."""
    if is_url(path) or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base or os.getcwd(), path))


def safe_name(name: str, fallback: str = "run") -> str:
    """`name` with every run of other characters turned into one '-', so it is a file, job or submission name
    on any filesystem and scheduler; `fallback` where nothing is left."""
    return _NOT_NAME.sub("-", name).strip("-.") or fallback
