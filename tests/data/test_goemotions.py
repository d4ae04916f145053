from collections import Counter
from pathlib import Path

import pytest

from emorec.data.fixtures import goemotions as fixture
from emorec.data.goemotions import SPEC, load
from emorec.errors import DataError

FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}


def write_release(root: Path, rows: dict[str, str], labels: str = "joy\nanger\nsadness\nneutral\n") -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    (data / "emotions.txt").write_text(labels)
    for name in FILES.values():
        (data / name).write_text(rows.get(name, "fine\t3\tc1\n"))
    return data


def test_fixture_counts_match_an_independent_parse(tmp_path):
    path = fixture.write(str(tmp_path), seed=7)
    ds = load(path)
    assert ds.spec == SPEC and len(ds.spec.labels) == 28
    names = (Path(path) / "emotions.txt").read_text().split()
    n_multi = 0
    for split, name in FILES.items():
        rows = [line.split("\t") for line in (Path(path) / name).read_text().splitlines()]
        expected = Counter(names[int(i)] for _, ids, _ in rows for i in ids.split(","))
        got = Counter(label for ex in ds.splits[split] for label in ex.labels)
        assert got == expected and len(ds.splits[split]) == len(rows)
        n_multi += sum(len(ex.labels) == 2 for ex in ds.splits[split])
    assert n_multi >= 3
    assert 150 <= len(ds.splits["train"]) <= 250 and 60 <= len(ds.splits["test"]) <= 100


def test_hand_written_release_exact(tmp_path):
    data = write_release(tmp_path, {"train.tsv": "so happy\t0\tc1\nugh, sad and mad\t2,1\tc2\nmeh\t3\tc3\n"})
    for path in (data, tmp_path):  # data/ or its parent
        ds = load(str(path))
        assert ds.spec.labels == ("joy", "anger", "sadness", "neutral")
        assert ds.spec.multi_label and ds.spec.neutral == "neutral" and ds.spec.metric == "multilabel_macro_f1"
        assert [(ex.text, ex.labels) for ex in ds.splits["train"]] == [
            ("so happy", ("joy",)), ("ugh, sad and mad", ("anger", "sadness")), ("meh", ("neutral",))]
        assert [ex.labels for ex in ds.splits["validation"]] == [("neutral",)]


def test_out_of_range_id(tmp_path):
    data = write_release(tmp_path, {"dev.tsv": "ok\t0\tc1\nbad\t1,4\tc2\n"})
    with pytest.raises(DataError, match=r"dev.tsv line 2: label 4 is not one of 0\.\.3"):
        load(str(data))
    ds = load(str(data), on_bad_row="skip")
    assert len(ds.splits["validation"]) == 1 and ds.skipped == {"bad_label": 1}


def test_wrong_column_count_and_non_integer_ids(tmp_path):
    data = write_release(tmp_path, {"test.tsv": "no ids\tc1\nok\t1\tc2\nx\tjoy\tc3\ntab\tin\ttext\t1\n"})
    with pytest.raises(DataError, match=r"test.tsv line 1: 2 tab-separated columns \(expected 3"):
        load(str(data))
    ds = load(str(data), on_bad_row="skip")
    assert [ex.text for ex in ds.splits["test"]] == ["ok"]
    assert ds.skipped == {"bad_columns": 2, "bad_label": 1}


def test_empty_ids_and_missing_files(tmp_path):
    data = write_release(tmp_path, {"train.tsv": "ok\t\tc1\n"})
    with pytest.raises(DataError, match=r"train.tsv line 1: label '' is not one of"):
        load(str(data))
    (data / "dev.tsv").unlink()
    with pytest.raises(DataError, match="dev.tsv"):
        load(str(data), on_bad_row="skip")
    with pytest.raises(DataError, match=r"emotions.txt"):
        load(str(tmp_path / "nowhere"))
