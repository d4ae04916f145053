"""Hostile outputs and checkpoints: paths out of a manifest, secrets in configs, another run's folder, corrupt
manifests and shards, bad storage URLs, a cut-short adapter, a missing local model. Each fails in one clear line, in
preflight (before any process group or model) where no weights are needed; resume=auto falls back past bad checkpoints.
"""

import hashlib
import json
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import torch
from conftest import emorec, write_config

from emorec.cli import main

TRAIN = {"max_steps": 6, "save_every": 2, "micro_batch_size": 2, "grad_accum": 1}
PROXY_PASSWORD = "PASS-emorec-q7Zt"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
STORAGE = {"config_kwargs": {"proxies": {"https": f"http://user:{PROXY_PASSWORD}@proxy.example:3128"}},
           "secret": AWS_SECRET}
TAGS = ["step-0000002", "step-0000004"]


def _no_model(*_, **__):
    raise AssertionError("a model was loaded (or a process group made) before the error")


@pytest.fixture
def no_model(monkeypatch):
    """Training or inference that gets as far as a process group or a model fails the test."""
    import emorec.eval.inference
    import emorec.train.recipe

    monkeypatch.setattr(emorec.train.recipe, "setup_distributed", _no_model)
    monkeypatch.setattr(emorec.train.recipe, "load_model", _no_model)
    monkeypatch.setattr(emorec.eval.inference, "load_model", _no_model)


def fails(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("emorec: error: ") and "Traceback" not in err, err
    assert not torch.distributed.is_initialized(), "the error came after a process group was made"
    return err


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, fixtures_dir):
    """(config, run folder) of a meld/lora run stopped after step 4 of 6: checkpoints step-2 and step-4."""
    root = tmp_path_factory.mktemp("stopped")
    cfg = write_config(root / "cfg.yaml", fixtures_dir, "meld", "lora", output=str(root / "run"), train=TRAIN,
                       data={"max_eval_samples": 4}, storage_options=STORAGE)
    r = emorec("train", str(cfg), "--no-progress", "train.stop_after=4")
    assert r.returncode == 3, r.stderr[-3000:]
    assert sorted(p.name for p in (root / "run" / "checkpoints").iterdir()) == TAGS
    return cfg, root / "run"


@pytest.fixture
def run(stopped, tmp_path):
    """A private copy of the stopped run, to break."""
    dst = tmp_path / "run"
    shutil.copytree(stopped[1], dst)
    return dst


@pytest.fixture
def cfg(stopped):
    return stopped[0]


