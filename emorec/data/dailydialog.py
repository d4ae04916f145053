"""DailyDialog (ijcnlp_dailydialog): dyadic dialogues, one per line, with a parallel emotion-id file."""

from __future__ import annotations

from collections import Counter

from emorec.data import check_options, exists, join, read_lines
from emorec.data.schema import SPLITS, DatasetSpec, Example, LoadedDataset, RowPolicy, Turn
from emorec.errors import DataError

LABELS = ("no emotion", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
VERBALISERS = ("neutral", "angry", "disgusted", "fearful", "happy", "sad", "surprised")

SPEC = DatasetSpec(
    name="dailydialog",
    labels=LABELS,
    verbalisers=dict(zip(LABELS, VERBALISERS)),
    metric="micro_f1_no_neutral",
    dialogue=True,
    neutral="no emotion",
)

EOU = "__eou__"
LABEL_RANGE = f"0..{len(LABELS) - 1} ({', '.join(LABELS)})"


def resolve(path: str) -> str:
    """The ijcnlp_dailydialog directory: `path` itself or its child of that name."""
    for root in (path, join(path, "ijcnlp_dailydialog")):
        if exists(join(root, "train", "dialogues_train.txt")):
            return root
    hint = " (unzip train.zip, validation.zip and test.zip there first)" if exists(join(path, "train.zip")) else ""
    raise DataError(
        f"no DailyDialog release at {path}: expected ijcnlp_dailydialog/ with "
        f"{{train,validation,test}}/dialogues_<split>.txt and dialogues_emotion_<split>.txt{hint}"
    )


def load(path: str, *, on_bad_row: str = "error", seed: int = 0, **options) -> LoadedDataset:
    check_options(SPEC.name, options)
    root = resolve(path)
    skipped: Counter = Counter()
    policy = RowPolicy(on_bad_row, skipped)
    splits = {split: _load_split(root, split, policy) for split in SPLITS}
    return LoadedDataset(spec=SPEC, splits=splits, skipped=skipped)


def _load_split(root: str, split: str, policy: RowPolicy) -> list[Example]:
    text_file = join(root, split, f"dialogues_{split}.txt")
    emo_file = join(root, split, f"dialogues_emotion_{split}.txt")
    for f in (text_file, emo_file):
        if not exists(f):
            raise DataError(f"not found: {f} (expected the DailyDialog {split} split)")
    texts, emotions = _trim(read_lines(text_file)), _trim(read_lines(emo_file))
    if len(texts) != len(emotions):
        # A file-level defect, never a skippable row: a line missing anywhere pairs every later dialogue with the
        # wrong labels.
        shorter, longer = (text_file, emo_file) if len(texts) < len(emotions) else (emo_file, text_file)
        n = min(len(texts), len(emotions)) + 1
        raise DataError(f"line {n} has no matching line in {shorter} (expected both files to have the same number "
                        f"of lines: {len(texts)} vs {len(emotions)})", file=longer, line=n)
    examples: list[Example] = []
    for n in range(1, max(len(texts), len(emotions)) + 1):
        if n > len(texts) or n > len(emotions):
            shorter, longer = (text_file, emo_file) if n > len(texts) else (emo_file, text_file)
            policy.bad(
                "line_count_mismatch",
                f"line {n} has no matching line in {shorter} (expected both files to have the same "
                f"number of lines: {len(texts)} vs {len(emotions)})",
                file=longer, line=n,
            )
            continue
        labels = _labels(emotions[n - 1], n, text_file, emo_file, policy)
        if labels is None:
            continue
        utterances = _utterances(texts[n - 1])
        if len(utterances) != len(labels):
            policy.bad(
                "label_count_mismatch",
                f"dialogue has {len(utterances)} utterances but {emo_file} line {n} has {len(labels)} "
                f"labels (expected one label per utterance)",
                file=text_file, line=n,
            )
            continue
        if not all(utterances):
            policy.bad("empty_text", f"dialogue has an empty utterance (expected text between {EOU} markers)",
                       file=text_file, line=n)
            continue
        turns: list[Turn] = []
        for i, (text, label) in enumerate(zip(utterances, labels)):
            speaker = "AB"[i % 2]
            examples.append(Example(
                id=f"dailydialog-{split}-{n}-{i}", text=text, labels=(label,), speaker=speaker,
                context=tuple(turns),
            ))
            turns.append(Turn(speaker, text))
    return examples


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _utterances(line: str) -> list[str]:
    parts = [p.strip() for p in line.split(EOU)]
    if len(parts) > 1 and not parts[-1]:
        parts.pop()
    return parts


def _labels(line: str, n: int, text_file: str, emo_file: str, policy: RowPolicy) -> list[str] | None:
    labels = []
    for token in line.split():
        if not (token.isascii() and token.isdigit() and int(token) < len(LABELS)):
            shown = token if token.lstrip("-").isdigit() else repr(token)
            policy.bad(
                "bad_label",
                f"label {shown} is not one of {LABEL_RANGE} (dialogue at {text_file} line {n})",
                file=emo_file, line=n,
            )
            return None
        labels.append(LABELS[int(token)])
    return labels
