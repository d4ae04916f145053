"""One run's output location, on any fsspec filesystem (a path, file://, s3://, gs://).

Every operation is retried with backoff on transient errors (see retry.py), then fails clearly.
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any, Callable, TypeVar

from fsspec.core import url_to_fs

from .retry import with_retries

T = TypeVar("T")


class RunStore:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, *, retries: int = 5,
                 backoff_s: float = 0.5):
        self.url = url
        self.fs, root = url_to_fs(url, **dict(storage_options or {}))
        self.root = root.rstrip("/") if root not in ("/", "") else root
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_local = "file" in protocols
        self.retries, self.backoff_s = retries, backoff_s

    def _do(self, what: str, fn: Callable[[], T]) -> T:
        return with_retries(fn, what=what, attempts=self.retries, backoff_s=self.backoff_s)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def exists(self, rel: str) -> bool:
        return self._do(f"checking {rel}", lambda: self.fs.exists(self.path(rel)))

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            return

        def write() -> None:
            with self.fs.open(target, "wb") as f:
                f.write(data)

        self._do(f"upload of {rel}", write)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))

    def read_json(self, rel: str) -> Any:
        def read() -> bytes:
            with self.fs.open(self.path(rel), "rb") as f:
                return f.read()

        return json.loads(self._do(f"reading {rel}", read).decode("utf-8"))

    def put_file(self, local: str, rel: str) -> None:
        target = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        self._do(f"upload of {rel}", lambda: self.fs.put_file(local, target))

    def get_file(self, rel: str, local: str) -> None:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        self._do(f"download of {rel}", lambda: self.fs.get_file(self.path(rel), local))

    def listdir(self, rel: str = "") -> list[str]:
        def ls() -> list[str]:
            self.fs.invalidate_cache(self.path(rel))
            try:
                entries = self.fs.ls(self.path(rel), detail=False)
            except FileNotFoundError:
                return []
            return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

        return self._do(f"listing {rel or '/'}", ls)

    def rm(self, rel: str) -> None:
        if self.exists(rel):
            self._do(f"removing {rel}", lambda: self.fs.rm(self.path(rel), recursive=True))


def open_store(url: str, storage_options: dict[str, Any] | None = None, **policy) -> RunStore:
    return RunStore(url, storage_options, **policy)

