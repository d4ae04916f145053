"""CARER (dair-ai/emotion): single sentences, six emotions; hub files or the older `text;label` copies."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from emorec.data import DuplicateKey, check_header, check_options, exists, join, open_text, read_bytes, unique_object
from emorec.data.schema import SPLITS, DatasetSpec, Example, LoadedDataset, RowPolicy
from emorec.errors import DataError

LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")

SPEC = DatasetSpec(
    name="carer",
    labels=LABELS,
    verbalisers={label: label for label in LABELS},
    metric="accuracy_macro_f1",
    dialogue=False,
)

# (format, split -> file), in order of preference.
LAYOUTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("jsonl", {s: f"{s}.jsonl" for s in SPLITS}),
    ("parquet", {s: f"{s}.parquet" for s in SPLITS}),
    ("csv", {s: f"{s}.csv" for s in SPLITS}),
    ("parquet", {s: f"split/{s}-00000-of-00001.parquet" for s in SPLITS}),
    ("txt", {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}),
)

LABEL_RANGE = f"0..{len(LABELS) - 1} ({', '.join(LABELS)})"

Row = tuple[int, object, object]  # (1-based line or row, text, label)


def find_layout(path: str) -> tuple[str, dict[str, str]]:
    for fmt, files in LAYOUTS:
        if exists(join(path, files["train"])):
            return fmt, {split: join(path, name) for split, name in files.items()}
    looked = "; ".join(", ".join(files.values()) for _, files in LAYOUTS)
    raise DataError(f"no CARER files found in {path}; looked for (in order): {looked}")


def load(path: str, *, on_bad_row: str = "error", seed: int = 0, **options) -> LoadedDataset:
    check_options(SPEC.name, options)
    fmt, files = find_layout(path)
    for split, file in files.items():
        if not exists(file):
            raise DataError(f"not found: {file} (expected the CARER {split} split next to {files['train']})")
    skipped: Counter = Counter()
    policy = RowPolicy(on_bad_row, skipped)
    splits = {split: _examples(split, files[split], READERS[fmt](files[split], policy), policy) for split in SPLITS}
    return LoadedDataset(spec=SPEC, splits=splits, skipped=skipped)


def _examples(split: str, file: str, rows: Iterator[Row], policy: RowPolicy) -> list[Example]:
    examples = []
    for n, text, value in rows:
        if not isinstance(text, str) or not text.strip():
            policy.bad("missing_text", "missing text (expected a non-empty text field)", file=file, line=n)
            continue
        label = _label(value)
        if label is None:
            shown = value if isinstance(value, int) else repr(value)
            policy.bad("bad_label", f"label {shown} is not one of {LABEL_RANGE} or their names", file=file, line=n)
            continue
        examples.append(Example(id=f"carer-{split}-{n}", text=text.strip(), labels=(label,)))
    return examples


def _label(value: object) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        if value in LABELS:
            return value
        value = int(value) if value.isascii() and value.isdigit() else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(LABELS):
        return LABELS[value]
    return None


def _jsonl(file: str, policy: RowPolicy) -> Iterator[Row]:
    with open_text(file) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=unique_object)
            except DuplicateKey as e:
                policy.bad("duplicate_key", f"key {e.key!r} appears twice in the object (expected text and label "
                           "once each)", file=file, line=n)
                continue
            except json.JSONDecodeError as e:
                row = e
            if not isinstance(row, dict):
                policy.bad("bad_json", 'not a JSON object (expected {"text": ..., "label": ...})', file=file, line=n)
                continue
            yield n, row.get("text"), row.get("label")


def _csv(file: str, policy: RowPolicy) -> Iterator[Row]:
    with open_text(file, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        _check_columns(file, header, line=1)
        text, label = header.index("text"), header.index("label")
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                policy.bad("wrong_field_count", f"{len(fields)} fields, but the header has {len(header)} "
                           f"({', '.join(header)}); a text holding a comma or a quote must be quoted",
                           file=file, line=reader.line_num)
                continue
            yield reader.line_num, fields[text], fields[label]


def _parquet(file: str, policy: RowPolicy) -> Iterator[Row]:
    try:
        table = pq.read_table(pa.BufferReader(read_bytes(file)))
    except pa.ArrowException as e:
        raise DataError(f"not a readable parquet file ({e})", file=file) from e
    _check_columns(file, table.column_names)
    for i, (text, label) in enumerate(zip(table.column("text").to_pylist(), table.column("label").to_pylist()), 1):
        yield i, text, label


def _txt(file: str, policy: RowPolicy) -> Iterator[Row]:
    with open_text(file) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if ";" not in line:
                policy.bad("bad_format", "no ';' in line (expected text;label)", file=file, line=n)
                continue
            text, label = line.rsplit(";", 1)
            yield n, text, label


def _check_columns(file: str, columns: list[str], line: int | None = None) -> None:
    check_header(list(columns), file, line=line)
    for column in ("text", "label"):
        if column not in columns:
            raise DataError(f"no column {column!r} (expected text and label; found: {', '.join(columns) or 'none'})",
                            file=file)


READERS = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "txt": _txt}
