"""One run's output location, on any fsspec filesystem (a path, file://, s3://, gs://)."""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any

import fsspec
from fsspec.core import url_to_fs


class RunStore:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.url = url
        self.fs, root = url_to_fs(url, **dict(storage_options or {}))
        self.root = root.rstrip("/") if root not in ("/", "") else root
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = target + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:
            with self.fs.open(target, "wb") as f:
                f.write(data)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))

    def read_json(self, rel: str) -> Any:
        with self.fs.open(self.path(rel), "rb") as f:
            return json.loads(f.read().decode("utf-8"))

    def put_file(self, local: str, rel: str) -> None:
        target = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        self.fs.put_file(local, target)

    def get_file(self, rel: str, local: str) -> None:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        self.fs.get_file(self.path(rel), local)

    def listdir(self, rel: str = "") -> list[str]:
        self.fs.invalidate_cache(self.path(rel))
        try:
            entries = self.fs.ls(self.path(rel), detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def rm(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self.path(rel), recursive=True)

    def local_dir(self) -> str | None:
        return self.root if self.is_local else None


def open_store(url: str, storage_options: dict[str, Any] | None = None) -> RunStore:
    return RunStore(url, storage_options)


def read_text(url: str, storage_options: dict[str, Any] | None = None) -> str:
    with fsspec.open(url, "r", encoding="utf-8", **(storage_options or {})) as f:
        return f.read()
