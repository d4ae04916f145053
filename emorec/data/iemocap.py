"""IEMOCAP from its native release: EmoEvaluation labels joined to transcriptions, one dialogue per file."""

from __future__ import annotations

import random
import re
from collections import Counter

import fsspec
from fsspec import AbstractFileSystem

from emorec.data import check_encoding, read_bytes
from emorec.data.schema import DatasetSpec, Example, LoadedDataset, RowPolicy, Turn
from emorec.errors import DataError

SPEC = DatasetSpec(
    name="iemocap",
    labels=("hap", "sad", "neu", "ang", "exc", "fru"),
    verbalisers={
        "hap": "happy", "sad": "sad", "neu": "neutral",
        "ang": "angry", "exc": "excited", "fru": "frustrated",
    },
    metric="weighted_f1",
    dialogue=True,
    neutral="neu",
)
UNUSED = ("xxx", "oth", "sur", "fea", "dis")
SESSIONS = tuple(f"Session{i}" for i in range(1, 6))
TEST_SESSION = "Session5"
FOLDERS = ("EmoEvaluation", "transcriptions")
OPTIONS = ("validation_share",)

_TIME = r"\d+(?:\.\d+)?"
_EVAL_LINE = re.compile(rf"\[\s*({_TIME})\s*-\s*({_TIME})\s*\]\s+(\S+)\s+(\S+)\s+\[")
_TRANSCRIPT_LINE = re.compile(rf"(\S+)\s+\[\s*({_TIME})\s*-\s*({_TIME})\s*\]:\s*(.*)")
_TURN_ID = re.compile(r".+_([FM])\d{3}")


def load(path: str, *, on_bad_row: str = "error", seed: int = 0, **options) -> LoadedDataset:
    share = _validation_share(options)
    skipped: Counter = Counter()
    policy = RowPolicy(on_bad_row, skipped)
    fs, root = _release_root(path)
    layout = {
        session: tuple(_txt_files(fs, f"{root}/{session}/dialog/{folder}", root) for folder in FOLDERS)
        for session in SESSIONS
    }
    for session, (evaluations, transcriptions) in layout.items():
        missing = sorted(evaluations.keys() - transcriptions.keys())
        if missing:
            name = missing[0]
            raise DataError(
                f"expected transcriptions/{name}.txt next to EmoEvaluation/{name}.txt in {root}/{session}/dialog"
            )
    dialogues: dict[tuple[str, str], list[Example]] = {}
    for session, (evaluations, transcriptions) in layout.items():
        for name in evaluations:
            labels = _read_evaluation(fs, evaluations[name], policy, skipped)
            turns = _read_transcription(fs, transcriptions[name], skipped)
            dialogues[session, name] = _examples(turns, labels, skipped)

    pool = sorted(key for key in dialogues if key[0] != TEST_SESSION)
    validation = set(random.Random(seed).sample(pool, round(share * len(pool))))
    splits: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for key in sorted(dialogues):
        split = "test" if key[0] == TEST_SESSION else "validation" if key in validation else "train"
        splits[split].extend(dialogues[key])
    return LoadedDataset(SPEC, splits, skipped)


def _validation_share(options: dict) -> float:
    for key in options:
        if key not in OPTIONS:
            raise DataError(f"unknown option {key!r} for iemocap; allowed: {', '.join(OPTIONS)}")
    share = options.get("validation_share", 0.1)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        raise DataError(f"iemocap option validation_share must be a number in [0, 1), got {share!r}")
    return float(share)


