"""Bring-your-own dataset: CSV or JSONL files, named columns, optional dialogues."""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from dataclasses import dataclass

from emorec.data import DuplicateKey, check_header, check_options, join, open_text, require, unique_object
from emorec.data.schema import SPLITS, DatasetSpec, Example, LoadedDataset, RowPolicy, Turn
from emorec.errors import DataError

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
    _check_option_types(text_column=text_column, label_column=label_column, speaker_column=speaker_column,
                        dialogue_column=dialogue_column, order_column=order_column, multi_label=multi_label,
                        label_separator=label_separator, metric=metric, neutral=neutral, name=name)
    label_set = _label_names(labels, multi_label, label_separator)
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


YAML_HINT = "YAML reads unquoted yes/no, true/false and on/off as booleans, and ~ or an empty value as null"


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {value}"
    if value is None:
        return "null (no value)"
    return f"a {type(value).__name__} ({value!r})"


def _label_names(labels: list | tuple, multi_label: bool, sep: object) -> tuple[str, ...]:
    """The label names as strings; a boolean, null, float or nested value was not what the user wrote."""
    names = []
    for i, label in enumerate(labels, 1):
        if isinstance(label, bool) or label is None or not isinstance(label, (str, int)):
            raise DataError(f"option labels: item {i} is {_describe(label)}, not a label name; label names must "
                            f"be strings ({YAML_HINT}): quote it, e.g. labels: ['yes', 'no']")
        name = str(label)
        if not name.strip() or name != name.strip():
            raise DataError(f"option labels: item {i} {name!r} is empty or has spaces at its ends; rows' labels "
                            "are read without them, so it could never match: remove them")
        if multi_label and isinstance(sep, str) and sep and sep in name:
            raise DataError(f"option labels: item {i} {name!r} contains the label_separator {sep!r}, so a row "
                            "could never name it: rename it or set another label_separator")
        names.append(name)
    return tuple(names)


def _check_option_types(**options: object) -> None:
    for key in ("text_column", "label_column", "label_separator", "name"):
        value = options[key]
        if not isinstance(value, str) or not value:
            raise DataError(f"option {key} must be a non-empty string; got {_describe(value)} ({YAML_HINT}: quote "
                            "it)")
    for key in ("speaker_column", "dialogue_column", "order_column", "metric", "neutral"):
        value = options[key]
        if value is not None and (not isinstance(value, str) or not value):
            raise DataError(f"option {key} must be a non-empty string or absent; got {_describe(value)} "
                            f"({YAML_HINT}: quote it)")
    if not isinstance(options["multi_label"], bool):
        raise DataError(f"option multi_label must be true or false; got {_describe(options['multi_label'])}")


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
            reader = csv.reader(f)
            header = next(reader, None) or []
            check_header(header, file, line=reader.line_num or 1)
            check(header)
            for fields in reader:
                if not fields:
                    continue  # a blank line
                if len(fields) != len(header):
                    policy.bad("wrong_field_count",
                               f"{len(fields)} fields, but the header has {len(header)} ({', '.join(header)}); a "
                               "value holding a comma or a quote must be quoted", file=file, line=reader.line_num)
                    continue
                records.append((reader.line_num, dict(zip(header, fields))))
    elif file.endswith(".jsonl"):
        with open_text(file) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, object_pairs_hook=unique_object)
                except DuplicateKey as e:
                    policy.bad("duplicate_key", f"key {e.key!r} appears twice in the object (expected each "
                               "column once)", file=file, line=n)
                    continue
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


_DROPPED = object()


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
        nested = [c for c in columns.required if c != columns.label and isinstance(row.get(c), (list, dict, bool))]
        if nested:
            c = nested[0]
            policy.bad("bad_value", f"{c} is {_describe(row[c])} (expected a string or a number)", file=file, line=n)
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
    if columns.order and not numeric and any(_is_number(r.order) for r in rows):
        a = next(r for r in rows if _is_number(r.order))
        b = next(r for r in rows if not _is_number(r.order))
        raise DataError(f"column {columns.order!r} mixes numbers (line {a.line}: {a.order!r}) and other values "
                        f"(line {b.line}: {b.order!r}), so the turn order is ambiguous (numbers sort as 2 < 10, text "
                        "as '10' < '2'): use one kind throughout", file=file)
    rows.sort(key=lambda r: float(r.order) if numeric else str(r.order))  # type: ignore[arg-type]

    groups: dict[object, list[_Row]] = {}
    orders: dict[tuple[object, object], int] = {}
    for r in sorted(rows, key=lambda r: r.line) if columns.order else ():
        order = float(r.order) if numeric else str(r.order)  # type: ignore[arg-type]
        first = orders.setdefault((r.dialogue, order), r.line)
        if first != r.line:
            policy.bad("duplicate_order", f"dialogue {r.dialogue!r} already has a turn with {columns.order} "
                       f"{r.order!r} (line {first}), so the turn order is ambiguous (expected each turn's order once)",
                       file=file, line=r.line)
            r.dialogue = _DROPPED
    for r in rows:
        if r.dialogue is not _DROPPED:
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
    """A finite number (or its text): nan and inf cannot be ordered."""
    try:
        return math.isfinite(float(value)) and not isinstance(value, bool)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _hold_out(units: list[list[Example]], seed: int) -> tuple[list[list[Example]], list[list[Example]]]:
    """A seeded ~10% of train dialogues (or rows) as validation, both kept in file order."""
    k = max(1, round(len(units) * VALIDATION_FRACTION)) if len(units) > 1 else 0
    held = set(random.Random(seed).sample(range(len(units)), k))
    return [u for i, u in enumerate(units) if i not in held], [u for i, u in enumerate(units) if i in held]
