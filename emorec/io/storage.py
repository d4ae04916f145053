"""One run's output location, on any fsspec filesystem (a path, file://, s3://, gs://).

Every operation is retried with backoff on transient errors (see retry.py), then fails clearly.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from typing import Any, Callable, TypeVar

from fsspec.core import url_to_fs

from emorec.errors import ConfigError, EmorecError
from emorec.io.retry import with_retries
from emorec.io.secrets import redact_text

T = TypeVar("T")

# Filesystems a run's output may live on; the object stores among them need a bucket (container) in the URL.
SCHEMES = ("file", "local", "memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl")
BUCKETED = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl")


def check_url(url: str) -> None:
    """A URL emorec can keep a run under: a path or a supported scheme, with a bucket where the scheme needs one."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"storage URL {url!r} is empty; give a path or a URL such as s3://bucket/runs/x")
    if "://" not in url:
        return
    shown = redact_text(url)
    scheme, rest = url.split("://", 1)
    if "::" in scheme or scheme.lower() not in SCHEMES:
        raise ConfigError(f"{shown}: unsupported storage scheme {scheme.split('::')[-1] + '://'!r}; use a local path "
                          f"or one of {', '.join(s + '://' for s in SCHEMES)}")
    if scheme.lower() in BUCKETED and not rest.split("/", 1)[0].rsplit("@", 1)[-1]:
        raise ConfigError(f"{shown}: no bucket in the URL; expected {scheme}://BUCKET/path")


def check_relative(rel: str, where: str) -> str:
    """`rel` if it is a plain relative path that stays inside its root: no absolute path, no '..', no backslash."""
    if (not isinstance(rel, str) or "\\" in rel or "\0" in rel
            or any(p in ("", ".", "..") for p in rel.split("/"))):
        raise EmorecError(f"{where}: path {rel!r} is not a plain relative path inside its folder; refusing it")
    return rel


class RunStore:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, *, retries: int = 5,
                 backoff_s: float = 0.5, training: bool = False):
        """`training`: this is a training run's output, whose checkpoints outlive a failed write (the error says
        so); for a report, eval or predict location it says to run the command again."""
        check_url(url)
        self.url = url
        try:
            self.fs, root = url_to_fs(url, **dict(storage_options or {}))
        except (ImportError, ValueError, TypeError) as e:
            raise ConfigError(f"{redact_text(url)}: cannot open this storage URL ({type(e).__name__}: "
                              f"{redact_text(str(e))[:200]})") from None
        self.root = root.rstrip("/") if root not in ("/", "") else root
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_local = "file" in protocols
        self.retries, self.backoff_s, self.training = retries, backoff_s, training

    def _do(self, what: str, fn: Callable[[], T]) -> T:
        return with_retries(fn, what=what, attempts=self.retries, backoff_s=self.backoff_s, training=self.training)

    def path(self, *parts: str) -> str:
        rel = posixpath.join(*parts) if parts else ""
        if rel:
            check_relative(rel.rstrip("/"), redact_text(self.url))
        return posixpath.join(self.root, rel) if rel else self.root

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

    def read_bytes(self, rel: str) -> bytes:
        def read() -> bytes:
            with self.fs.open(self.path(rel), "rb") as f:
                return f.read()

        return self._do(f"reading {rel}", read)

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel).decode("utf-8"))

    def digest(self, rel: str) -> tuple[int, str]:
        """(size, sha256) of a stored file, streamed: nothing is written locally."""
        def read() -> tuple[int, str]:
            h, size = hashlib.sha256(), 0
            with self.fs.open(self.path(rel), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
                    size += len(block)
            return size, h.hexdigest()

        return self._do(f"reading {rel}", read)

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

