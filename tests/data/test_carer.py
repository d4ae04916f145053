import json
from collections import Counter
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emorec.data.carer import LABELS, load
from emorec.data.fixtures import carer as fixture
from emorec.errors import DataError


def write_jsonl(root: Path, rows: dict[str, list]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        lines = rows.get(split, ['{"text": "ok", "label": 0}'])
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_fixture_jsonl_counts_match_an_independent_parse(tmp_path):
    path = fixture.write(str(tmp_path), seed=5)
    ds = load(path)
    for split in ("train", "validation", "test"):
        rows = [json.loads(line) for line in (Path(path) / f"{split}.jsonl").read_text().splitlines()]
        assert Counter(ex.labels[0] for ex in ds.splits[split]) == Counter(LABELS[r["label"]] for r in rows)
        assert [ex.text for ex in ds.splits[split]] == [r["text"] for r in rows]
    assert 150 <= len(ds.splits["train"]) <= 250 and 30 <= len(ds.splits["validation"]) <= 60
    assert ds.spec.metric == "accuracy_macro_f1" and not ds.spec.dialogue and ds.spec.neutral is None


def test_fixture_txt_layout(tmp_path):
    path = fixture.write(str(tmp_path), seed=5, layout="txt")
    assert sorted(p.name for p in Path(path).iterdir()) == ["test.txt", "train.txt", "val.txt"]
    ds = load(path)
    words = [line.rsplit(";", 1)[1] for line in (Path(path) / "val.txt").read_text().splitlines()]
    assert [ex.labels[0] for ex in ds.splits["validation"]] == words
    assert fixture.write(str(tmp_path / "a"), seed=5, layout="txt") != path  # different dir, same bytes
    assert (Path(tmp_path / "a") / "val.txt").read_bytes() == (Path(path) / "val.txt").read_bytes()


def test_hand_written_layouts_exact(tmp_path):
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    for split in ("train", "validation", "test"):
        (csv_dir / f"{split}.csv").write_text('text,label\n"i feel, well, fine",1\ni am scared,4\n')
    ds = load(str(csv_dir))
    assert [(ex.text, ex.labels) for ex in ds.splits["train"]] == [("i feel, well, fine", ("joy",)),
                                                                   ("i am scared", ("fear",))]

    hub = tmp_path / "hub"
    (hub / "split").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        table = pa.table({"text": ["a", "b", "c"], "label": [0, 5, 2]})
        pq.write_table(table, hub / "split" / f"{split}-00000-of-00001.parquet")
    ds = load(str(hub))
    assert [ex.labels[0] for ex in ds.splits["test"]] == ["sadness", "surprise", "love"]

    txt = tmp_path / "txt"
    txt.mkdir()
    for name in ("train.txt", "val.txt", "test.txt"):
        (txt / name).write_text("i feel; odd;anger\ni love it;love\n\n")
    ds = load(str(txt))
    assert [(ex.text, ex.labels) for ex in ds.splits["validation"]] == [("i feel; odd", ("anger",)),
                                                                        ("i love it", ("love",))]


def test_jsonl_preferred_over_txt(tmp_path):
    write_jsonl(tmp_path, {})
    (tmp_path / "train.txt").write_text("x;joy\ny;joy\n")
    assert len(load(str(tmp_path)).splits["train"]) == 1


def test_out_of_range_label_names_file_line_and_labels(tmp_path):
    write_jsonl(tmp_path, {"train": ['{"text": "a", "label": 1}', '{"text": "b", "label": 6}']})
    with pytest.raises(DataError, match=r"train.jsonl line 2: label 6 is not one of 0\.\.5 \(sadness, joy, love"):
        load(str(tmp_path))
    ds = load(str(tmp_path), on_bad_row="skip")
    assert len(ds.splits["train"]) == 1 and ds.skipped == {"bad_label": 1}


def test_unknown_word_and_missing_separator_in_txt(tmp_path):
    for name in ("train.txt", "val.txt", "test.txt"):
        (tmp_path / name).write_text("fine;joy\n")
    (tmp_path / "val.txt").write_text("fine;joy\nnot sure;happy\nno label here\n")
    with pytest.raises(DataError, match=r"val.txt line 2: label 'happy' is not one of"):
        load(str(tmp_path))
    ds = load(str(tmp_path), on_bad_row="skip")
    assert len(ds.splits["validation"]) == 1 and ds.skipped == {"bad_label": 1, "bad_format": 1}


def test_missing_text_and_bad_json(tmp_path):
    rows = ['{"label": 1}', '{"text": "  ", "label": 1}', "not json", '{"text": "y", "label": 3}']
    write_jsonl(tmp_path, {"test": rows})
    with pytest.raises(DataError, match=r"test.jsonl line 1: missing text"):
        load(str(tmp_path))
    ds = load(str(tmp_path), on_bad_row="skip")
    assert [ex.text for ex in ds.splits["test"]] == ["y"]
    assert ds.skipped == {"missing_text": 2, "bad_json": 1}


def test_no_layout_found_lists_what_was_looked_for(tmp_path):
    with pytest.raises(DataError) as e:
        load(str(tmp_path))
    msg = str(e.value)
    for name in ("train.jsonl", "train.parquet", "train.csv", "split/train-00000-of-00001.parquet", "val.txt"):
        assert name in msg


def test_missing_split_file_and_missing_column(tmp_path):
    write_jsonl(tmp_path / "j", {})
    (tmp_path / "j" / "validation.jsonl").unlink()
    with pytest.raises(DataError, match="validation.jsonl"):
        load(str(tmp_path / "j"))
    (tmp_path / "c").mkdir()
    for split in ("train", "validation", "test"):
        (tmp_path / "c" / f"{split}.csv").write_text("sentence,label\nhi,1\n")
    with pytest.raises(DataError, match=r"train.csv: no column 'text'.*found: sentence, label"):
        load(str(tmp_path / "c"))


def test_loads_from_fsspec_urls():
    fs = fsspec.filesystem("memory")
    for split in ("train", "validation", "test"):
        fs.pipe(f"/carer-url-test/{split}.jsonl", b'{"text": "hi", "label": 1}\n')
    ds = load("memory://carer-url-test")
    assert [ex.labels for ex in ds.splits["test"]] == [("joy",)]
    fs.rm("/carer-url-test", recursive=True)
