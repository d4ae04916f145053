"""Each dataset's metric as its literature reports it."""

import pytest

from emorec.data.schema import DatasetSpec
from emorec.eval.metrics import chance, score


def spec(metric, labels=("neutral", "joy", "anger"), **kw):
    return DatasetSpec("t", labels, {l: l for l in labels}, metric, dialogue=False, neutral="neutral", **kw)


GOLD = [("neutral",), ("neutral",), ("joy",), ("anger",), ("joy",)]
PRED = [("neutral",), ("joy",), ("joy",), ("anger",), ("anger",)]


def test_weighted_f1_and_confusion_matrix():
    m = score(spec("weighted_f1"), GOLD, PRED)
    # per-class F1: neutral 2/3, joy 1/2, anger 2/3; supports 2, 2, 1
    assert m["value"] == pytest.approx((2 * 2 / 3 + 2 * 0.5 + 1 * 2 / 3) / 5)
    assert m["values"]["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_micro_f1_without_neutral():
    m = score(spec("micro_f1_no_neutral"), GOLD, PRED)
    # non-neutral: tp = 2 (joy, anger), fp = 2 (joy for neutral, anger for joy), fn = 1 (joy)
    assert m["primary"] == "micro_f1_no_neutral"
    assert m["value"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))


def test_accuracy_and_macro_f1_for_carer():
    m = score(spec("accuracy_macro_f1"), GOLD, PRED)
    assert m["primary"] == "accuracy" and m["value"] == pytest.approx(0.6)
    assert m["values"]["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)


def test_multilabel_macro_f1():
    s = spec("multilabel_macro_f1", multi_label=True)
    m = score(s, [("joy", "anger"), ("neutral",)], [("joy",), ("neutral", "anger")])
    # neutral f1 1, joy f1 1, anger: tp 0 fp 1 fn 1 -> 0
    assert m["value"] == pytest.approx(2 / 3)
    assert len(m["confusion_matrix"]) == 3


def _labels(n):
    return tuple(f"l{i}" for i in range(n))


@pytest.mark.parametrize("metric,n_labels,expected", [
    ("accuracy_macro_f1", 6, 1 / 6),  # CARER: one right in six
    ("weighted_f1", 7, 1 / 7),  # balanced gold: every class's F1 is about 1/7
    ("multilabel_macro_f1", 28, 1 / 28),  # GoEmotions: one guessed label per example
])
def test_chance_is_what_uniform_guessing_scores(metric, n_labels, expected):
    labels = _labels(n_labels)
    s = spec(metric, labels=labels, multi_label=metric.startswith("multilabel"))
    gold = [(labels[i % n_labels],) for i in range(20 * n_labels)]
    m = score(s, gold, gold)
    assert m["value"] == pytest.approx(1.0)
    assert m["chance"] == pytest.approx(expected, rel=0.15)
    assert score(s, gold, [(labels[0],)] * len(gold))["chance"] == m["chance"]  # it depends on the gold labels only


def test_chance_without_neutral_scores_only_the_other_labels():
    labels = ("neutral", "joy", "anger", "fear")
    gold = [("neutral",)] * 90 + [(labels[1 + i % 3],) for i in range(30)]
    m = score(spec("micro_f1_no_neutral", labels=labels), gold, gold)
    # 3/4 of the guesses are non-neutral labels (90 predicted positives), 1/4 of the 30 non-neutral golds are hit
    tp = 30 / 4
    assert m["chance"] == pytest.approx(2 * tp / (90 + 30), rel=0.2)


def test_chance_of_an_empty_split_or_label_set_is_zero():
    assert chance(spec("weighted_f1"), []) == 0.0
    assert chance(spec("weighted_f1", labels=()), [("joy",)]) == 0.0
