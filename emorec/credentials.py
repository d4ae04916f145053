"""Storage credentials travel through Ray's object store, never through runtime_env or job metadata.

Ray Tune copies AWS_* variables from the driver into each trial's runtime_env, and Ray's runtime-env
agent logs that runtime_env in plain text. emorec hides them from Ray while it schedules work and
hands them to its own processes as an object reference instead.

A filesystem that reads its credentials from the environment when it first connects (s3fs does, on its
first request, not when it is made) must connect before they are hidden: `hidden_from_ray(fs, ...)`
connects the filesystems it is given first, and they keep the credentials they resolved.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "GOOGLE_APPLICATION_CREDENTIALS")


def connect_now(*filesystems) -> None:
    """Make each fsspec filesystem resolve its credentials now, from the environment as it is."""
    for fs in filesystems:
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        if {"s3", "s3a"} & set(protocols) and callable(getattr(fs, "connect", None)):
            fs.connect()  # s3fs: makes the client, which holds the credentials botocore resolved; no request


@contextlib.contextmanager
def hidden_from_ray(*filesystems) -> Iterator[dict[str, str]]:
    """Take the credential variables out of os.environ for the block (yielding them), after connecting
    `filesystems` (the ones Ray will use in this process) while the variables are still there."""
    connect_now(*filesystems)
    captured = {k: os.environ.pop(k) for k in CREDENTIAL_VARS if k in os.environ}
    try:
        yield captured
    finally:
        os.environ.update(captured)


def install(credentials: dict[str, str] | None) -> None:
    """In a worker: make the credentials visible to fsspec/boto the standard way."""
    if credentials:
        os.environ.update(credentials)
