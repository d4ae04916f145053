"""Each dataset's metric as its literature reports it, plus a confusion matrix."""

from __future__ import annotations

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


def score(spec: DatasetSpec, gold: list[tuple[str, ...]], pred: list[tuple[str, ...]]) -> dict:
    labels = list(spec.labels)
    if spec.metric == "multilabel_macro_f1":
        mlb = MultiLabelBinarizer(classes=labels)
        y, p = mlb.fit_transform(gold), mlb.transform(pred)
        values = {
            "macro_f1": f1_score(y, p, average="macro", zero_division=0),
            "micro_f1": f1_score(y, p, average="micro", zero_division=0),
            "exact_match": accuracy_score(y, p),
        }
        cm = multilabel_confusion_matrix(y, p).tolist()
    else:
        y, p = [g[0] for g in gold], [q[0] for q in pred]
        values = {
            "accuracy": accuracy_score(y, p),
            "weighted_f1": f1_score(y, p, labels=labels, average="weighted", zero_division=0),
            "macro_f1": f1_score(y, p, labels=labels, average="macro", zero_division=0),
        }
        if spec.metric == "micro_f1_no_neutral":
            non_neutral = [label for label in labels if label != spec.neutral]
            values["micro_f1_no_neutral"] = f1_score(y, p, labels=non_neutral, average="micro", zero_division=0)
        cm = confusion_matrix(y, p, labels=labels).tolist()
    primary = PRIMARY[spec.metric]
    return {
        "metric": spec.metric,
        "primary": primary,
        "value": float(values[primary]),
        "values": {k: float(v) for k, v in values.items()},
        "labels": labels,
        "confusion_matrix": cm,
        "n": len(gold),
    }