@pytest.fixture(scope="module")
def finished(stopped, tmp_path_factory):
    """The stopped run, resumed to the end: adapter exported."""
    dst = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(stopped[1], dst)
    r = emorec("train", str(stopped[0]), "--no-progress", f"output={dst}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step-0000004 at step 4" in r.stderr
    return dst


def manifest_path(run: Path, tag: str) -> Path:
    return run / "checkpoints" / tag / "MANIFEST.json"


def edit_manifest(run: Path, tag: str, edit) -> None:
    path = manifest_path(run, tag)
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- 1. security ------------------------------------------------------------------------------------------------


def test_manifest_entry_outside_the_checkpoint_is_never_fetched(capsys, no_model, run, cfg):
    name = f"emorec-escaped-{uuid.uuid4().hex}"
    payload = run.parent / name  # where checkpoints/<tag>/../../../NAME points, with the right sha256
    payload.write_bytes(b"not part of any checkpoint")
    meta = {"size": payload.stat().st_size, "sha256": hashlib.sha256(payload.read_bytes()).hexdigest()}
    for tag in TAGS:
        edit_manifest(run, tag, lambda m: m["files"].update({f"../../../{name}": meta}))
    err = fails(capsys, "train", cfg, f"output={run}")
    assert f"'../../../{name}'" in err and "MANIFEST.json" in err and "step-0000002" in err
    assert "not a plain relative path" in err
    assert not (Path(tempfile.gettempdir()) / name).exists()  # where the scratch copy's ../../../ would land


def test_manifest_absolute_path_is_refused(capsys, no_model, run, cfg):
    edit_manifest(run, "step-0000004", lambda m: m["files"].update({"/etc/hostname": {"size": 1, "sha256": "0" * 64}}))
    err = fails(capsys, "train", cfg, f"output={run}", "resume=step-0000004")
    assert "'/etc/hostname'" in err and "step-0000004/MANIFEST.json" in err


def test_store_refuses_paths_outside_its_root(tmp_path):
    from emorec.errors import EmorecError
    from emorec.io.storage import open_store

    store = open_store(str(tmp_path / "run"))
    (tmp_path / "outside.json").write_text("{}")
    for rel in ("../outside.json", "a/../../outside.json", "/etc/hostname", "a//b"):
        for op in (store.read_json, store.exists, store.digest):
            with pytest.raises(EmorecError, match="not a plain relative path") as refused:
                op(rel)
            # refused at once, as itself: no retries, no "the storage endpoint may be down"
            assert "attempts" not in str(refused.value) and "endpoint" not in str(refused.value)
    assert store.path("checkpoints", "step-0000001") == f"{store.root}/checkpoints/step-0000001"


def test_config_command_prints_no_storage_secret(capsys, cfg):
    secrets = {"key": "AKIAIOSFODNN7EXAMPLE", "secret": AWS_SECRET, "token": "tok-emorec-3b1e99",
               "client_kwargs.aws_session_token": "FwoGZXIvYXdzEJr-emorec-session", "password": "hunter2-emorec"}
    overrides = [f"storage_options.{k}={v}" for k, v in secrets.items()]
    overrides.append(f"storage_options.config_kwargs.proxies.https=http://user:{PROXY_PASSWORD}@proxy.example:3128")
    assert main(["config", str(cfg), *overrides]) == 0
    out = capsys.readouterr().out
    for value in [*secrets.values(), PROXY_PASSWORD]:
        assert value not in out
    shown = json.loads(out)["storage_options"]
    assert shown["key"] == shown["secret"] == shown["token"] == shown["password"] == "***"
    assert shown["client_kwargs"]["aws_session_token"] == "***"
    assert shown["config_kwargs"]["proxies"]["https"] == "http://user:***@proxy.example:3128"


def test_password_in_a_url_value_is_not_stored_in_config_json(stopped):
    text = (stopped[1] / "config.json").read_text()
    assert PROXY_PASSWORD not in text and AWS_SECRET not in text
    stored = json.loads(text)["storage_options"]
    assert stored["config_kwargs"]["proxies"]["https"] == "http://user:***@proxy.example:3128"
    assert stored["secret"] == "***"


def test_secret_shaped_values_are_redacted_anywhere_but_paths_survive(cfg):
    from emorec.config import build_config, load_config
    from emorec.io.secrets import redacted_config

    c = load_config(str(cfg), [f"storage_options.profile_hint={AWS_SECRET}",
                               "storage_options.endpoint_url=https://minio.example/?X-Amz-Signature=abc123def&x=1",
                               "storage_options.note=AKIAIOSFODNN7EXAMPLE",
                               "output=s3://bucket/MeldLoraRun2024ExperimentNumber1", "name=MELD-LoRA-r8-lr5e-4-s42"])
    out = redacted_config(c)
    so = out["storage_options"]
    assert so["profile_hint"] == "***" and so["note"] == "***"
    assert so["endpoint_url"] == "https://minio.example/?X-Amz-Signature=***&x=1"
    assert (out["output"], out["name"], out["data"]["path"], out["model"]["name"]) == (
        c.output, c.name, c.data.path, c.model.name)
    assert build_config(out).train.pack_tokens == c.train.pack_tokens  # what eval reads back still validates


# ---- 3. lost work ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset,method", [("carer", "lora"), ("meld", "ptuning")])
def test_output_of_another_run_is_refused_and_left_untouched(capsys, no_model, run, tmp_path, fixtures_dir, dataset,
                                                             method):
    other = write_config(tmp_path / "other.yaml", fixtures_dir, dataset, method, output=str(run), train=TRAIN,
                         data={"max_eval_samples": 4})
    before = snapshot(run)
    err = fails(capsys, "train", other)
    assert "holds another run: 'run' (lora on meld, model tiny-glm)" in err
    assert (dataset if dataset != "meld" else method) in err
    assert snapshot(run) == before


def test_same_method_with_other_adapter_shape_is_another_run(capsys, no_model, run, cfg):
    err = fails(capsys, "train", cfg, f"output={run}", "method.lora.r=4")
    assert "method.lora.r 8 (this config: 4)" in err


def test_checkpoints_without_a_run_config_are_not_resumed(capsys, no_model, run, cfg):
    (run / "config.json").unlink()
    err = fails(capsys, "train", cfg, f"output={run}")
    assert "no config.json" in err and "step-0000002, step-0000004" in err


def test_resume_never_over_an_older_run_is_refused(capsys, no_model, run, cfg):
    before = snapshot(run)
    err = fails(capsys, "train", cfg, f"output={run}", "resume=never")
    assert "resume=never" in err and "step-0000002, step-0000004" in err and "'run'" in err
    assert snapshot(run) == before


def _custom_data(root: Path, labels: list[str], rows: list[str]) -> Path:
    root.mkdir()
    for split in ("train", "test"):
        (root / f"{split}.csv").write_text("text,label\n" + "".join(f"{r}\n" for r in rows))
    return root


def test_unavailable_metric_fails_in_preflight(capsys, no_model, tmp_path):
    data = _custom_data(tmp_path / "custom", ["joy", "anger"], ["so happy,joy", "so cross,anger"] * 4)
    c = write_config(tmp_path / "c.yaml", tmp_path, "custom", "lora", output=str(tmp_path / "out"),
                     data={"path": str(data), "options": {"files": {"train": "train.csv", "test": "test.csv"},
                                                          "labels": ["joy", "anger"], "metric": "accuracy"}})
    err = fails(capsys, "train", c)
    assert "metric" in err and "'accuracy'" in err and "weighted_f1" in err
    assert not (tmp_path / "out").exists()


def test_multi_label_data_with_a_single_label_metric_fails_in_preflight(capsys, no_model, tmp_path):
    data = _custom_data(tmp_path / "custom", ["joy", "anger"], ["so happy,joy|anger", "so cross,anger"] * 4)
    c = write_config(tmp_path / "c.yaml", tmp_path, "custom", "lora", output=str(tmp_path / "out"),
                     data={"path": str(data), "options": {"files": {"train": "train.csv", "test": "test.csv"},
                                                          "labels": ["joy", "anger"], "multi_label": True,
                                                          "label_separator": "|", "metric": "weighted_f1"}})
    err = fails(capsys, "train", c)
    assert "'weighted_f1'" in err and "multilabel_macro_f1" in err


# ---- 4. corrupt checkpoints --------------------------------------------------------------------------------------


def _truncated(run):
    text = manifest_path(run, "step-0000004").read_text()
    return text[: len(text) // 2]


BAD_MANIFESTS = {
    "garbage": lambda run: "\x00\x01 this is not json {{{",
    "truncated": _truncated,
    "empty": lambda run: "",
    "list": lambda run: json.dumps([["trainer_state.json", 200]]),
    "no files": lambda run: json.dumps({"tag": "step-0000004", "step": 4, "world_size": 1}),
}


@pytest.mark.parametrize("kind", list(BAD_MANIFESTS))
def test_bad_manifest_is_a_clear_error_before_any_model(capsys, no_model, run, cfg, kind):
    manifest_path(run, "step-0000004").write_text(BAD_MANIFESTS[kind](run))
    err = fails(capsys, "train", cfg, f"output={run}", "resume=step-0000004")
    assert "checkpoints/step-0000004/MANIFEST.json" in err


@pytest.mark.parametrize("shard", ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "mp_rank_00_model_states.pt",
                                   "trainer_state.json"])
def test_manifest_that_omits_a_shard_fails_the_check(capsys, no_model, run, cfg, shard):
    edit_manifest(run, "step-0000004", lambda m: m["files"].pop(shard))
    err = fails(capsys, "train", cfg, f"output={run}", "resume=step-0000004")
    assert "does not list the shards" in err and shard in err and "step-0000004/MANIFEST.json" in err


def test_shard_missing_from_storage_fails_the_check(capsys, no_model, run, cfg):
    (run / "checkpoints" / "step-0000004" / "mp_rank_00_model_states.pt").unlink()
    err = fails(capsys, "train", cfg, f"output={run}", "resume=step-0000004")
    assert "mp_rank_00_model_states.pt, which is missing" in err


def _break_shard(run):
    flip_a_byte(run / "checkpoints" / "step-0000004" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    return "zero_pp_rank_0_mp_rank_00_optim_states.pt does not match its manifest"


def _break_manifest(run):
    manifest_path(run, "step-0000004").write_text('{"files": {"trainer_state.json": ')
    return "not valid JSON"


@pytest.mark.parametrize("breakage", [_break_shard, _break_manifest], ids=["wrong shard hash", "garbage manifest"])
def test_resume_auto_falls_back_to_the_newest_checkpoint_that_verifies(run, cfg, breakage):
    from emorec.dist import SINGLE
    from emorec.io.storage import open_store
    from emorec.train.checkpoint import Checkpointer

    why = breakage(run)
    r = emorec("train", str(cfg), "--no-progress", f"output={run}")
    assert r.returncode == 0, r.stderr[-3000:]
    skipped = [line for line in r.stderr.splitlines() if "skipping checkpoint step-0000004" in line]
    assert skipped and why in skipped[0]
    assert "resumed from step-0000002 at step 2" in r.stderr
    assert [s for s, _ in json.loads((run / "train_curve.json").read_text())] == list(range(1, 7))
    ckpt = Checkpointer(open_store(str(run)), SINGLE, "", 3, zero_stage=2)
    for tag in ("step-0000004", "step-0000006"):  # the run wrote step 4 again, whole
        ckpt.verify(tag)


def test_resume_auto_with_no_checkpoint_that_verifies_stops_and_keeps_them(capsys, no_model, run, cfg):
    flip_a_byte(run / "checkpoints" / "step-0000002" / "mp_rank_00_model_states.pt")
    manifest_path(run, "step-0000004").write_text("[]")
    before = snapshot(run)
    err = fails(capsys, "train", cfg, f"output={run}")
    assert "no checkpoint under" in err and "verifies" in err
    assert "step-0000004 (" in err and "JSON list" in err
    assert "step-0000002 (" in err and "mp_rank_00_model_states.pt does not match" in err
    assert snapshot(run) == before


# ---- 6. errors that explain nothing, or come late ----------------------------------------------------------------


@pytest.mark.parametrize("url", ["s3://", "s3:///runs/x", "gs://"])
def test_output_without_a_bucket_fails_in_preflight(capsys, no_model, cfg, url):
    err = fails(capsys, "train", cfg, f"output={url}")
    assert f"output: {url}: no bucket" in err


def test_unsupported_scheme_is_refused_naming_the_url(capsys, no_model, cfg):
    err = fails(capsys, "train", cfg, "output=ftp://example.com/runs/x")
    assert "ftp://example.com/runs/x" in err and "unsupported storage scheme 'ftp://'" in err


def test_unsupported_scheme_in_eval_names_the_url_without_its_password(capsys, no_model):
    err = fails(capsys, "eval", "ftp://user:hunter2-emorec@example.com/runs/x")
    assert "ftp://user:***@example.com/runs/x" in err and "hunter2-emorec" not in err


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("command", [["eval"], ["predict", "--text", "Oh my God! This is wonderful!"]])
def test_truncated_adapter_is_a_clear_error(capsys, no_model, finished, tmp_path, command):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    _truncate(run / "adapter" / "adapter_model.safetensors")
    err = fails(capsys, command[0], run, *command[1:])
    assert f"{run}/adapter/adapter_model.safetensors" in err and "truncated" in err


def test_truncated_adapter_trained_elsewhere_is_a_clear_error(capsys, no_model, finished, tmp_path, fixtures_dir):
    adapter = tmp_path / "adapter"
    shutil.copytree(finished / "adapter", adapter)
    _truncate(adapter / "adapter_model.safetensors")
    err = fails(capsys, "eval", adapter, "--model", "tiny-glm", "--dataset", "meld", "--data-path",
                fixtures_dir / "meld", "prompt.history=1")
    assert f"{adapter}/adapter_model.safetensors" in err and "truncated" in err


@pytest.mark.parametrize("name", ["/nonexistent/dir", "./models/x", "~/no-such-emorec-model", "models/a/b"])
def test_missing_local_model_is_reported_in_preflight(capsys, no_model, cfg, tmp_path, name):
    err = fails(capsys, "train", cfg, f"output={tmp_path / 'out'}", f"model.name={name}")
    assert f"model.name={name!r}: no such local folder" in err
    assert not (tmp_path / "out").exists()
