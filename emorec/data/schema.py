"""The shapes every dataset loader produces, whatever its release format."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from emorec.errors import DataError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Turn:
    speaker: str | None
    text: str


@dataclass(frozen=True)
class Example:
    """One utterance to classify, with the dialogue turns before it (oldest first)."""

    id: str
    text: str
    labels: tuple[str, ...]
    speaker: str | None = None
    context: tuple[Turn, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is: its label set, how it is scored, and how labels are said in a prompt.

    labels: canonical label names, in the release's own order.
    verbalisers: label -> the word(s) the model answers with.
    metric: one of emorec.eval.metrics.METRICS.
    """

    name: str
    labels: tuple[str, ...]
    verbalisers: dict[str, str]
    metric: str
    dialogue: bool
    multi_label: bool = False
    neutral: str | None = None
    task: str = "emotion recognition"


@dataclass
class LoadedDataset:
    spec: DatasetSpec
    splits: dict[str, list[Example]]
    skipped: Counter = field(default_factory=Counter)


class RowPolicy:
    """Applies on_bad_row: 'error' raises DataError naming file and line; 'skip' counts the reason."""

    def __init__(self, on_bad_row: str, skipped: Counter):
        if on_bad_row not in ("error", "skip"):
            raise DataError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
        self.on_bad_row = on_bad_row
        self.skipped = skipped

    def bad(self, reason: str, message: str, *, file: str, line: int | None) -> None:
        if self.on_bad_row == "error":
            raise DataError(message + " (set data.on_bad_row=skip to skip such rows)", file=file, line=line)
        self.skipped[reason] += 1


def spec_to_json(spec: DatasetSpec) -> dict:
    from dataclasses import asdict

    return asdict(spec)


def spec_from_json(raw: dict) -> DatasetSpec:
    return DatasetSpec(**{**raw, "labels": tuple(raw["labels"])})
