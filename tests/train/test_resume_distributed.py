"""Two gloo ranks under torchrun: a run stopped half-way and resumed equals one never stopped."""

import json
import subprocess

import pytest
import torch
from conftest import CHATGLM_REFERENCE as CHATGLM
from conftest import torchrun, write_config
from safetensors.torch import load_file

pytestmark = pytest.mark.distributed


def _train(cfg, *overrides):
    r = torchrun(2, "train", str(cfg), "--no-progress", *overrides)
    if r.returncode not in (0, 1):
        print(r.stderr)
    return r


def _why(r) -> str:
    lines = [x for x in r.stderr.splitlines() if "Warning" not in x and "warnings.warn" not in x]
    return "\n".join(lines[-80:])




@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("method", ["lora", "ptuning"])
def test_resume_after_stop_matches_uninterrupted_run(tmp_path, fixtures_dir, stage, method):
    resume_case(tmp_path, fixtures_dir, stage, method, model=None)


@pytest.mark.parametrize("model, method", [("chatglm2-tiny", "lora"), ("chatglm3-tiny", "ptuning")])
def test_chatglm_checkpoint_trains_resumes_and_predicts(tmp_path, fixtures_dir, model, method, capsys):
    """model.name set to a ChatGLM2/3 checkpoint folder (converted on load on every rank), 2 ranks, ZeRO-2; then
    emorec eval and emorec predict on the run, and on its adapter exported in ChatGLM's own layout. Each family and
    each method once: the conversion does not depend on the method, nor the adapter on the family."""
    from emorec.cli import main

    def emorec(*args):
        rc = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)

    run = resume_case(tmp_path, fixtures_dir, 2, method, model=str(CHATGLM / model))
    r = emorec("eval", str(run), "--limit", "12")
    assert r.returncode == 0, r.stderr[-2000:]
    own = json.loads((run / "eval-test.json").read_text())
    assert own["n"] == 12 and own["value"] == pytest.approx(json.loads((run / "metrics.json").read_text())["value"])
    r = emorec("export", str(run), str(tmp_path / "chatglm-layout"), "--layout", "chatglm")
    assert r.returncode == 0, r.stderr[-2000:]
    r = emorec("eval", str(tmp_path / "chatglm-layout"), "--model", str(CHATGLM / model), "--dataset", "meld",
               "--data-path", str(fixtures_dir / "meld"), "--limit", "12", "prompt.history=1", "prompt.max_length=256")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["values"] == own["values"]
    predictions = []
    for target in ([str(run)], [str(tmp_path / "chatglm-layout"), "--model", str(CHATGLM / model), "--dataset",
                                "meld", "--data-path", str(fixtures_dir / "meld"), "prompt.history=1",
                                "prompt.max_length=256"]):
        r = emorec("predict", *target, "--text", "Oh my God! This is wonderful!")
        assert r.returncode == 0, r.stderr[-2000:]
        predictions.append(json.loads(r.stdout))
    assert predictions[0]["label"] == predictions[1]["label"]
    for label, p in predictions[0]["probabilities"].items():
        assert predictions[1]["probabilities"][label] == pytest.approx(p, abs=1e-4)


def resume_case(tmp_path, fixtures_dir, stage, method, model):
    common = {"train": {"deepspeed": f"configs/deepspeed/zero{stage}.json", "max_steps": 8, "save_every": 2,
                        "micro_batch_size": 2, "grad_accum": 2, "warmup_steps": 2},
              "data": {"max_eval_samples": 12}}
    cfg = write_config(tmp_path / "cfg.yaml", fixtures_dir, "meld", method, **common)
    if model:
        import yaml

        raw = yaml.safe_load(cfg.read_text())
        raw["model"] = {"name": model}
        raw["method"] = ({"name": "lora"} if method == "lora" else {"name": "ptuning", "ptuning": {"pre_seq_len": 8}})
        cfg.write_text(yaml.safe_dump(raw))
    full, resumed = tmp_path / "full", tmp_path / "resumed"

    r = _train(cfg, f"output={full}")
    assert r.returncode == 0, _why(r)

    r = _train(cfg, f"output={resumed}", "train.stop_after=5")
    assert r.returncode != 0 and "stopped after step 5" in r.stderr, _why(r)
    assert not (resumed / "adapter").exists()
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    r = _train(cfg, f"output={resumed}")
    assert r.returncode == 0, _why(r)
    assert "resumed from step-0000004 at step 4" in r.stderr

    a = load_file(full / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k].abs().sum() > 0, k
        assert torch.equal(a[k], b[k]), k
    curve_full = json.loads((full / "train_curve.json").read_text())
    curve_resumed = json.loads((resumed / "train_curve.json").read_text())
    assert [s for s, _ in curve_full] == list(range(1, 9))
    assert curve_full == curve_resumed
    assert json.loads((full / "metrics.json").read_text())["value"] == json.loads(
        (resumed / "metrics.json").read_text())["value"]

    ckpt = full / "checkpoints" / "step-0000008"
    manifest = json.loads((ckpt / "MANIFEST.json").read_text())
    names = set(manifest["files"])
    assert {"rng_rank_0.safetensors", "rng_rank_1.safetensors", "trainer_state.json"} <= names
    assert any("zero_pp_rank_1" in n for n in names) and any("zero_pp_rank_0" in n for n in names)

    check_consolidation_matches_export(full, "step-0000008", a, method)
    check_peft_export_predicts_the_same(full)
    return full


def check_consolidation_matches_export(run, tag, exported, method):
    """DeepSpeed's own tool reads emorec's sharded checkpoint, and it holds the exported adapter."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(run / "checkpoints"), tag=tag, exclude_frozen_parameters=True)
    trainable = {k.removeprefix("peft.").replace(".default", ""): v for k, v in state.items()}
    if method == "lora":
        assert set(trainable) == set(exported)
        for k, v in exported.items():
            assert torch.equal(trainable[k], v), k
    else:
        (weight,) = [v for k, v in trainable.items() if "prompt_encoder" in k]
        assert torch.equal(weight, exported["prompt_embeddings"])


def check_peft_export_predicts_the_same(run):
    """PeftModel.from_pretrained on the export gives the predictions the run itself made."""
    from emorec.data import load_dataset
    from emorec.eval.inference import load_predictor

    p = load_predictor(str(run))
    examples = load_dataset("meld", p.cfg.data.path).splits["test"][:12]
    ours = p.predict(examples)
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["pred"] for r in rows] == [o["labels"] for o in ours]
    for r, o in zip(rows, ours):
        for label, prob in r["probs"].items():
            assert abs(prob - o["probabilities"][label]) < 1e-4
