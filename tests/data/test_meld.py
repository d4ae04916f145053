import csv
from collections import Counter
from pathlib import Path

import fsspec
import pytest

from emorec.data import meld
from emorec.data.fixtures import meld as fixture
from emorec.data.schema import Turn
from emorec.errors import DataError

HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
TIMES = '"00:00:01,000","00:00:02,000"'
TRAIN = HEADER + (
    f'1,"Oh, hi.",Alex,joy,positive,0,1,1,1,{TIMES}\n'
    f"2,Hello.,Blair,neutral,neutral,0,0,1,1,{TIMES}\n"
    f'3,"Line one\nline two",Alex,surprise,positive,0,2,1,1,{TIMES}\n'
    f"4,Heâ€™s here.,,anger,negative,1,0,1,2,{TIMES}\n"
    f"5,Really?,Casey,fear,negative,1,1,1,2,{TIMES}\n"
)
SMALL = HEADER + f"1,Fine.,Drew,sadness,negative,3,0,2,1,{TIMES}\n"


def write_csvs(directory: Path, train: str = TRAIN, dev: str = SMALL, test: str = SMALL) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train_sent_emo.csv").write_text(train, encoding="utf-8-sig")
    (directory / "dev_sent_emo.csv").write_text(dev, encoding="utf-8")
    (directory / "test_sent_emo.csv").write_text(test, encoding="utf-8")
    return directory


def test_hand_written_files_give_exact_dialogues_and_context(tmp_path):
    data = meld.load(str(write_csvs(tmp_path)))

    train = data.splits["train"]
    assert [(e.id, e.text, e.labels, e.speaker) for e in train] == [
        ("dia0_utt0", "Hello.", ("neutral",), "Blair"),
        ("dia0_utt1", "Oh, hi.", ("joy",), "Alex"),
        ("dia0_utt2", "Line one\nline two", ("surprise",), "Alex"),
        ("dia1_utt0", "He’s here.", ("anger",), None),
        ("dia1_utt1", "Really?", ("fear",), "Casey"),
    ]
    assert [len(e.context) for e in train] == [0, 1, 2, 0, 1]
    assert train[2].context == (Turn("Blair", "Hello."), Turn("Alex", "Oh, hi."))
    assert train[4].context == (Turn(None, "He’s here."),)
    assert [(e.id, e.labels) for e in data.splits["validation"]] == [("dia3_utt0", ("sadness",))]
    assert len(data.splits["test"]) == 1
    assert data.skipped == Counter()


def test_fix_mojibake_repairs_only_what_round_trips():
    assert meld.fix_mojibake("Heâ€™s â€œhereâ€\x9d") == "He’s “here”"
    assert meld.fix_mojibake("Itâ\x80\x99s") == "It’s"
    assert meld.fix_mojibake("café ’ plain") == "café ’ plain"
    assert meld.fix_mojibake("plain ascii") == "plain ascii"


def test_fixture_split_sizes_and_label_counts_match_the_written_files(tmp_path):
    path = fixture.write(str(tmp_path))
    data = meld.load(path)
    for split, name in meld.FILES.items():
        with open(Path(path) / name, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        assert Counter(e.labels[0] for e in data.splits[split]) == Counter(row["Emotion"] for row in rows)
        assert [e.id for e in data.splits[split]] == [
            f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}" for row in rows
        ]
    assert 150 <= len(data.splits["train"]) <= 250
    assert 30 <= len(data.splits["validation"]) <= 60
    assert 60 <= len(data.splits["test"]) <= 100
    assert set(e.labels[0] for e in data.splits["train"]) == set(meld.SPEC.labels)
    assert data.skipped == Counter()


def test_fixture_quirks_survive_loading(tmp_path):
    train = meld.load(fixture.write(str(tmp_path))).splits["train"]
    texts = [e.text for e in train]
    assert any(t.startswith("Wait, ") for t in texts)
    assert any("\nRight." in t for t in texts)
    assert any("It’s true." in t for t in texts)
    assert not any("â€" in t for t in texts)


def test_fixture_dialogues_keep_order_speakers_and_context(tmp_path):
    path = fixture.write(str(tmp_path), seed=5)
    data = meld.load(path)
    with open(Path(path) / "test_sent_emo.csv", encoding="utf-8", newline="") as f:
        rows = {f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}": r for r in csv.DictReader(f)}
    test = data.splits["test"]
    for example in test:
        assert example.speaker == rows[example.id]["Speaker"]
        utterance_id = int(rows[example.id]["Utterance_ID"])
        dialogue = example.id.split("_")[0]
        assert example.context == tuple(
            Turn(rows[f"{dialogue}_utt{u}"]["Speaker"], rows[f"{dialogue}_utt{u}"]["Utterance"])
            for u in range(utterance_id)
        )


