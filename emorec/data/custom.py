"""Bring-your-own dataset: CSV or JSONL files, named columns, optional dialogues."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from dataclasses import dataclass

from ..errors import DataError
from . import check_options, join, open_text, require
from .schema import SPLITS, DatasetSpec, Example, LoadedDataset, RowPolicy, Turn

# The real spec depends on the options; load() builds it.
SPEC = DatasetSpec(name="custom", labels=(), verbalisers={}, metric="weighted_f1", dialogue=False)

VALIDATION_FRACTION = 0.1

Record = tuple[int, dict]  # (1-based line, row)

ALLOWED = (
    "files", "labels", "text_column", "label_column", "speaker_column", "dialogue_column", "order_column",
    "multi_label", "label_separator", "metric", "neutral", "name",
)


def load(
    path: str,
    *,
    on_bad_row: str = "error",
    seed: int = 0,
    files: dict | None = None,
    labels: list | None = None,
    text_column: str = "text",
    label_column: str = "label",
    speaker_column: str | None = None,
    dialogue_column: str | None = None,
    order_column: str | None = None,
    multi_label: bool = False,
    label_separator: str = ",",
    metric: str | None = None,
    neutral: str | None = None,
    name: str = "custom",
    **options,
) -> LoadedDataset:
    check_options(name, options, ALLOWED)
    if (not isinstance(files, dict) or not {"train", "test"} <= set(files) or not set(files) <= set(SPLITS)
            or not all(isinstance(f, str) for f in files.values())):
        raise DataError(f"option files must map splits to files, with train and test required and keys among "
                        f"{', '.join(SPLITS)}; got {files!r}")
    if not isinstance(labels, (list, tuple)) or not labels or len(set(map(str, labels))) != len(labels):
        raise DataError(f"option labels must be a non-empty list of distinct label names; got {labels!r}")
    label_set = tuple(str(label) for label in labels)
    if neutral is not None and neutral not in label_set:
        raise DataError(f"option neutral={neutral!r} is not one of the labels: {', '.join(label_set)}")
    if order_column and not dialogue_column:
        raise DataError("option order_column needs dialogue_column (turns are ordered within a dialogue)")
    spec = DatasetSpec(
        name=name,
        labels=label_set,
        verbalisers={label: label for label in label_set},
        metric=metric or ("multilabel_macro_f1" if multi_label else "weighted_f1"),
        dialogue=dialogue_column is not None,
        multi_label=bool(multi_label),
        neutral=neutral,
    )
    columns = Columns(text_column, label_column, speaker_column, dialogue_column, order_column)
    skipped: Counter = Counter()
    policy = RowPolicy(on_bad_row, skipped)
    units: dict[str, list[list[Example]]] = {}
    for split, rel in files.items():
        file = rel if "://" in rel or rel.startswith("/") else join(path, rel)
        require(file, f"the {split} file of dataset {name}")
        units[split] = _units(split, file, spec, columns, label_separator, policy)
    if "validation" not in units:
        units["train"], units["validation"] = _hold_out(units["train"], seed)
    splits = {split: [ex for unit in units[split] for ex in unit] for split in SPLITS}
    return LoadedDataset(spec=spec, splits=splits, skipped=skipped)


@dataclass(frozen=True)
class Columns:
    text: str
    label: str
    speaker: str | None
    dialogue: str | None
    order: str | None

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c for c in (self.text, self.label, self.speaker, self.dialogue, self.order) if c)


def _records(file: str, columns: Columns, policy: RowPolicy) -> list[Record]:
    def check(found: list[str]) -> None:
        for column in columns.required:
            if column not in found:
                raise DataError(f"no column {column!r} (columns in the file: {', '.join(found) or 'none'})", file=file)

    records: list[Record] = []
    if file.endswith(".csv"):
        with open_text(file, newline="") as f:
            reader = csv.DictReader(f)
            check(list(reader.fieldnames or []))
            records = [(reader.line_num, row) for row in reader]
    elif file.endswith(".jsonl"):
        with open_text(file) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                if not isinstance(row, dict):
                    policy.bad("bad_json", "not a JSON object (expected one object per line)", file=file, line=n)
                    continue
                if not records:
                    check(list(row))
                records.append((n, row))
    else:
        raise DataError(f"unsupported file type: {file} (expected .csv or .jsonl)")
    return records


@dataclass
class _Row:
    line: int
    text: str
    labels: tuple[str, ...]
    speaker: str | None
    dialogue: object
    order: object


def _units(split: str, file: str, spec: DatasetSpec, columns: Columns, sep: str,
           policy: RowPolicy) -> list[list[Example]]:
    """Dialogues (or single rows) of one file, each a list of Examples in turn order."""
    rows: list[_Row] = []
    for n, row in _records(file, columns, policy):
        missing = [c for c in columns.required if c != columns.speaker and _blank(row.get(c))]
        if missing:
            policy.bad("missing_field", f"empty or missing {', '.join(missing)} (expected a value)", file=file, line=n)
            continue
        labels = _labels(row[columns.label], spec, sep)
        if isinstance(labels, str):
            policy.bad("bad_label", labels, file=file, line=n)
            continue
        speaker = row.get(columns.speaker) if columns.speaker else None
        rows.append(_Row(
            line=n, text=str(row[columns.text]).strip(), labels=labels, speaker=str(speaker) if speaker else None,
            dialogue=str(row[columns.dialogue]) if columns.dialogue else n,
            order=row[columns.order] if columns.order else n,
        ))
    numeric = all(_is_number(r.order) for r in rows)
    rows.sort(key=lambda r: float(r.order) if numeric else str(r.order))  # type: ignore[arg-type]

    groups: dict[object, list[_Row]] = {}
    for r in rows:
        groups.setdefault(r.dialogue, []).append(r)
    units = []
    for group in sorted(groups.values(), key=lambda g: min(r.line for r in g)):
        turns: list[Turn] = []
        unit = []
        for r in group:
            unit.append(Example(id=f"{spec.name}-{split}-{r.line}", text=r.text, labels=r.labels, speaker=r.speaker,
                                context=tuple(turns)))
            turns.append(Turn(r.speaker, r.text))
        units.append(unit)
    return units


def _labels(value: object, spec: DatasetSpec, sep: str) -> tuple[str, ...] | str:
    """The row's labels in spec order, or a message saying what is wrong."""
    if spec.multi_label:
        parts = value if isinstance(value, list) else str(value).split(sep)
        names = {str(p).strip() for p in parts} - {""}
    elif isinstance(value, (list, dict)):
        return f"label {value!r} is a list (expected one label; set multi_label for several)"
    else:
        names = {str(value).strip()}
    unknown = sorted(names - set(spec.labels))
    if unknown:
        return f"label {', '.join(map(repr, unknown))} is not one of the allowed labels ({', '.join(spec.labels)})"
    if not names:
        return f"no label (expected one or more of {', '.join(spec.labels)})"
    return tuple(label for label in spec.labels if label in names)


def _blank(value: object) -> bool:
    return value is None or str(value).strip() == ""


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
        return not isinstance(value, bool)
    except (TypeError, ValueError):
        return False


def _hold_out(units: list[list[Example]], seed: int) -> tuple[list[list[Example]], list[list[Example]]]:
    """A seeded ~10% of train dialogues (or rows) as validation, both kept in file order."""
    k = max(1, round(len(units) * VALIDATION_FRACTION)) if len(units) > 1 else 0
    held = set(random.Random(seed).sample(range(len(units)), k))
    return [u for i, u in enumerate(units) if i not in held], [u for i, u in enumerate(units) if i in held]
