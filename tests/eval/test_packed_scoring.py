import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, clean_env, emorec, tiny_peft, write_config

from emorec.eval.scoring import packed as packed_scoring
from emorec.eval.scoring import reference as scoring
from emorec.model.packed_lm import PackedCausalLM
from emorec.text.batches import Feature
from emorec.text.packing import FLEX_BLOCK
from emorec.train.batching import collate_packed

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


def worst_flex_error(method: str, budget: int) -> float:
    """max |packed flex scores - full reference scores| over both label sets; NaN counts as infinite."""
    worst = 0.0
    for answers in LABEL_SETS.values():
        full = scoring.label_logprobs(peft_model(method, "sdpa"), prompts(), answers, batch_size=5, pad_id=0,
                                      device=CPU)
        try:
            packed = packed_scoring.label_logprobs(PackedCausalLM(peft_model(method, "flex_attention")), prompts(),
                                                   answers, budget=budget, pad_id=0, device=CPU)
        except packed_scoring.NonFiniteScore:
            return float("inf")
        worst = max(worst, (packed - full).abs().nan_to_num(float("inf")).max().item())
    return worst


def has_avx2() -> bool:
    try:
        return platform.machine() in ("x86_64", "AMD64") and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not has_avx2(), reason="needs an x86 CPU with AVX2")
def test_flex_scoring_with_256_bit_cpu_kernels():
    """The cause of NaN scores on CPUs without AVX-512: inductor's CPU FlexAttention kernel, generated for 256-bit
    vectors, is wrong for query blocks shorter than FLEX_BLOCK (random wrong values or NaN, even for a plain causal
    mask). ATEN_CPU_CAPABILITY=avx2 makes inductor generate that kernel on any x86 CPU. Rows padded to whole flex
    blocks score exactly; small budgets (24 tokens, as in the original failure) exercise it."""
    code = ("import test_packed_scoring as t\n"
            "print('worst', max(t.worst_flex_error(m, b) for m in ('lora', 'ptuning') for b in (24, 40)))")
    env = {**clean_env(), "ATEN_CPU_CAPABILITY": "avx2",
           "TORCHINDUCTOR_CACHE_DIR": str(Path(os.environ.get("TMPDIR", "/tmp")) / "emorec-inductor-avx2"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "eval"), str(REPO / "tests"),
                                          os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    worst = float(r.stdout.split("worst")[-1])
    assert worst <= 1e-4, f"packed flex scoring differs from full scoring by {worst} under AVX2 kernels"


def test_flex_rows_are_whole_blocks_with_a_filler_segment():
    """Under FlexAttention (no dense mask) training and scoring rows are padded to whole flex blocks, also a row
    longer than pad_to; the filler is its own segment, so no position (real or padding) is left fully masked."""
    features = [Feature(example=0, prompt_ids=[3] * 20, answer_ids=[5, 1]),
                Feature(example=1, prompt_ids=[4] * 9, answer_ids=[6, 1])]
    for pad_to, want in ((None, FLEX_BLOCK), (24, FLEX_BLOCK), (130, 2 * FLEX_BLOCK)):
        batch = collate_packed(features, 0, dense_mask=False, pad_to=pad_to)
        assert batch["input_ids"].shape[1] == want
        assert batch["seq_ids"][0, 33:].eq(2).all() and batch["labels"][0, 33:].eq(-100).all()
    dense = collate_packed(features, 0, dense_mask=True, pad_to=None)
    assert dense["input_ids"].shape[1] == 33
    segments = [packed_scoring.segment(p, LABEL_SETS["single_tokens"]) for p in prompts()[-1:]]
    batch, picks = packed_scoring.collate_scoring(segments, 0, 0, pad_to=24, dense_mask=False)
    assert batch["input_ids"].shape[1] == FLEX_BLOCK and batch["seq_ids"][0, 41:].eq(1).all()
    assert int(picks[:, 0].max()) < len(batch["logit_positions"])


def test_a_non_finite_score_is_an_error_not_a_prediction():
    model = tiny_peft("lora").eval()
    model.get_base_model().get_output_embeddings().register_forward_hook(lambda m, i, out: out.fill_(float("nan")))
    with pytest.raises(packed_scoring.NonFiniteScore, match=r"prompts \["):
        packed_scoring.label_logprobs(model, prompts(), [[5], [7]], budget=512, pad_id=0, device=CPU)


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
    from emorec.config import load_config
    from emorec.dist import SINGLE
    from emorec.eval.evaluate import evaluate
    from emorec.model.adapters import apply_adapter
    from emorec.model.families import load_model
    from emorec.train.recipe import load_data

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
