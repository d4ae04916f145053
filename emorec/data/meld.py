"""MELD from its native release: three CSV files, a dialogue per Dialogue_ID ordered by Utterance_ID."""

from __future__ import annotations

import csv
from collections import Counter

from fsspec import AbstractFileSystem

from emorec.data import check_header, fixed_split_files, open_text
from emorec.data.schema import DatasetSpec, Example, LoadedDataset, RowPolicy, Turn
from emorec.errors import DataError

_LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
SPEC = DatasetSpec(
    name="meld",
    labels=_LABELS,
    verbalisers={label: label for label in _LABELS},
    metric="weighted_f1",
    dialogue=True,
    neutral="neutral",
)
FILES = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
HEADER = (
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
    "Season", "Episode", "StartTime", "EndTime",
)
_USED = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def load(path: str, *, on_bad_row: str = "error", seed: int = 0, **options) -> LoadedDataset:
    fs, files = fixed_split_files("meld", path, FILES, options)
    skipped: Counter = Counter()
    policy = RowPolicy(on_bad_row, skipped)
    splits = {split: _read_split(fs, file, policy) for split, file in files.items()}
    return LoadedDataset(SPEC, splits, skipped)


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 read as cp1252 (latin-1 where cp1252 has a gap): 'heâ€™s' -> 'he’s'; keep other text."""
    if text.isascii():
        return text
    try:
        return b"".join(_as_byte(char) for char in text).decode("utf-8")
    except ValueError:
        return text


def _as_byte(char: str) -> bytes:
    try:
        return char.encode("cp1252")
    except UnicodeEncodeError:
        if ord(char) < 256:
            return bytes([ord(char)])
        raise


def _read_split(fs: AbstractFileSystem, file: str, policy: RowPolicy) -> list[Example]:
    dialogues: dict[int, dict[int, tuple[str | None, str, str | None]]] = {}
    with open_text(file, newline="", fs=fs) as f:
        reader = csv.reader(f)
        header = [column.strip() for column in next(reader, [])]
        if not header:
            raise DataError(f"file is empty; expected the header {','.join(HEADER)}", file=file, line=1)
        check_header(header, file, line=1)
        for column in _USED:
            if column not in header:
                raise DataError(
                    f"header lacks column {column!r}; expected {','.join(HEADER)}", file=file, line=1
                )
        index = {column: header.index(column) for column in _USED}
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if row:
                _read_row(row, header, index, dialogues, policy, file, line)

    examples = []
    for dialogue_id in sorted(dialogues):
        context: list[Turn] = []
        utterances = dialogues[dialogue_id]
        for utterance_id in sorted(utterances):
            speaker, text, label = utterances[utterance_id]
            if label is not None:
                examples.append(
                    Example(f"dia{dialogue_id}_utt{utterance_id}", text, (label,), speaker, tuple(context))
                )
            context.append(Turn(speaker, text))
    return examples


def _read_row(
    row: list[str],
    header: list[str],
    index: dict[str, int],
    dialogues: dict[int, dict[int, tuple[str | None, str, str | None]]],
    policy: RowPolicy,
    file: str,
    line: int,
) -> None:
    if len(row) != len(header):
        policy.bad(
            "wrong field count", f"expected {len(header)} fields ({','.join(header)}), got {len(row)}",
            file=file, line=line,
        )
        return
    ids = []
    for column in ("Dialogue_ID", "Utterance_ID"):
        value = row[index[column]].strip()
        try:
            ids.append(int(value))
        except ValueError:
            policy.bad("non-integer id", f"{column} {value!r} is not an integer", file=file, line=line)
            return
    dialogue_id, utterance_id = ids
    if utterance_id in dialogues.get(dialogue_id, {}):
        policy.bad(
            "duplicate id", f"Dialogue_ID {dialogue_id} Utterance_ID {utterance_id} appears twice",
            file=file, line=line,
        )
        return
    text = fix_mojibake(row[index["Utterance"]].strip())
    if not text:
        policy.bad("empty utterance", "Utterance is empty; expected the utterance text", file=file, line=line)
        return
    emotion = row[index["Emotion"]].strip()
    label = emotion if emotion in SPEC.labels else None
    if label is None:
        policy.bad(
            "unknown emotion", f"emotion {emotion!r} is not one of {', '.join(SPEC.labels)}", file=file, line=line
        )
    speaker = fix_mojibake(row[index["Speaker"]].strip()) or None
    dialogues.setdefault(dialogue_id, {})[utterance_id] = (speaker, text, label)
