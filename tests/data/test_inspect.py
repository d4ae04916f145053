from collections import Counter
from pathlib import Path

import pytest

from emorec.data import DATASETS, load_dataset
from emorec.data.inspect import counts, table
from emorec.errors import DataError


def goemotions_release(root: Path) -> Path:
    data = root / "data"
    data.mkdir()
    (data / "emotions.txt").write_text("joy\nanger\nneutral\n")
    (data / "train.tsv").write_text("a\t0\tc1\nb\t0,1\tc2\nc\t2\tc3\nd\t1,0\tc4\nbad\t9\tc5\n")
    (data / "dev.tsv").write_text("e\t2\tc6\n")
    (data / "test.tsv").write_text("f\t1\tc7\nno columns\n")
    return data


def test_counts_exact_multi_label_counted_under_each_label(tmp_path):
    ds = load_dataset("goemotions", str(goemotions_release(tmp_path)), on_bad_row="skip")
    assert counts(ds) == {
        "dataset": "goemotions",
        "splits": {
            "train": {"n": 4, "labels": {"joy": 3, "anger": 2, "neutral": 1}},
            "validation": {"n": 1, "labels": {"joy": 0, "anger": 0, "neutral": 1}},
            "test": {"n": 1, "labels": {"joy": 0, "anger": 1, "neutral": 0}},
        },
        "skipped": {"bad_columns": 1, "bad_label": 1},
    }


def test_table_renders_aligned(tmp_path):
    ds = load_dataset("goemotions", str(goemotions_release(tmp_path)), on_bad_row="skip")
    text = table(counts(ds))
    lines = text.splitlines()
    assert lines[0].split() == ["goemotions", "train", "validation", "test"]
    assert "joy" in lines[2] and lines[2].split() == ["joy", "3", "0", "0"]
    n_line = next(line for line in lines if line.startswith("n (utterances)"))
    assert n_line.split()[-3:] == ["4", "1", "1"]
    assert lines[-1] == "skipped rows: bad_columns 1, bad_label 1"
    body = [line for line in lines[:-1] if not line.startswith("-")]
    assert len({len(line) for line in body}) == 1  # right-aligned numbers end in one column
    empty = {"dataset": "x", "splits": {s: {"n": 0, "labels": {"a": 0}} for s in ("train", "validation", "test")},
             "skipped": {}}
    assert table(empty).endswith("skipped rows: none")


def test_registry_names_and_unknown(tmp_path):
    assert DATASETS == ("iemocap", "meld", "emorynlp", "dailydialog", "carer", "goemotions")
    with pytest.raises(DataError, match="unknown dataset 'nope'; known datasets: iemocap, meld, emorynlp, "
                                        "dailydialog, carer, goemotions, custom"):
        load_dataset("nope", str(tmp_path))


def test_make_all_writes_every_dataset_loadable(tmp_path, capsys):
    for other in ("iemocap", "meld", "emorynlp"):
        pytest.importorskip(f"emorec.data.fixtures.{other}")
        pytest.importorskip(f"emorec.data.{other}")
    from emorec.data.fixtures import make_all
    from emorec.data.fixtures.__main__ import main

    paths = make_all(str(tmp_path / "a"), seed=0)
    assert list(paths) == list(DATASETS)
    for name, path in paths.items():
        assert Path(path).is_relative_to(tmp_path / "a" / name)
        c = counts(load_dataset(name, path))
        assert c["dataset"] == name and all(c["splits"][s]["n"] > 0 for s in c["splits"]), name
    main([str(tmp_path / "b"), "--seed", "0"])
    assert Counter(line.split("\t")[0] for line in capsys.readouterr().out.splitlines()) == Counter(DATASETS)
