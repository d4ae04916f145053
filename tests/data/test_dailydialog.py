from collections import Counter
from pathlib import Path

import pytest

from emorec.data import Turn, load_dataset
from emorec.data.dailydialog import LABELS, load
from emorec.data.fixtures import dailydialog as fixture
from emorec.errors import DataError


def write_release(root: Path, splits: dict[str, tuple[str, str]]) -> Path:
    base = root / "ijcnlp_dailydialog"
    for split in ("train", "validation", "test"):
        text, emo = splits.get(split, ("Hi . __eou__\n", "0\n"))
        (base / split).mkdir(parents=True)
        (base / split / f"dialogues_{split}.txt").write_text(text)
        (base / split / f"dialogues_emotion_{split}.txt").write_text(emo)
    return base


def test_fixture_counts_match_an_independent_parse(tmp_path):
    path = fixture.write(str(tmp_path), seed=3)
    ds = load(path)
    for split in ("train", "validation", "test"):
        text = (Path(path) / split / f"dialogues_{split}.txt").read_text().splitlines()
        emo = (Path(path) / split / f"dialogues_emotion_{split}.txt").read_text().splitlines()
        assert [line.count("__eou__") for line in text] == [len(line.split()) for line in emo]
        expected = Counter(LABELS[int(i)] for line in emo for i in line.split())
        assert Counter(ex.labels[0] for ex in ds.splits[split]) == expected
        assert len(ds.splits[split]) == sum(expected.values())
    assert 150 <= len(ds.splits["train"]) <= 250
    assert 30 <= len(ds.splits["validation"]) <= 60
    assert 60 <= len(ds.splits["test"]) <= 100
    train = Counter(ex.labels[0] for ex in ds.splits["train"])
    assert train["no emotion"] < 0.3 * len(ds.splits["train"])
    assert not ds.skipped


def test_fixture_mimics_release_spacing_and_is_deterministic(tmp_path):
    a = Path(fixture.write(str(tmp_path / "a"), seed=1)) / "train" / "dialogues_train.txt"
    b = Path(fixture.write(str(tmp_path / "b"), seed=1)) / "train" / "dialogues_train.txt"
    c = Path(fixture.write(str(tmp_path / "c"), seed=2)) / "train" / "dialogues_train.txt"
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    for line in a.read_text().splitlines():
        assert line.endswith(" __eou__") and " __eou__ " in line + " "
        assert line.split(" __eou__")[0][-2] == " "  # 'word .' as in the release


def test_hand_written_release_exact(tmp_path):
    base = write_release(tmp_path, {
        "train": ("Hi , Tom . __eou__ Hello ! __eou__\nOh no . __eou__ Sorry __eou__ Fine . __eou__\n",
                  "0 4\n5 0 1 \n"),
    })
    for path in (base, tmp_path):  # the release dir or its parent
        ds = load(str(path))
        train = ds.splits["train"]
        assert [ex.text for ex in train] == ["Hi , Tom .", "Hello !", "Oh no .", "Sorry", "Fine ."]
        assert [ex.labels for ex in train] == [("no emotion",), ("happiness",), ("sadness",), ("no emotion",),
                                               ("anger",)]
        assert [ex.speaker for ex in train] == ["A", "B", "A", "B", "A"]
        assert train[1].context == (Turn("A", "Hi , Tom ."),)
        assert train[4].context == (Turn("A", "Oh no ."), Turn("B", "Sorry"))
        assert train[2].context == ()
        assert len({ex.id for ex in train}) == 5
        assert len(ds.splits["validation"]) == len(ds.splits["test"]) == 1
    assert ds.spec.neutral == "no emotion" and ds.spec.metric == "micro_f1_no_neutral" and ds.spec.dialogue
    assert ds.spec.verbalisers["happiness"] == "happy"


def test_label_count_mismatch_names_both_files_and_line(tmp_path):
    base = write_release(tmp_path, {"train": ("A . __eou__\nB . __eou__ C . __eou__ D . __eou__\n", "0\n0 1\n")})
    with pytest.raises(DataError) as e:
        load(str(base))
    msg = str(e.value)
    assert "dialogues_train.txt line 2" in msg and "dialogues_emotion_train.txt line 2" in msg
    assert "3 utterances" in msg and "2 labels" in msg
    ds = load(str(base), on_bad_row="skip")
    assert [ex.text for ex in ds.splits["train"]] == ["A ."]  # never shifted onto other lines
    assert ds.skipped == {"label_count_mismatch": 1}


def test_out_of_range_and_non_integer_labels(tmp_path):
    base = write_release(tmp_path, {"train": ("A . __eou__\nB . __eou__\nC . __eou__\n", "7\nx\n2\n")})
    with pytest.raises(DataError, match=r"dialogues_emotion_train.txt line 1: label 7 is not one of "
                                        r"0\.\.6 \(no emotion, anger, disgust"):
        load(str(base))
    ds = load(str(base), on_bad_row="skip")
    assert [ex.labels for ex in ds.splits["train"]] == [("disgust",)]
    assert ds.skipped == {"bad_label": 2}


def test_differing_line_counts_are_a_file_error_even_under_skip(tmp_path):
    """A line missing anywhere would shift every later dialogue's labels: never a skippable row."""
    base = write_release(tmp_path, {"test": ("A . __eou__\nB . __eou__\n", "0\n")})
    for policy in ("error", "skip"):
        with pytest.raises(DataError) as e:
            load(str(base), on_bad_row=policy)
        msg = str(e.value)
        assert "dialogues_test.txt line 2" in msg and "dialogues_emotion_test.txt" in msg and "2 vs 1" in msg


def test_missing_release_and_missing_split(tmp_path):
    with pytest.raises(DataError, match="ijcnlp_dailydialog"):
        load(str(tmp_path))
    base = write_release(tmp_path, {})
    (base / "test" / "dialogues_emotion_test.txt").unlink()
    with pytest.raises(DataError, match="dialogues_emotion_test.txt"):
        load(str(base))


def test_unknown_option_and_registry(tmp_path):
    base = write_release(tmp_path, {})
    with pytest.raises(DataError, match="unknown option.*colour.*allowed options: none"):
        load(str(base), colour="red")
    assert len(load_dataset("dailydialog", str(base)).splits["train"]) == 1
