"""Training on the fixtures learns: both methods beat chance and the untrained model by a clear margin."""

import json

import pytest
import torch
from conftest import emorec, write_config


def untrained_accuracy(cfg_path) -> float:
    from emorec.config import load_config
    from emorec.dist import SINGLE
    from emorec.eval.evaluate import evaluate
    from emorec.model.adapters import apply_adapter
    from emorec.model.families import load_model
    from emorec.train.recipe import load_data

    cfg = load_config(str(cfg_path))
    ds, _, held_out = load_data(cfg)
    loaded = load_model(cfg.model)
    model = apply_adapter(loaded.model, cfg.method, loaded.family, loaded.name, cfg.seed).eval()
    metrics, _ = evaluate(model, ds.spec, held_out, loaded.tokenizer, cfg, SINGLE, torch.device("cpu"),
                          show_progress=False)
    return metrics["values"]["accuracy"]


@pytest.mark.parametrize("method", ["lora", "ptuning"])
def test_training_beats_chance_and_untrained_model(tmp_path, fixtures_dir, method):
    cfg = write_config(tmp_path / "cfg.yaml", fixtures_dir, "carer", method, output=str(tmp_path / "run"),
                       train={"max_steps": 300, "micro_batch_size": 8, "grad_accum": 1, "warmup_steps": 5,
                              "save_every": 300})
    before = untrained_accuracy(cfg)
    r = emorec("train", str(cfg), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    after = metrics["values"]["accuracy"]
    chance = metrics["chance"]  # guessing uniformly among CARER's 6 labels
    assert metrics["n"] >= 60 and chance == pytest.approx(1 / len(metrics["labels"]), abs=0.03)
    assert after >= chance + 0.25, (before, after)
    assert after >= before + 0.25, (before, after)
