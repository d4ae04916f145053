"""Each dataset's metric as its literature reports it, plus a confusion matrix and the score of chance."""

from __future__ import annotations

import random

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, multilabel_confusion_matrix
from sklearn.preprocessing import MultiLabelBinarizer

from emorec.data.schema import DatasetSpec

PRIMARY = {
    "weighted_f1": "weighted_f1",
    "micro_f1_no_neutral": "micro_f1_no_neutral",
    "accuracy_macro_f1": "accuracy",
    "multilabel_macro_f1": "macro_f1",
}
METRICS = tuple(PRIMARY)


# How many guesses `chance` makes in all, in rounds of one guess per example: a small test split gets more rounds
# (at most CHANCE_ROUNDS[1]), a large one, whose score varies less from round to round, fewer (at least [0]).
CHANCE_GUESSES = 20_000
CHANCE_ROUNDS = (5, 50)


def _multi(spec: DatasetSpec) -> bool:
    return spec.metric == "multilabel_macro_f1"


def _encoded(spec: DatasetSpec, labels: list[tuple[str, ...]]):
    """Labels as sklearn takes them: a label-indicator matrix for a multi-label set, else each example's label."""
    if _multi(spec):
        return MultiLabelBinarizer(classes=list(spec.labels)).fit_transform(labels)
    return [x[0] for x in labels]


def _metrics(spec: DatasetSpec) -> dict:
    """name -> f(gold, pred) on encoded labels, for every value `score` reports."""
    labels = list(spec.labels)
    if _multi(spec):
        return {
            "macro_f1": lambda y, p: f1_score(y, p, average="macro", zero_division=0),
            "micro_f1": lambda y, p: f1_score(y, p, average="micro", zero_division=0),
            "exact_match": accuracy_score,
        }
    out = {
        "accuracy": accuracy_score,
        "weighted_f1": lambda y, p: f1_score(y, p, labels=labels, average="weighted", zero_division=0),
        "macro_f1": lambda y, p: f1_score(y, p, labels=labels, average="macro", zero_division=0),
    }
    if spec.metric == "micro_f1_no_neutral":
        non_neutral = [label for label in labels if label != spec.neutral]
        out["micro_f1_no_neutral"] = lambda y, p: f1_score(y, p, labels=non_neutral, average="micro", zero_division=0)
    return out


def chance(spec: DatasetSpec, gold: list[tuple[str, ...]], *, seed: int = 0) -> float:
    """The primary metric that guessing one label uniformly at random scores on `gold`, averaged over seeded rounds
    of guesses: the floor that a run which learned something must clear."""
    labels, primary = list(spec.labels), PRIMARY[spec.metric]
    if not gold or not labels:
        return 0.0
    rng = random.Random(seed)
    draws = min(max(CHANCE_ROUNDS[0], CHANCE_GUESSES // len(gold)), CHANCE_ROUNDS[1])
    metric, y = _metrics(spec)[primary], _encoded(spec, gold)
    total = 0.0
    for _ in range(draws):
        total += metric(y, _encoded(spec, [(rng.choice(labels),) for _ in gold]))
    return total / draws


def score(spec: DatasetSpec, gold: list[tuple[str, ...]], pred: list[tuple[str, ...]]) -> dict:
    y, p = _encoded(spec, gold), _encoded(spec, pred)
    values = {name: f(y, p) for name, f in _metrics(spec).items()}
    cm = multilabel_confusion_matrix(y, p) if _multi(spec) else confusion_matrix(y, p, labels=list(spec.labels))
    primary = PRIMARY[spec.metric]
    return {
        "metric": spec.metric,
        "primary": primary,
        "value": float(values[primary]),
        "chance": float(chance(spec, gold)),
        "values": {k: float(v) for k, v in values.items()},
        "labels": list(spec.labels),
        "confusion_matrix": cm.tolist(),
        "n": len(gold),
    }
