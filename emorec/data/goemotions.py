"""GoEmotions (data/ of the google-research release): Reddit comments, multi-label, labels from emotions.txt."""

from __future__ import annotations

from collections import Counter

from emorec.data import check_options, exists, join, read_lines
from emorec.data.schema import DatasetSpec, Example, LoadedDataset, RowPolicy
from emorec.errors import DataError

LABELS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
    "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
    "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
    "remorse", "sadness", "surprise", "neutral",
)

FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}


def make_spec(labels: tuple[str, ...]) -> DatasetSpec:
    return DatasetSpec(
        name="goemotions",
        labels=labels,
        verbalisers={label: label for label in labels},
        metric="multilabel_macro_f1",
        dialogue=False,
        multi_label=True,
        neutral="neutral" if "neutral" in labels else None,
    )


SPEC = make_spec(LABELS)


def resolve(path: str) -> str:
    """The release's data/ directory: `path` itself or its child `data`."""
    for root in (path, join(path, "data")):
        if exists(join(root, "emotions.txt")):
            return root
    raise DataError(f"no GoEmotions release at {path}: expected data/ with emotions.txt, train.tsv, dev.tsv, test.tsv")


def read_labels(file: str) -> tuple[str, ...]:
    """emotions.txt: one name per line; a label id is a line position, so any gap or shift is a file-level error."""
    lines = [line.strip() for line in read_lines(file)]
    while lines and not lines[-1]:
        lines.pop()
    blank = next((n for n, line in enumerate(lines, 1) if not line), None)
    if blank is not None:
        raise DataError("blank line inside the label list; label ids are line positions, so it is ambiguous "
                        "whether it is a label (expected one emotion name per line)", file=file, line=blank)
    labels = tuple(lines)
    if not labels:
        raise DataError("no labels (expected one emotion name per line)", file=file)
    dupes = sorted(label for label, k in Counter(labels).items() if k > 1)
    if dupes:
        raise DataError(f"duplicate labels {', '.join(dupes)} (expected each emotion once)", file=file)
    _check_against_release(labels, file)
    return labels


def _check_against_release(labels: tuple[str, ...], file: str) -> None:
    """A file that shares most of the release's 28 names is meant to be the release's emotions.txt: it must then
    list them exactly, in order (extra names after them are allowed). A smaller taxonomy (e.g. Ekman's 6 plus
    neutral) shares few names and is used as it is."""
    shared = [label for label in labels if label in LABELS]
    if len(shared) * 2 <= len(LABELS) or labels[: len(LABELS)] == LABELS:
        return
    missing = [label for label in LABELS if label not in labels]
    for n, (got, want) in enumerate(zip(labels, LABELS), 1):
        if got != want:
            break
    else:
        n, got, want = len(labels) + 1, None, LABELS[len(labels)]
    problem = (f"it lacks {', '.join(missing)}" if missing else "its names are in another order") + (
        f"; line {n} is {got!r} where the release has {want!r}" if got is not None else
        f"; it ends at line {n - 1}, before the release's {want!r}")
    raise DataError(
        f"lists {len(labels)} labels, {len(shared)} of them GoEmotions emotions, but not the release's "
        f"{len(LABELS)} in the release's order: {problem}. Label ids in the .tsv files are line positions in "
        f"this file, so every id from there on would name the wrong emotion or none: restore the release's "
        f"emotions.txt ({', '.join(LABELS[:3])}, ..., {LABELS[-1]})", file=file)


def load(path: str, *, on_bad_row: str = "error", seed: int = 0, **options) -> LoadedDataset:
    check_options(SPEC.name, options)
    root = resolve(path)
    labels = read_labels(join(root, "emotions.txt"))
    spec = SPEC if labels == LABELS else make_spec(labels)
    skipped: Counter = Counter()
    policy = RowPolicy(on_bad_row, skipped)
    splits = {}
    for split, name in FILES.items():
        file = join(root, name)
        if not exists(file):
            raise DataError(f"not found: {file} (expected the GoEmotions {split} split)")
        splits[split] = _load_split(split, file, labels, policy)
    return LoadedDataset(spec=spec, splits=splits, skipped=skipped)


def _load_split(split: str, file: str, labels: tuple[str, ...], policy: RowPolicy) -> list[Example]:
    id_range = f"0..{len(labels) - 1} (the line order of emotions.txt)"
    examples = []
    for n, line in enumerate(read_lines(file), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            policy.bad("bad_columns", f"{len(cols)} tab-separated columns (expected 3: text, ids, comment id)",
                       file=file, line=n)
            continue
        text, ids, _comment_id = (c.strip() for c in cols)
        if not text:
            policy.bad("missing_text", "empty text (expected the comment text in column 1)", file=file, line=n)
            continue
        tokens = [t.strip() for t in ids.split(",")]
        bad = next((t for t in tokens if not (t.isascii() and t.isdigit() and int(t) < len(labels))), None)
        if bad is not None:
            shown = bad if bad.lstrip("-").isdigit() else repr(bad)
            policy.bad("bad_label", f"label {shown} is not one of {id_range}", file=file, line=n)
            continue
        label_ids = sorted({int(t) for t in tokens})
        examples.append(Example(
            id=f"goemotions-{split}-{n}", text=text, labels=tuple(labels[i] for i in label_ids)
        ))
    return examples
