"""Silent wrong data, lost work and unexplained errors (issue 13, classes 2, 3 and 6): each case is now a one-line
error naming the file (and line) or key and what was expected, never a guess."""

import shutil
from pathlib import Path

import pytest
from conftest import REPO, write_config

from emorec.cli import main
from emorec.config import load_config
from emorec.data import load_dataset
from emorec.errors import ConfigError, DataError
from emorec.launch.sweep_config import load_sweep


def fails(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("emorec: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def usage_error(capsys, *argv) -> str:
    """argparse refuses the arguments: exit 2 with a usage line, before any command runs."""
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def cfg(tmp_path, fixtures_dir):
    return write_config(tmp_path / "cfg.yaml", fixtures_dir, "meld", "lora", output=str(tmp_path / "out"))


def custom(tmp_path: Path, csv_text: str, labels: str = "[happy, sad, neutral]", name: str = "t.csv") -> list[str]:
    """`data inspect` arguments for a custom dataset of one CSV file used as train and test."""
    (tmp_path / name).write_text(csv_text)
    return ["data", "inspect", "--dataset", "custom", "--path", str(tmp_path),
            "--option", f"files={{train: {name}, test: {name}}}", "--option", f"labels={labels}"]


# --- 2. silent wrong data ---------------------------------------------------------------------------------------

def test_yaml_duplicate_top_level_key_names_file_key_and_both_lines(capsys, tmp_path, fixtures_dir):
    path = tmp_path / "dup.yaml"
    path.write_text(f"data:\n  dataset: meld\n  path: {fixtures_dir / 'meld'}\ntrain:\n  max_steps: 5\n"
                    "model:\n  name: tiny-glm\ntrain:\n  lr: 0.1\n")
    err = fails(capsys, "config", str(path))
    assert str(path) in err and "key 'train' appears twice (lines 4 and 8)" in err


def test_yaml_duplicate_nested_key_and_in_sweep_configs(capsys, tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text("data:\n  dataset: meld\n  path: x\n  path: y\n")
    assert "key 'data.path' appears twice (lines 3 and 4)" in fails(capsys, "config", str(path))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("datasets: [meld]\nset:\n  train.max_steps: 5\n  train.max_steps: 50\n")
    with pytest.raises(ConfigError, match=r"sweep.yaml: key 'set.train.max_steps' appears twice \(lines 3 and 4\)"):
        load_sweep(str(sweep))
    # YAML's own merge key is an override by design, not a duplicate
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &b {dataset: meld, path: x}\ndata:\n  <<: *b\n  path: y\n")
    with pytest.raises(ConfigError, match="unknown key 'base'"):
        load_config(str(merged))


def test_custom_csv_row_with_an_extra_field_names_file_and_line(capsys, tmp_path):
    args = custom(tmp_path, "text,label\nhi,happy\nwell, that is sad,sad\n")
    err = fails(capsys, *args)
    assert "t.csv line 3: 3 fields, but the header has 2 (text, label)" in err and "quoted" in err


def test_custom_csv_header_naming_a_column_twice_names_the_column(capsys, tmp_path):
    err = fails(capsys, *custom(tmp_path, "text,label,label\nhi,happy,neutral\nugh,sad,neutral\n"))
    assert "t.csv line 1: column 'label' appears twice in the header (columns 2 and 3)" in err
    # even with rows skipped on request: the header is no row
    err = fails(capsys, *custom(tmp_path, "text,label,label\nhi,happy,neutral\n"), "--on-bad-row", "skip")
    assert "column 'label' appears twice" in err


def test_custom_short_row_and_jsonl_duplicate_key_are_bad_rows(tmp_path):
    (tmp_path / "t.csv").write_text("text,label,who\nhi,happy\nho,sad,A\n")
    options = {"files": {"train": "t.csv", "test": "t.csv"}, "labels": ["happy", "sad"], "speaker_column": "who"}
    with pytest.raises(DataError, match=r"t.csv line 2: 2 fields, but the header has 3"):
        load_dataset("custom", str(tmp_path), options=options)
    ds = load_dataset("custom", str(tmp_path), options=options, on_bad_row="skip")
    assert ds.skipped == {"wrong_field_count": 2} and [e.text for e in ds.splits["test"]] == ["ho"]
    (tmp_path / "t.jsonl").write_text('{"text": "hi", "label": "happy", "label": "sad"}\n')
    with pytest.raises(DataError, match=r"t.jsonl line 1: key 'label' appears twice"):
        load_dataset("custom", str(tmp_path), options={"files": {"train": "t.jsonl", "test": "t.jsonl"},
                                                       "labels": ["happy", "sad"]})
    (tmp_path / "t.jsonl").write_text('{"text": ["hi", "ho"], "label": "happy"}\n')
    with pytest.raises(DataError, match=r"t.jsonl line 1: text is a list \(\['hi', 'ho'\]\) \(expected a string"):
        load_dataset("custom", str(tmp_path), options={"files": {"train": "t.jsonl", "test": "t.jsonl"},
                                                       "labels": ["happy", "sad"]})


def test_custom_mixed_or_repeated_turn_order_is_not_guessed(tmp_path):
    files = {"train": "d.csv", "test": "d.csv"}
    options = {"files": files, "labels": ["happy", "sad"], "dialogue_column": "d", "order_column": "o"}
    (tmp_path / "d.csv").write_text("d,o,text,label\nx,10,ten,sad\nx,2,two,happy\nx,n/a,what,sad\n")
    with pytest.raises(DataError, match=r"d.csv: column 'o' mixes numbers \(line 2: '10'\) and other values "
                                        r"\(line 4: 'n/a'\)"):
        load_dataset("custom", str(tmp_path), options=options)
    (tmp_path / "d.csv").write_text("d,o,text,label\nx,1,one,sad\nx,nan,two,happy\n")
    with pytest.raises(DataError, match=r"mixes numbers \(line 2: '1'\) and other values \(line 3: 'nan'\)"):
        load_dataset("custom", str(tmp_path), options=options)
    (tmp_path / "d.csv").write_text("d,o,text,label\nx,1,one,sad\nx,2,two,happy\nx,2,again,sad\n")
    with pytest.raises(DataError, match=r"d.csv line 4: dialogue 'x' already has a turn with o '2' \(line 3\)"):
        load_dataset("custom", str(tmp_path), options=options)


def test_carer_csv_extra_field_and_meld_duplicate_column(tmp_path, fixtures_dir):
    carer = tmp_path / "carer"
    carer.mkdir()
    for split in ("train", "validation", "test"):
        (carer / f"{split}.csv").write_text("text,label\ni feel fine,1\n")
    (carer / "test.csv").write_text("text,label\ni feel fine,1\nwell, i am sad,0\n")
    with pytest.raises(DataError, match=r"test.csv line 3: 3 fields, but the header has 2"):
        load_dataset("carer", str(carer))
    meld = tmp_path / "meld"
    shutil.copytree(fixtures_dir / "meld", meld)
    dev = meld / "dev_sent_emo.csv"
    lines = dev.read_text(encoding="utf-8").splitlines(keepends=True)
    dev.write_text(lines[0].replace("Sentiment", "Emotion"), encoding="utf-8")
    with pytest.raises(DataError, match=r"dev_sent_emo.csv line 1: column 'Emotion' appears twice"):
        load_dataset("meld", str(meld))


def test_emorynlp_duplicate_json_key_names_file_and_key(tmp_path, fixtures_dir):
    path = tmp_path / "emorynlp"
    shutil.copytree(fixtures_dir / "emorynlp", path)
    test = path / "emotion-detection-tst.json"
    test.write_text(test.read_text(encoding="utf-8").replace('"emotion": ', '"emotion": "Mad", "emotion": ', 1),
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"emotion-detection-tst.json: key 'emotion' appears twice"):
        load_dataset("emorynlp", str(path), on_bad_row="skip")


@pytest.fixture
def goemotions(tmp_path, fixtures_dir) -> Path:
    path = tmp_path / "goemotions"
    shutil.copytree(fixtures_dir / "goemotions", path)
    return path / "data"


@pytest.mark.parametrize("drop", [27, 16], ids=["last line", "middle line"])
def test_goemotions_labels_file_one_line_short_is_no_skippable_row(goemotions, drop):
    emotions = goemotions / "emotions.txt"
    lines = emotions.read_text().splitlines()
    emotions.write_text("\n".join(lines[:drop] + lines[drop + 1:]) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset("goemotions", str(goemotions), on_bad_row="skip")
    msg = str(e.value)
    assert "emotions.txt" in msg and f"lacks {lines[drop]}" in msg and "28" in msg and "line positions" in msg


def test_goemotions_reordered_or_gapped_labels_file(goemotions):
    emotions = goemotions / "emotions.txt"
    lines = emotions.read_text().splitlines()
    emotions.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"emotions.txt: .*another order; line 1 is 'amusement' where the release "
                                        r"has 'admiration'"):
        load_dataset("goemotions", str(goemotions), on_bad_row="skip")
    emotions.write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n\n")
    with pytest.raises(DataError, match=r"emotions.txt line 6: blank line inside the label list"):
        load_dataset("goemotions", str(goemotions), on_bad_row="skip")
    emotions.write_text("\n".join(lines) + "\n\n")  # trailing blank lines are harmless
    assert len(load_dataset("goemotions", str(goemotions)).spec.labels) == 28


@pytest.fixture
def iemocap(tmp_path, fixtures_dir) -> Path:
    path = tmp_path / "iemocap"
    shutil.copytree(fixtures_dir / "iemocap", path)
    return path / "IEMOCAP_full_release"


def evaluation_file(release: Path) -> Path:
    return sorted((release / "Session2" / "dialog" / "EmoEvaluation").glob("Ses*.txt"))[0]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_iemocap_evaluation_file_in_another_encoding_names_file_and_encoding(iemocap, encoding):
    file = evaluation_file(iemocap)
    file.write_bytes(file.read_bytes().decode("latin-1").encode(encoding))
    with pytest.raises(DataError) as e:
        load_dataset("iemocap", str(iemocap), on_bad_row="skip")
    msg = str(e.value)
    assert file.name in msg and "ASCII (latin-1)" in msg and ("UTF-16" in msg or "UTF-32" in msg or "NUL" in msg)


def test_iemocap_evaluation_without_labels_or_with_a_turn_twice(iemocap):
    file = evaluation_file(iemocap)
    text = file.read_text(encoding="latin-1")
    file.write_text("".join(line for line in text.splitlines(keepends=True) if not line.startswith("[")),
                    encoding="latin-1")
    with pytest.raises(DataError, match=rf"{file.name}: no evaluation lines"):
        load_dataset("iemocap", str(iemocap), on_bad_row="skip")
    first = next(line for line in text.splitlines(keepends=True) if line.startswith("["))
    file.write_text(text + first, encoding="latin-1")
    with pytest.raises(DataError, match=rf"{file.name} line \d+: turn \S+ is evaluated twice"):
        load_dataset("iemocap", str(iemocap))
    transcription = iemocap / "Session3" / "dialog" / "transcriptions"
    sorted(transcription.glob("Ses*.txt"))[0].write_bytes("x".encode("utf-16"))
    file.write_text(text, encoding="latin-1")
    with pytest.raises(DataError, match=r"transcriptions/Ses\S+\.txt: is UTF-16 text"):
        load_dataset("iemocap", str(iemocap), on_bad_row="skip")


def test_dailydialog_utf16_file_is_refused_not_skipped_row_by_row(tmp_path, fixtures_dir):
    path = tmp_path / "dd"
    shutil.copytree(fixtures_dir / "dailydialog", path)
    emotion = next(path.rglob("dialogues_emotion_test.txt"))
    emotion.write_bytes(emotion.read_text(encoding="utf-8").encode("utf-16-le"))  # no byte-order mark
    with pytest.raises(DataError, match=r"dialogues_emotion_test.txt: contains NUL bytes \(from byte 1\)"):
        load_dataset("dailydialog", str(path), on_bad_row="skip")


@pytest.mark.parametrize("limit", ["-70", "0", "two"])
def test_eval_limit_must_be_a_positive_integer(capsys, tmp_path, limit):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval-test.json").write_text('{"n": 1000}')
    err = usage_error(capsys, "eval", str(run), "--limit", limit)
    assert "argument --limit" in err and "positive integer" in err
    assert (run / "eval-test.json").read_text() == '{"n": 1000}'


def test_bool_for_a_number_field_is_refused(capsys, cfg, tmp_path):
    err = fails(capsys, "config", str(cfg), "seed=true")
    assert "key 'seed': expected an integer, not a boolean" in err and "(got True)" in err
    path = write_config(tmp_path / "b.yaml", Path("x"), "meld", "lora", eval={"multi_label_threshold": True},
                        train={"max_steps": "yes"})
    path.write_text(path.read_text().replace("max_steps: 'yes'", "max_steps: yes"))
    err = fails(capsys, "config", str(path))
    assert "key 'train.max_steps': expected an integer, not a boolean" in err
    assert "key 'eval.multi_label_threshold': expected a number, not a boolean" in err
    # booleans stay booleans, numbers numbers
    cfg_ok = load_config(str(cfg), ["train.packing=true", "seed=7", "train.lr=1e-4", "ray.max_failures=-1"])
    assert cfg_ok.train.packing is True and cfg_ok.seed == 7 and cfg_ok.lr == 1e-4


def test_duplicated_override_key_names_the_key(capsys, cfg):
    err = fails(capsys, "config", str(cfg), "train.lr=1", "train.lr=2")
    assert "override key 'train.lr' is given twice ('train.lr=1' and 'train.lr=2')" in err
    err = fails(capsys, "config", str(cfg), "train.lr=1", "train={max_steps: 3}")
    assert "replaces the whole section 'train'" in err and "'train.lr=1'" in err
    with pytest.raises(ConfigError, match="override key 'max_concurrent' is given twice"):
        load_sweep(str(REPO / "configs" / "quickstart.yaml"), ["max_concurrent=1", "max_concurrent=3"])


def custom_config(tmp_path: Path, labels: str) -> Path:
    (tmp_path / "t.csv").write_text("text,label\nyes please,yes\nno way,no\n")
    path = tmp_path / "custom.yaml"
    path.write_text(f"data:\n  dataset: custom\n  path: {tmp_path}\n  options:\n"
                    f"    files: {{train: t.csv, test: t.csv}}\n    labels: {labels}\n")
    return path


def test_yes_no_in_a_label_list_names_key_and_yaml_value(capsys, tmp_path):
    err = fails(capsys, "config", str(custom_config(tmp_path, "[yes, no]")))
    assert "custom.yaml: line 6: data.options.labels[0] is yes, which YAML reads as the boolean True" in err
    assert "quote it ('yes')" in err and "(True, False)" not in err
    err = fails(capsys, "config", str(custom_config(tmp_path, "['yes', 'no']")), "data.options.labels=[maybe, off]")
    assert "data.options.labels[1] is off, which YAML reads as the boolean False" in err
    assert load_config(str(custom_config(tmp_path, "['yes', 'no']"))).data.options["labels"] == ["yes", "no"]
    path = custom_config(tmp_path, "['yes', 'no']")
    path.write_text(path.read_text() + "    neutral: no\n")
    assert "data.options.neutral is no, which YAML reads as the boolean False" in fails(capsys, "config", str(path))


def test_label_names_that_yaml_or_python_would_change(capsys, tmp_path):
    err = fails(capsys, "config", str(custom_config(tmp_path, "[happy, 010]")))
    assert "data.options.labels[1] is 010, which YAML reads as the number 8" in err
    assert load_config(str(custom_config(tmp_path, "[0, 1]"))).data.options["labels"] == [0, 1]  # mean "0", "1"
    err = fails(capsys, *custom(tmp_path, "text,label\nhi,yes\n", labels="[yes, no]"))
    assert "labels[0] is yes, which YAML reads as the boolean True" in err
    (tmp_path / "t.csv").write_text("text,label\nhi,happy\n")
    for labels, message in [([True, False], r"item 1 is the boolean True, not a label name.*quote it"),
                            (["a", None], r"item 2 is null"), ([" joy", "sad"], r"item 1 ' joy' .* spaces"),
                            (["a;b", "c"], r"item 1 'a;b' contains the label_separator ';'")]:
        with pytest.raises(DataError, match=message):
            load_dataset("custom", str(tmp_path), options={"files": {"train": "t.csv", "test": "t.csv"},
                                                           "labels": labels, "multi_label": True,
                                                           "label_separator": ";"})
    with pytest.raises(DataError, match=r"option multi_label must be true or false; got a str \('false'\)"):
        load_dataset("custom", str(tmp_path), options={"files": {"train": "t.csv", "test": "t.csv"},
                                                       "labels": ["happy"], "multi_label": "false"})


# --- 3. lost work -----------------------------------------------------------------------------------------------

def test_data_fixtures_refuses_to_overwrite_existing_files(capsys, tmp_path):
    out = tmp_path / "fx"
    assert main(["data", "fixtures", str(out)]) == 0
    capsys.readouterr()
    mine = out / "meld" / "train_sent_emo.csv"
    mine.write_text("my real data\n")
    err = fails(capsys, "data", "fixtures", str(out))
    assert str(out) in err and "already holds" in err and "--overwrite" in err and "nothing was written" in err
    assert mine.read_text() == "my real data\n"
    assert main(["data", "fixtures", str(out), "--overwrite"]) == 0
    assert mine.read_text() != "my real data\n" and "meld" in capsys.readouterr().out
    from emorec.data.fixtures.__main__ import main as module_main

    mine.write_text("my real data\n")
    with pytest.raises(SystemExit) as e:
        module_main([str(out)])
    assert e.value.code == 2 and "already holds" in capsys.readouterr().err
    assert mine.read_text() == "my real data\n"


def test_data_fixtures_next_to_other_files_and_into_a_file(capsys, tmp_path):
    out = tmp_path / "data"
    (out / "MELD.Raw").mkdir(parents=True)
    (out / "MELD.Raw" / "train_sent_emo.csv").write_text("mine\n")
    assert main(["data", "fixtures", str(out)]) == 0  # no file it writes is there: fine
    assert (out / "MELD.Raw" / "train_sent_emo.csv").read_text() == "mine\n"
    assert (out / "meld" / "train_sent_emo.csv").exists()
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in fails(capsys, "data", "fixtures", str(tmp_path / "file"))
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "meld").write_text("a file where a directory goes")
    assert "is a file where the fixtures need a directory" in fails(capsys, "data", "fixtures", str(blocked))


# --- 6. errors that explain nothing -----------------------------------------------------------------------------

@pytest.mark.parametrize("encoding, expected", [
    ("utf-16", "is UTF-16 text (it starts with a UTF-16 byte-order mark); config files must be UTF-8"),
    ("utf-16-le", "contains NUL bytes"),
    ("latin-1", "not UTF-8 text (invalid continuation byte at byte"),
])
def test_config_file_not_in_utf8_names_file_and_utf8(capsys, cfg, encoding, expected):
    cfg.write_bytes((cfg.read_text() + "name: café\n").encode(encoding))
    err = fails(capsys, "train", str(cfg))
    assert str(cfg) in err and expected in err and "UTF-8" in err


def test_config_path_that_is_a_directory(capsys, tmp_path):
    assert f"{tmp_path}: is a directory (expected a YAML config file)" in fails(capsys, "config", str(tmp_path))


def test_predict_dialogue_invalid_json_names_file_and_position(capsys, tmp_path):
    dialogue = tmp_path / "d.json"
    dialogue.write_text('[\n  {"speaker": "A", "text": "hi"},\n  {"speaker": "B", "text": "bye",}\n]\n')
    err = fails(capsys, "predict", str(tmp_path / "run"), "--dialogue", str(dialogue))
    assert f"{dialogue} line 3: not valid JSON" in err and "column 34" in err


@pytest.mark.parametrize("content, expected", [
    (None, "not found (expected the --dialogue JSON file"),
    ('{"text": "hi"}', "not a list"),
    ("[]", "an empty list"),
    ('[{"speaker": "A", "txt": "hi"}]', 'turn 1 has no non-empty string "text"'),
    ('[{"text": "hi", "speeker": "A"}]', "turn 1 has unknown key(s) 'speeker'"),
    ('[{"text": "a", "text": "b"}]', "key 'text' appears twice"),
])
def test_predict_dialogue_of_the_wrong_shape(capsys, tmp_path, content, expected):
    dialogue = tmp_path / "d.json"
    if content is not None:
        dialogue.write_text(content)
    err = fails(capsys, "predict", str(tmp_path / "run"), "--dialogue", str(dialogue))
    assert str(dialogue) in err and expected in err
