import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_peft

from emorec.model.packed_lm import PackedCausalLM, block_causal_mask, num_prefix_tokens, unwrap
from emorec.text.batches import IGNORE, Feature, collate
from emorec.text.packing import pack_groups
from emorec.train.batching import PackedOrder, collate_packed

SHAPES = [(7, 2), (12, 3), (5, 2), (9, 1), (4, 3)]


def features() -> list[Feature]:
    g = torch.Generator().manual_seed(1)
    ids = [(torch.randint(2, 1000, (p,), generator=g), torch.randint(2, 1000, (a,), generator=g)) for p, a in SHAPES]
    return [Feature(i, p.tolist(), a.tolist()) for i, (p, a) in enumerate(ids)]


MODELS = ["tiny-glm", "chatglm2-tiny", "chatglm3-tiny"]


def peft_model(method: str, model: str = "tiny-glm"):
    return tiny_peft(method, model).train()


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return out


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", ["lora", "ptuning"])
def test_packed_loss_and_grads_equal_padded(method, model):
    model, fs = peft_model(method, model), features()
    padded = model(**collate(fs, 0)).loss
    padded.backward()
    want = grads(model)
    packed = PackedCausalLM(model)(**collate_packed(fs, 0, num_prefix_tokens(model))).loss
    packed.backward()
    got = grads(model)
    assert packed.item() == pytest.approx(padded.item(), rel=1e-5)
    assert want.keys() == got.keys() and want
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", ["lora", "ptuning"])
def test_packed_logits_equal_per_sample_logits(method, model):
    model, fs = peft_model(method, model).eval(), features()
    with torch.no_grad():
        packed = PackedCausalLM(model)(**collate_packed(fs, 0, num_prefix_tokens(model))).logits
        alone = []
        for f in fs:
            logits = model(input_ids=torch.tensor([f.prompt_ids + f.answer_ids])).logits[0]
            p = len(f.prompt_ids)
            alone.append(logits[p - 1 : p - 1 + len(f.answer_ids)])
    assert packed.shape[0] == sum(a for _, a in SHAPES)
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-4, atol=1e-4)


def test_collate_packed_layout():
    fs = features()[:2]
    b = collate_packed(fs, 0, num_prefix=2, pad_to=30)
    assert b["input_ids"].shape == (1, 30)
    assert b["position_ids"][0].tolist() == list(range(9)) + list(range(15)) + list(range(6))
    assert b["attention_mask"].shape == (1, 1, 30, 32)
    m = b["attention_mask"][0, 0]
    assert m[:, :2].all()
    assert m[9, 2 + 8] == 0 and m[9, 2 + 9] == 1 and m[10, 2 + 11] == 0
    labels = b["labels"][0]
    assert (labels[b["logit_positions"] + 1] != IGNORE).all()
    assert int((labels != IGNORE).sum()) == len(b["logit_positions"]) == 5
    torch.testing.assert_close(block_causal_mask(b["seq_ids"], 2), b["attention_mask"])


def test_pack_groups_fill_and_determinism():
    lengths = [150, 90, 30, 500, 260, 40, 120, 75, 600, 10]
    groups = pack_groups(lengths, 300)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) == 1 or sum(lengths[i] for i in g) <= 300
    assert [500] in [[lengths[i] for i in g] for g in groups]
    assert groups == pack_groups(lengths, 300)
    assert groups == [[8], [3], [4, 5], [0, 6, 2], [1, 7, 9]]  # 600 | 500 | 260+40 | 150+120+30 | 90+75+10


def test_packed_order_shards_reshuffles_and_is_deterministic():
    lengths = [20 + (7 * i) % 50 for i in range(40)]
    orders = [PackedOrder(lengths, budget=100, world=2, rank=r, seed=3) for r in range(2)]
    per = orders[0].epoch_start(1)
    assert per == orders[1].epoch_start(1) > 0
    epoch0 = [orders[r].indices(k) for r in range(2) for k in range(per)]
    flat = [i for g in epoch0 for i in g]
    assert len(flat) == len(set(flat)) and all(sum(lengths[i] for i in g) <= 100 for g in epoch0)
    assert orders[0].epoch_of(per) == 1
    epoch1 = [orders[0].indices(k) for k in range(per, orders[0].epoch_start(2))]
    assert {tuple(sorted(g)) for g in epoch1} != {tuple(sorted(g)) for g in epoch0[:per]}
    fresh = PackedOrder(lengths, budget=100, world=2, rank=0, seed=3)
    assert fresh.indices(per + 1) == orders[0].indices(per + 1)


def test_unwrap_finds_the_peft_model():
    model = peft_model("lora")
    assert unwrap(PackedCausalLM(model)) is model and unwrap(model) is model


ENGINE_SCRIPT = r"""
import sys
from emorec.config import RunConfig
from emorec.train.engine import create_engine
from emorec.dist import setup_distributed
from emorec.model.packed_lm import PackedCausalLM, num_prefix_tokens
from emorec.train.batching import collate_packed
sys.path.insert(0, "tests")
from test_packing import features, peft_model

stage = int(sys.argv[1])
dist = setup_distributed()
cfg = RunConfig.model_validate({"data": {"dataset": "custom", "path": "."},
    "train": {"deepspeed": f"configs/deepspeed/zero{stage}.json", "micro_batch_size": 1, "grad_accum": 1, "lr": 1e-2,
              "max_steps": 10}})
for method in ("lora", "ptuning"):
    model = peft_model(method)
    batch = collate_packed(features(), 0, num_prefix_tokens(model))
    direct = PackedCausalLM(model)(**batch).loss.item()
    engine, _ = create_engine(PackedCausalLM(model), cfg, dist)
    losses = []
    for _ in range(4):  # the warmup scheduler gives lr 0 to the first two steps
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    assert abs(losses[0] - direct) < 1e-4 * abs(direct), (method, losses[0], direct)
    assert losses[-1] < losses[0], (method, losses)
    print("OK", method, losses)
"""


@pytest.mark.parametrize("stage", [2, 3])
def test_packed_module_under_deepspeed(stage):
    from conftest import REPO

    here = os.pathsep.join([str(REPO / "tests" / "train"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, str(stage)], capture_output=True, text=True,
                          timeout=180, cwd=REPO, env={**os.environ, "PYTHONPATH": here})
    assert proc.returncode == 0 and proc.stdout.count("OK") == 2, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-glm", "chatglm2-tiny"])
@pytest.mark.parametrize("method", ["lora", "ptuning"])
def test_flex_block_mask_matches_dense_mask(method, model):
    """The GPU path (FlexAttention BlockMask, rows padded to whole flex blocks), forward only: CPU flex has no
    backward and compiles for ~30 s."""
    model, fs = peft_model(method, model).eval(), features()
    wrapper = PackedCausalLM(model)
    with torch.no_grad():
        dense = wrapper(**collate_packed(fs, 0, num_prefix_tokens(model))).logits
        model.get_base_model().set_attn_implementation("flex_attention")
        flex = wrapper(**collate_packed(fs, 0, num_prefix_tokens(model), dense_mask=False)).logits
    torch.testing.assert_close(flex, dense, rtol=1e-4, atol=1e-4)