def test_fixture_is_deterministic_per_seed(tmp_path):
    a = meld.load(fixture.write(str(tmp_path / "a"), seed=3)).splits
    b = meld.load(fixture.write(str(tmp_path / "b"), seed=3)).splits
    c = meld.load(fixture.write(str(tmp_path / "c"), seed=4)).splits
    assert a == b != c


def test_loads_from_a_url(tmp_path):
    local = fixture.write(str(tmp_path))
    fs = fsspec.filesystem("memory")
    for name in meld.FILES.values():
        fs.pipe(f"/meld-url-test/{name}", (Path(local) / name).read_bytes())
    try:
        assert meld.load("memory://meld-url-test").splits == meld.load(local).splits
    finally:
        fs.rm("/meld-url-test", recursive=True)


BAD_ROWS = [
    ("unknown emotion", f"6,Wow.,Alex,joyful,positive,1,2,1,2,{TIMES}",
     "emotion 'joyful' is not one of neutral, surprise, fear, sadness, joy, disgust, anger"),
    ("non-integer id", f"6,Wow.,Alex,joy,positive,1,two,1,2,{TIMES}", "Utterance_ID 'two' is not an integer"),
    ("empty utterance", f'6,"",Alex,joy,positive,1,2,1,2,{TIMES}', "Utterance is empty; expected the utterance text"),
    ("wrong field count", "6,Wow.,Alex,joy,positive,1,2", "expected 11 fields (Sr No.,Utterance,"),
    ("duplicate id", f"6,Wow.,Alex,joy,positive,1,1,1,2,{TIMES}", "Dialogue_ID 1 Utterance_ID 1 appears twice"),
]


@pytest.mark.parametrize("reason, row, expected", BAD_ROWS)
def test_bad_row_names_file_line_and_expectation_or_is_counted(tmp_path, reason, row, expected):
    path = str(write_csvs(tmp_path, train=TRAIN + row + "\n"))
    with pytest.raises(DataError) as error:
        meld.load(path)
    assert "train_sent_emo.csv line 8: " in str(error.value)
    assert expected in str(error.value)

    data = meld.load(path, on_bad_row="skip")
    assert data.skipped == Counter({reason: 1})
    assert len(data.splits["train"]) == 5


def test_skipped_unknown_emotion_keeps_the_turn_in_later_context(tmp_path):
    train = TRAIN.replace(",fear,", ",joyful,") + f"6,Sure.,Alex,joy,positive,1,2,1,2,{TIMES}\n"
    data = meld.load(str(write_csvs(tmp_path, train=train)), on_bad_row="skip")
    assert data.skipped == Counter({"unknown emotion": 1})
    assert [e.id for e in data.splits["train"]][-2:] == ["dia1_utt0", "dia1_utt2"]
    assert data.splits["train"][-1].context[-1] == Turn("Casey", "Really?")


def test_missing_column_or_file_names_what_was_expected(tmp_path):
    header = HEADER.replace("Emotion,", "")
    with pytest.raises(DataError, match=r"dev_sent_emo\.csv line 1: header lacks column 'Emotion'; expected Sr No\."):
        meld.load(str(write_csvs(tmp_path / "a", dev=header)))
    with pytest.raises(DataError, match=r"test_sent_emo\.csv line 1: file is empty"):
        meld.load(str(write_csvs(tmp_path / "b", test="")))
    (tmp_path / "b" / "dev_sent_emo.csv").unlink()
    with pytest.raises(DataError, match=r"expected dev_sent_emo\.csv in .*/b"):
        meld.load(str(tmp_path / "b"))


def test_non_utf8_file_and_unknown_option_are_refused(tmp_path):
    path = write_csvs(tmp_path)
    with pytest.raises(DataError, match="unknown option 'validation_share' for meld; allowed: none"):
        meld.load(str(path), validation_share=0.1)
    (path / "test_sent_emo.csv").write_bytes(SMALL.replace("Fine.", "Caf\xe9.").encode("latin-1"))
    with pytest.raises(DataError, match=r"test_sent_emo\.csv: is not UTF-8 text"):
        meld.load(str(path))
