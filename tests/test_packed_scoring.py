import functools
import json

import pytest
import torch

from conftest import emorec, tiny_peft, write_config

from emorec import packed_scoring, scoring
from emorec.packing import PackedCausalLM

CPU = torch.device("cpu")
LABEL_SETS = {
    "shared_first_token": [[5, 1], [7, 8, 1], [5, 9, 9, 1], [11, 1]],
    "single_tokens": [[5], [7], [9]],
}


def prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(2, 1000, (n,), generator=g).tolist() for n in (5, 17, 9, 12, 3, 20, 8, 41)]


@functools.cache
def peft_model(method: str, attention: str):
    model = tiny_peft(method).eval()
    model.get_base_model().set_attn_implementation(attention)
    return model


@pytest.mark.parametrize("budget", [24, 512])
@pytest.mark.parametrize("attention", ["sdpa", "flex_attention"])
@pytest.mark.parametrize("labels", LABEL_SETS)
@pytest.mark.parametrize("method", ["lora", "ptuning"])
def test_packed_scoring_equals_full_scoring(method, labels, attention, budget):
    """Small budgets give many rows (and a prompt longer than a row); flex runs forward-only on CPU."""
    model, answers = peft_model(method, attention), LABEL_SETS[labels]
    reference = peft_model(method, "sdpa")
    full = scoring.label_logprobs(reference, prompts(), answers, batch_size=5, pad_id=0, device=CPU)
    packed = packed_scoring.label_logprobs(PackedCausalLM(model), prompts(), answers, budget=budget, pad_id=0,
                                           device=CPU)
    torch.testing.assert_close(packed, full, rtol=0, atol=1e-4)
    assert packed.argmax(1).tolist() == full.argmax(1).tolist()


def test_rows_fill_the_budget_and_empty_rows_change_nothing():
    answers = LABEL_SETS["shared_first_token"]
    rows = packed_scoring.plan_rows(prompts(), answers, budget=64)
    extra = sum(len(a) - 1 for a in answers)
    assert sorted(i for r in rows for i in r) == list(range(len(prompts())))
    assert all(sum(len(prompts()[i]) + extra for i in r) <= 64 for r in rows if len(r) > 1)
    model = peft_model("lora", "sdpa")
    plain = packed_scoring.label_logprobs(model, prompts(), answers, budget=64, pad_id=0, device=CPU)
    padded = packed_scoring.label_logprobs(model, prompts(), answers, budget=64, pad_id=0, device=CPU,
                                           rows=rows + [[], []])
    torch.testing.assert_close(padded, plain, rtol=0, atol=0)


def test_segment_branches_and_targets():
    seg = packed_scoring.segment([10, 11, 12], [[5, 1], [7, 8, 1]])
    assert seg.ids == [10, 11, 12, 5, 7, 8]
    assert seg.positions == [0, 1, 2, 3, 3, 4]
    assert seg.branches == [0, 0, 0, 1, 2, 2]
    assert seg.targets == [(2, 0, 5), (3, 0, 1), (2, 1, 7), (4, 1, 8), (5, 1, 1)]


def test_progress_counts_pairs_and_mode_is_restored():
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar, model = Bar(), tiny_peft("lora").train()
    packed_scoring.label_logprobs(model, prompts(), [[5, 1], [7, 1]], budget=40, pad_id=0, device=CPU, progress=bar)
    assert bar.n == len(prompts()) * 2
    assert model.training


@pytest.mark.parametrize("method", ["lora", "ptuning"])
def test_evaluate_with_packing_equals_padded_evaluation(tmp_path, fixtures_dir, method):
    from emorec.adapters import apply_adapter
    from emorec.config import load_config
    from emorec.engine import SINGLE
    from emorec.evaluate import evaluate
    from emorec.models import load_model
    from emorec.train import load_data

    results = {}
    for packing in (False, True):
        path = write_config(tmp_path / f"{packing}.yaml", fixtures_dir, "carer", method,
                            train={"packing": packing, "pack_tokens": 700})
        cfg = load_config(str(path))
        ds, _, held_out = load_data(cfg)
        loaded = load_model(cfg.model)
        model = apply_adapter(loaded.model, cfg.method, loaded.family, loaded.name, cfg.seed).eval()
        results[packing] = evaluate(model, ds.spec, held_out, loaded.tokenizer, cfg, SINGLE, CPU, show_progress=False)
    (padded, padded_rows), (packed, packed_rows) = results[False], results[True]
    assert len(packed_rows) == len(padded_rows) >= 60
    assert [r["pred"] for r in packed_rows] == [r["pred"] for r in padded_rows]
    assert packed["values"] == padded["values"]


def test_packed_training_eager_and_compiled(tmp_path, fixtures_dir):
    """train.packing end to end (prefetched packed rows through the engine, packed scoring at the end), and with
    train.compile (rows padded to pack_tokens, each decoder layer compiled): the final loss follows the eager one."""
    losses = {}
    for compiled in (False, True):
        path = write_config(tmp_path / f"{compiled}.yaml", fixtures_dir, "carer", "ptuning",
                            output=str(tmp_path / f"run-{compiled}"),
                            train={"packing": True, "pack_tokens": 600, "compile": compiled, "max_steps": 6,
                                   "warmup_steps": 2, "save_every": 6})
        r = emorec("train", str(path), "--no-progress")
        assert r.returncode == 0, r.stderr[-3000:]
        metrics = json.loads((tmp_path / f"run-{compiled}" / "metrics.json").read_text())
        assert metrics["steps"] == 6 and metrics["n"] >= 60 and 0.0 <= metrics["values"]["accuracy"] <= 1.0
        losses[compiled] = metrics["final_loss"]
    assert torch.isfinite(torch.tensor(losses[False]))
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
