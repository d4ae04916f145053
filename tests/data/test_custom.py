import json
from pathlib import Path

import pytest

from emorec.data import Turn, load_dataset
from emorec.data.custom import load
from emorec.errors import DataError

LABELS = ["happy", "sad", "neutral"]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return path.name


def test_csv_dialogues_grouped_and_ordered_numerically(tmp_path):
    write(tmp_path / "train.csv",
          "conv,turn,who,utt,emo\n"
          "d1,10,A,third,sad\n"
          "d2,1,X,other,happy\n"
          "d1,2,B,first,happy\n"
          'd1,9,A,"second, with comma",neutral\n')
    write(tmp_path / "test.csv", "conv,turn,who,utt,emo\nt,1,A,hi,happy\nt,2,B,bye,sad\n")
    ds = load(str(tmp_path), files={"train": "train.csv", "validation": "train.csv", "test": "test.csv"},
              labels=LABELS, text_column="utt", label_column="emo", speaker_column="who",
              dialogue_column="conv", order_column="turn", neutral="neutral")
    train = ds.splits["train"]
    assert [ex.text for ex in train] == ["first", "second, with comma", "third", "other"]
    assert train[2].context == (Turn("B", "first"), Turn("A", "second, with comma"))
    assert train[3].context == () and train[3].speaker == "X"
    assert [ex.labels for ex in ds.splits["test"]] == [("happy",), ("sad",)]
    assert ds.spec.dialogue and ds.spec.metric == "weighted_f1" and ds.spec.neutral == "neutral"
    assert ds.spec.labels == tuple(LABELS) and ds.spec.verbalisers == {lab: lab for lab in LABELS}
    assert len({ex.id for ex in train}) == 4


def test_non_numeric_order_and_file_order(tmp_path):
    write(tmp_path / "d.csv", "d,o,text,label\nx,b,two,sad\nx,a,one,happy\ny,,solo,happy\n")
    with pytest.raises(DataError, match=r"d.csv line 4: empty or missing o"):
        load(str(tmp_path), files={"train": "d.csv", "test": "d.csv"}, labels=LABELS,
             dialogue_column="d", order_column="o")
    write(tmp_path / "d.csv", "d,o,text,label\nx,b,two,sad\nx,a,one,happy\n")
    ds = load(str(tmp_path), files={"train": "d.csv", "test": "d.csv"}, labels=LABELS,
              dialogue_column="d", order_column="o")
    assert [ex.text for ex in ds.splits["test"]] == ["one", "two"]
    ds = load(str(tmp_path), files={"train": "d.csv", "test": "d.csv"}, labels=LABELS, dialogue_column="d")
    assert [ex.text for ex in ds.splits["test"]] == ["two", "one"]
    assert ds.splits["test"][1].context == (Turn(None, "two"),)


def test_jsonl_multi_label(tmp_path):
    rows = [{"text": "yay", "label": "happy"}, {"text": "mixed", "label": "sad;happy"},
            {"text": "list", "label": ["neutral", "sad"]}, {"text": "n", "label": 0}]
    write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows[:3]) + "\n")
    ds = load(str(tmp_path), files={"train": "a.jsonl", "test": "a.jsonl", "validation": "a.jsonl"},
              labels=LABELS, multi_label=True, label_separator=";")
    assert [ex.labels for ex in ds.splits["test"]] == [("happy",), ("happy", "sad"), ("sad", "neutral")]
    assert ds.spec.multi_label and ds.spec.metric == "multilabel_macro_f1" and not ds.spec.dialogue
    assert ds.splits["test"][0].context == ()
    write(tmp_path / "b.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load(str(tmp_path), files={"train": "b.jsonl", "test": "b.jsonl", "validation": "b.jsonl"},
              labels=[0, 1], metric="accuracy_macro_f1", name="mine", on_bad_row="skip")
    assert [ex.labels for ex in ds.splits["test"]] == [("0",)]
    assert ds.spec.name == "mine" and ds.spec.metric == "accuracy_macro_f1"
    assert ds.skipped == {"bad_label": 9}


