"""Storage credentials travel through Ray's object store, never through runtime_env or job metadata.

Ray Tune copies AWS_* variables from the driver into each trial's runtime_env, and Ray's runtime-env
agent logs that runtime_env in plain text. emorec hides them from Ray while it schedules work and
hands them to its own processes as an object reference instead.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "GOOGLE_APPLICATION_CREDENTIALS")


@contextlib.contextmanager
def hidden_from_ray() -> Iterator[dict[str, str]]:
    captured = {k: os.environ.pop(k) for k in CREDENTIAL_VARS if k in os.environ}
    try:
        yield captured
    finally:
        os.environ.update(captured)


def install(credentials: dict[str, str] | None) -> None:
    """In a worker: make the credentials visible to fsspec/boto the standard way."""
    if credentials:
        os.environ.update(credentials)
