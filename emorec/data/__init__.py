"""Dataset registry: load any supported dataset by name into the shapes in schema.py."""

from __future__ import annotations

import importlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import fsspec
from fsspec import AbstractFileSystem

from emorec.data.schema import SPLITS, DatasetSpec, Example, LoadedDataset, RowPolicy, Turn
from emorec.errors import DataError

DATASETS = ("iemocap", "meld", "emorynlp", "dailydialog", "carer", "goemotions")
LOADERS = DATASETS + ("custom",)

__all__ = [
    "DATASETS", "LOADERS", "SPLITS", "DatasetSpec", "Example", "LoadedDataset", "RowPolicy", "Turn",
    "load_dataset",
]


def load_dataset(
    name: str, path: str, *, on_bad_row: str = "error", seed: int = 0, options: dict | None = None
) -> LoadedDataset:
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(LOADERS)}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.load(path, on_bad_row=on_bad_row, seed=seed, **(options or {}))


# Small helpers shared by the loaders in this package.

def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def exists(path: str) -> bool:
    fs, p = fsspec.core.url_to_fs(path)
    return fs.exists(p)


def check_options(dataset: str, options: dict, allowed: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(
            f"unknown option(s) {', '.join(unknown)} for dataset {dataset}; "
            f"allowed options: {', '.join(allowed) if allowed else 'none'}"
        )


def require(path: str, what: str) -> str:
    if not exists(path):
        raise DataError(f"not found: {path} (expected {what})")
    return path


BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
        (b"\xfe\xff", "UTF-16"))


def read_bytes(path: str, fs: AbstractFileSystem | None = None) -> bytes:
    """A file's bytes (local or URL, or a path on `fs`); a missing file becomes a DataError."""
    try:
        if fs is not None:
            with fs.open(path, "rb") as f:
                return f.read()
        with fsspec.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise DataError("is a directory (expected a file)", file=path) from None


def check_encoding(data: bytes, file: str, expected: str = "UTF-8") -> None:
    """Refuse UTF-16/32 (with or without a byte-order mark) and binary files, which would otherwise decode to
    text that matches nothing and be skipped or dropped silently."""
    for bom, name in BOMS:
        if data.startswith(bom):
            raise DataError(f"is {name} text (it starts with a {name} byte-order mark); expected {expected} text: "
                            f"save it as {expected}", file=file)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(f"contains NUL bytes (from byte {nul}): UTF-16 or UTF-32 text without a "
                        f"byte-order mark, or not a text file; expected {expected} text", file=file)


def decode_utf8(data: bytes, file: str) -> str:
    check_encoding(data, file)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"is not UTF-8 text ({e.reason} at byte {e.start}); expected UTF-8 text", file=file) from None


def read_text(path: str, fs: AbstractFileSystem | None = None) -> str:
    """A UTF-8 text file's text (BOM tolerated); missing files, other encodings and bad bytes become DataErrors."""
    return decode_utf8(read_bytes(path, fs), path)


@contextmanager
def open_text(path: str, newline: str | None = None, fs: AbstractFileSystem | None = None) -> Iterator[IO[str]]:
    """Open a UTF-8 text file (local or URL, BOM tolerated); missing files and bad bytes become DataErrors."""
    with io.StringIO(read_text(path, fs), newline=newline) as f:  # read whole: the encoding is checked first
        yield f


class DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def unique_object(pairs: list[tuple[str, object]]) -> dict:
    """json object_pairs_hook: a key given twice is an error (json keeps the last one silently)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def check_header(columns: list[str], file: str, line: int | None = 1) -> None:
    """A CSV header that names a column twice is ambiguous: a reader would keep only one of the two columns."""
    seen: dict[str, int] = {}
    for i, column in enumerate(columns, 1):
        if not column.strip():
            continue
        if column in seen:
            raise DataError(f"column {column!r} appears twice in the header (columns {seen[column]} and {i}); "
                            "only one of them would be read: rename or remove the other", file=file, line=line)
        seen[column] = i


def fixed_split_files(dataset: str, path: str, files: dict[str, str], options: dict):
    """For releases with one file per split in one directory: (filesystem, {split: full path})."""
    if options:
        raise DataError(f"unknown option {next(iter(options))!r} for {dataset}; allowed: none")
    fs, root = fsspec.core.url_to_fs(path)
    root = root.rstrip("/")
    for name in files.values():
        if not fs.isfile(f"{root}/{name}"):
            raise DataError(f"expected {name} in {path}")
    return fs, {split: f"{root}/{name}" for split, name in files.items()}


def read_lines(path: str) -> list[str]:
    with open_text(path) as f:
        return [line.rstrip("\n") for line in f]