def test_missing_column_names_file_column_and_existing(tmp_path):
    write(tmp_path / "t.csv", "sentence,label\nhi,happy\n")
    with pytest.raises(DataError, match=r"t.csv: no column 'text' \(columns in the file: sentence, label\)"):
        load(str(tmp_path), files={"train": "t.csv", "test": "t.csv"}, labels=LABELS)
    write(tmp_path / "t.jsonl", '{"text": "hi", "label": "happy"}\n')
    with pytest.raises(DataError, match=r"t.jsonl: no column 'conv' \(columns in the file: text, label\)"):
        load(str(tmp_path), files={"train": "t.jsonl", "test": "t.jsonl"}, labels=LABELS, dialogue_column="conv")


def test_unknown_label_names_file_line_and_allowed(tmp_path):
    write(tmp_path / "t.csv", "text,label\nhi,happy\nugh,angry\nhm,\n")
    files = {"train": "t.csv", "validation": "t.csv", "test": "t.csv"}
    with pytest.raises(DataError, match=r"t.csv line 3: label 'angry' is not one of the allowed labels "
                                        r"\(happy, sad, neutral\)"):
        load(str(tmp_path), files=files, labels=LABELS)
    ds = load(str(tmp_path), files=files, labels=LABELS, on_bad_row="skip")
    assert len(ds.splits["train"]) == 1 and ds.skipped == {"bad_label": 3, "missing_field": 3}


def test_validation_held_out_from_train_by_seed(tmp_path):
    lines = ["d,text,label"] + [f"{d},u{d}-{t},happy" for d in range(20) for t in range(3)]
    write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    opts = dict(files={"train": "t.csv", "test": "t.csv"}, labels=LABELS, dialogue_column="d")
    a, b, c = (load(str(tmp_path), seed=s, **opts) for s in (0, 0, 1))
    assert len(a.splits["validation"]) == 6 and len(a.splits["train"]) == 54  # 2 of 20 dialogues
    assert a.splits == b.splits
    dialogues = {ex.text.split("-")[0] for ex in a.splits["validation"]}
    assert len(dialogues) == 2 and not dialogues & {ex.text.split("-")[0] for ex in a.splits["train"]}
    assert {ex.text for ex in a.splits["train"] + a.splits["validation"]} == {ex.text for ex in c.splits["test"]}
    assert c.splits["validation"] != a.splits["validation"]
    rows = load(str(tmp_path), files={"train": "t.csv", "test": "t.csv"}, labels=LABELS)
    assert len(rows.splits["validation"]) == 6 and len(rows.splits["train"]) == 54  # 10% of 60 rows


def test_option_errors(tmp_path):
    write(tmp_path / "t.csv", "text,label\nhi,happy\n")
    with pytest.raises(DataError, match="require|train and test"):
        load(str(tmp_path), files={"train": "t.csv"}, labels=LABELS)
    with pytest.raises(DataError, match="labels"):
        load(str(tmp_path), files={"train": "t.csv", "test": "t.csv"})
    with pytest.raises(DataError, match="unknown option.*text_col.*allowed options: files, labels, text_column"):
        load(str(tmp_path), files={"train": "t.csv", "test": "t.csv"}, labels=LABELS, text_col="x")
    with pytest.raises(DataError, match="missing.csv"):
        load(str(tmp_path), files={"train": "t.csv", "test": "missing.csv"}, labels=LABELS)
    write(tmp_path / "t.tsv", "text\tlabel\n")
    with pytest.raises(DataError, match=r"t.tsv \(expected .csv or .jsonl\)"):
        load(str(tmp_path), files={"train": "t.tsv", "test": "t.csv"}, labels=LABELS)
    with pytest.raises(DataError, match="neutral"):
        load(str(tmp_path), files={"train": "t.csv", "test": "t.csv"}, labels=LABELS, neutral="calm")


def test_registry_passes_options(tmp_path):
    write(tmp_path / "t.csv", "text,label\nhi,happy\nho,sad\n")
    ds = load_dataset("custom", str(tmp_path), options={"files": {"train": "t.csv", "test": "t.csv"},
                                                        "labels": LABELS})
    assert len(ds.splits["train"]) == 1 and len(ds.splits["validation"]) == 1