def _release_root(path: str) -> tuple[AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(path)
    root = root.rstrip("/")
    for candidate in (root, f"{root}/IEMOCAP_full_release"):
        if fs.isdir(f"{candidate}/Session1"):
            return fs, candidate
    raise DataError(f"expected IEMOCAP_full_release (with Session1 ... Session5) at or in {path}")


def _txt_files(fs: AbstractFileSystem, directory: str, root: str) -> dict[str, str]:
    if not fs.isdir(directory):
        raise DataError(f"expected directory {directory[len(root) + 1:]} in {root}")
    files = {}
    for info in fs.ls(directory, detail=True):
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if info["type"] == "file" and name.endswith(".txt") and not name.startswith("._"):
            files[name[:-4]] = info["name"]
    return files


ENCODING = "ASCII (latin-1)"


def _read_latin1(fs: AbstractFileSystem, file: str) -> list[str]:
    """The release's text files are ASCII with a few latin-1 letters; latin-1 decodes any bytes, so UTF-16/32
    (or a binary file) must be refused here, or its lines would match nothing and its turns be lost silently."""
    data = read_bytes(file, fs)
    check_encoding(data, file, expected=ENCODING)
    text = data.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as text mode reads it: \n, \r, \r\n


def _read_evaluation(
    fs: AbstractFileSystem, file: str, policy: RowPolicy, skipped: Counter
) -> dict[str, str | None]:
    """Turn id -> used label, or None for a turn whose label is unused (or bad and skipped)."""
    labels: dict[str, str | None] = {}
    lines = _read_latin1(fs, file)
    if not any(line.startswith("[") for line in lines):
        raise DataError("no evaluation lines (expected lines like '[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>"
                        f"neu<TAB>[2.5000, 2.5000, 2.5000]' in {ENCODING} text)", file=file)
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.startswith("["):
            continue
        match = _EVAL_LINE.match(line)
        if match is None:
            policy.bad(
                "malformed evaluation line",
                f"expected '[start - end]<TAB>turn id<TAB>label<TAB>[v, a, d]', got {line.strip()!r}",
                file=file, line=number,
            )
            continue
        turn_id, code = match.group(3), match.group(4)
        if not _TURN_ID.fullmatch(turn_id):
            policy.bad(
                "malformed turn id",
                f"turn id {turn_id!r} does not end in _F or _M and a 3-digit number",
                file=file, line=number,
            )
            continue
        if turn_id in first_line:
            policy.bad(
                "duplicate turn id",
                f"turn {turn_id} is evaluated twice (first at line {first_line[turn_id]}), so its label is "
                "ambiguous (expected each turn once)",
                file=file, line=number,
            )
            labels[turn_id] = None
            continue
        first_line[turn_id] = number
        labels[turn_id] = None
        if code in SPEC.labels:
            labels[turn_id] = code
        elif code in UNUSED:
            skipped[f"unused label {code}"] += 1
        else:
            policy.bad(
                "unknown label",
                f"label {code!r} of {turn_id} is not one of {', '.join(SPEC.labels)} "
                f"(or the unused {', '.join(UNUSED)})",
                file=file, line=number,
            )
    return labels


def _read_transcription(fs: AbstractFileSystem, file: str, skipped: Counter) -> list[tuple[float, str, str]]:
    """(start time, turn id, text) of every real turn, in time order."""
    turns = []
    for line in _read_latin1(fs, file):
        if not line.strip():
            continue
        match = _TRANSCRIPT_LINE.fullmatch(line.strip())
        if match is None or not _TURN_ID.fullmatch(match.group(1)) or not match.group(4).strip():
            skipped["non-turn line"] += 1
            continue
        turns.append((float(match.group(2)), match.group(1), match.group(4).strip()))
    if not turns:
        raise DataError(f"no turns (expected lines like 'Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.' in "
                        f"{ENCODING} text)", file=file)
    turns.sort(key=lambda turn: turn[0])
    return turns


def _examples(turns: list[tuple[float, str, str]], labels: dict[str, str | None], skipped: Counter) -> list[Example]:
    examples, context = [], []
    for _, turn_id, text in turns:
        speaker = _TURN_ID.fullmatch(turn_id).group(1)
        if turn_id not in labels:
            skipped["no evaluation"] += 1
        elif labels[turn_id] is not None:
            examples.append(Example(turn_id, text, (labels[turn_id],), speaker, tuple(context)))
        context.append(Turn(speaker, text))
    transcribed = {turn_id for _, turn_id, _ in turns}
    for turn_id, label in labels.items():
        if label is not None and turn_id not in transcribed:
            skipped["no transcript"] += 1
    return examples
