import functools

import pytest
import torch
from conftest import tiny_peft

from emorec.eval.scoring import kv_cache as fast_scoring
from emorec.eval.scoring import reference as scoring
from emorec.model.packed_lm import PackedCausalLM

CPU = torch.device("cpu")
LABEL_SETS = {
    "shared_first_token": [[5, 1], [7, 8, 1], [5, 9, 9, 1], [11, 1]],
    "distinct_mixed_lengths": [[5, 1], [7, 1], [9, 3, 1]],
    "single_tokens": [[5], [7], [9]],
}


def prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(2, 1000, (n,), generator=g).tolist() for n in (5, 17, 9, 12, 3, 20, 8)]


@functools.cache
def peft_model(method: str):
    return tiny_peft(method).eval()


@pytest.mark.parametrize("labels", LABEL_SETS)
@pytest.mark.parametrize("method", ["lora", "ptuning"])
def test_fast_scoring_equals_full_scoring(method, labels):
    model, answers = peft_model(method), LABEL_SETS[labels]
    full = scoring.label_logprobs(model, prompts(), answers, batch_size=5, pad_id=0, device=CPU)
    fast = fast_scoring.label_logprobs(PackedCausalLM(model), prompts(), answers, batch_size=3, pad_id=0, device=CPU)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-4)
    assert fast.argmax(1).tolist() == full.argmax(1).tolist()


def test_first_token_mode_checks_first_tokens():
    model, ps = peft_model("lora"), prompts()
    shared = LABEL_SETS["shared_first_token"]
    assert not fast_scoring.distinct_first_tokens(shared)
    fallback = fast_scoring.label_logprobs(model, ps, shared, batch_size=4, pad_id=0, device=CPU, first_token=True)
    torch.testing.assert_close(fallback, scoring.label_logprobs(model, ps, shared, batch_size=8, pad_id=0, device=CPU),
                               rtol=0, atol=1e-4)
    distinct = LABEL_SETS["distinct_mixed_lengths"]
    first = fast_scoring.label_logprobs(model, ps, distinct, batch_size=4, pad_id=0, device=CPU, first_token=True)
    heads = [[a[0]] for a in distinct]
    torch.testing.assert_close(first, scoring.label_logprobs(model, ps, heads, batch_size=8, pad_id=0, device=CPU),
                               rtol=0, atol=1e-4)


def test_progress_counts_pairs():
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    fast_scoring.label_logprobs(peft_model("lora"), prompts(), [[5, 1], [7, 1]], batch_size=3, pad_id=0, device=CPU,
                                progress=bar)
    assert bar.n == len(prompts()) * 2


def test_scores_a_flex_model_under_sdpa_and_restores_it():
    model = peft_model("lora")
    base = model.get_base_model()
    answers = LABEL_SETS["distinct_mixed_lengths"]
    full = scoring.label_logprobs(model, prompts(), answers, batch_size=8, pad_id=0, device=CPU)
    base.set_attn_implementation("flex_attention")
    try:
        fast = fast_scoring.label_logprobs(model, prompts(), answers, batch_size=4, pad_id=0, device=CPU)
        assert base.config._attn_implementation == "flex_attention"
    finally:
        base.set_attn_implementation("sdpa")
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-4)
