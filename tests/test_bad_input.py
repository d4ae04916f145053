"""Bad input: each kind fails before any process group or model, with a message naming what is wrong."""

import json

import pytest
import torch
import yaml
from conftest import REPO, write_config

from emorec.cli import main


def fails(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("emorec: error: ")
    assert not torch.distributed.is_initialized(), "the error came after a process group was made"
    return err


@pytest.fixture
def cfg(tmp_path, fixtures_dir):
    return write_config(tmp_path / "cfg.yaml", fixtures_dir, "meld", "lora", output=str(tmp_path / "out"))


def test_unknown_config_key_names_key_and_allowed(capsys, cfg):
    err = fails(capsys, "train", str(cfg), "train.learning_rate=1e-4")
    assert "unknown key 'train.learning_rate'" in err and "lr" in err and "max_steps" in err


def test_unknown_key_in_yaml_file(capsys, tmp_path, fixtures_dir):
    path = write_config(tmp_path / "c.yaml", fixtures_dir, "meld", "lora", model={"nmae": "x"})
    assert "unknown key 'model.nmae'" in fails(capsys, "train", str(path))


def test_wrong_type_names_key_and_value(capsys, cfg):
    err = fails(capsys, "train", str(cfg), "train.max_steps=many")
    assert "train.max_steps" in err and "'many'" in err


def test_missing_required_key(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "meld"}}))
    assert "missing required key 'data.path'" in fails(capsys, "train", str(path))


def test_override_without_equals(capsys, cfg):
    assert "not of the form key=value" in fails(capsys, "config", str(cfg), "train.lr")


def test_missing_config_file(capsys, tmp_path):
    assert "config file not found" in fails(capsys, "train", str(tmp_path / "nope.yaml"))


def test_config_not_a_mapping(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    assert "expected a mapping" in fails(capsys, "train", str(path))


def test_unknown_method_lists_choices(capsys, cfg):
    err = fails(capsys, "train", str(cfg), "method.name=adapterz")
    assert "method.name" in err and "'lora' or 'ptuning'" in err


def test_unknown_dataset_lists_known(capsys, cfg):
    err = fails(capsys, "train", str(cfg), "data.dataset=imdb")
    assert "unknown dataset 'imdb'" in err and "meld" in err and "goemotions" in err


def test_missing_dataset_path_names_expected_file(capsys, cfg, tmp_path):
    err = fails(capsys, "train", str(cfg), f"data.path={tmp_path / 'empty'}")
    assert str(tmp_path / "empty") in err and "train_sent_emo.csv" in err


def test_missing_deepspeed_config(capsys, cfg):
    assert "DeepSpeed config not found: configs/deepspeed/zero9.json" in fails(
        capsys, "train", str(cfg), "train.deepspeed=configs/deepspeed/zero9.json")


def test_invalid_deepspeed_json_names_line(capsys, cfg, tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text('{\n  "train_batch_size": "auto",\n  oops\n}')
    err = fails(capsys, "train", str(cfg), f"train.deepspeed={bad}")
    assert str(bad) in err and "line 3" in err


def test_deepspeed_auto_that_cannot_be_filled(capsys, cfg, tmp_path):
    ds = json.loads((REPO / "configs/deepspeed/zero2.json").read_text())
    ds["zero_optimization"]["reduce_bucket_size"] = "auto"
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds))
    assert "zero_optimization.reduce_bucket_size" in fails(capsys, "train", str(cfg), f"train.deepspeed={path}")


def test_unknown_label_in_data_row_names_file_line_and_labels(capsys, tmp_path, fixtures_dir):
    import shutil

    data = tmp_path / "meld"
    shutil.copytree(fixtures_dir / "meld", data)
    csv = data / "dev_sent_emo.csv"
    lines = csv.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1].replace(",neutral,", ",joyful,").replace(",joy,", ",joyful,").replace(",anger,", ",joyful,") \
        .replace(",sadness,", ",joyful,").replace(",fear,", ",joyful,").replace(",surprise,", ",joyful,") \
        .replace(",disgust,", ",joyful,")
    csv.write_text("".join(lines), encoding="utf-8")
    cfg = write_config(tmp_path / "c.yaml", fixtures_dir, "meld", "lora", data={"path": str(data)})
    err = fails(capsys, "train", str(cfg))
    assert "dev_sent_emo.csv line 2" in err and "'joyful'" in err and "neutral" in err


def test_dialogue_with_mismatched_label_count(capsys, tmp_path):
    root = tmp_path / "ijcnlp_dailydialog"
    for split in ("train", "validation", "test"):
        (root / split).mkdir(parents=True)
        (root / split / f"dialogues_{split}.txt").write_text("Hi there . __eou__ Hello ! __eou__\n")
        (root / split / f"dialogues_emotion_{split}.txt").write_text("0 4 0\n" if split == "validation" else "0 4\n")
    err = fails(capsys, "data", "inspect", "--dataset", "dailydialog", "--path", str(root))
    assert "dialogues_emotion_validation.txt" in err and "line 1" in err


def test_label_missing_from_custom_label_set(capsys, tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nI am happy,joy\nso cross,anger\n")
    (tmp_path / "test.csv").write_text("text,label\nwhat a day,elation\n")
    err = fails(capsys, "data", "inspect", "--dataset", "custom", "--path", str(tmp_path),
                "--option", "files={train: train.csv, test: test.csv}", "--option", "labels=[joy, anger]")
    assert "test.csv" in err and "line 2" in err and "'elation'" in err and "joy" in err


def test_resume_from_unknown_checkpoint_tag(capsys, cfg):
    err = fails(capsys, "train", str(cfg), "resume=step-0000100")
    assert "resume='step-0000100'" in err and "complete ones: none" in err


def test_chatglm_v1_config_is_refused_naming_the_key(capsys, cfg, tmp_path):
    model = tmp_path / "chatglm-6b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "chatglm", "position_encoding_2d": True}))
    err = fails(capsys, "train", str(cfg), f"model.name={model}")
    assert "config.json" in err and "'position_encoding_2d'" in err and "ChatGLM-6B (v1)" in err


def test_predict_on_a_directory_that_is_not_a_run(capsys, tmp_path):
    err = fails(capsys, "predict", str(tmp_path), "--text", "hello")
    assert "config.json" in err and "emorec train" in err


def test_bad_row_policy_value(capsys, cfg):
    assert "data.on_bad_row" in fails(capsys, "train", str(cfg), "data.on_bad_row=ignore")


def test_errors_leave_saved_checkpoints_untouched(capsys, cfg, tmp_path):
    ckpt = tmp_path / "out" / "checkpoints" / "step-0000002"
    ckpt.mkdir(parents=True)
    (ckpt / "MANIFEST.json").write_text("{}")
    fails(capsys, "train", str(cfg), "train.max_steps=zero")
    assert (ckpt / "MANIFEST.json").read_text() == "{}"
