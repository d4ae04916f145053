"""Dataset registry: load any supported dataset by name into the shapes in schema.py."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import fsspec

from ..errors import DataError
from .schema import SPLITS, DatasetSpec, Example, LoadedDataset, RowPolicy, Turn

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


@contextmanager
def open_text(path: str, newline: str | None = None) -> Iterator[IO[str]]:
    """Open a UTF-8 text file (local or URL, BOM tolerated); missing files and bad bytes become DataErrors."""
    try:
        with fsspec.open(path, "r", encoding="utf-8-sig", newline=newline) as f:
            yield f
    except FileNotFoundError as e:
        raise DataError(f"file not found: {path}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 text ({e.reason} at byte {e.start})", file=path) from e


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
