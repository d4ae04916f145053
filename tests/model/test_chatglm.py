"""ChatGLM2/3 as native GlmForCausalLM, checked against what THUDM's own code outputs for two tiny checkpoints
(tests/chatglm_reference, see its README): conversion, logits, greedy generation, chat ids, adapters in ChatGLM's
layouts both ways, and the checks on bad checkpoints."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import CHATGLM_REFERENCE as REF
from conftest import emorec
from safetensors.torch import load_file, save_file

from emorec.model import chatglm_adapters as ca
from emorec.model.chatglm_weights import load_native, read_json

NAMES = ["chatglm2-tiny", "chatglm3-tiny"]
LAYOUTS = ["chatglm2-tiny", "chatglm2-tiny-safetensors", "chatglm2-tiny-sharded", "chatglm3-tiny",
           "chatglm3-tiny-safetensors"]
TOL = 1e-4  # the reference README's bound for a faithful fp32 conversion, at non-pad positions
CASES = ["short", "medium", "chat", "long", "batch", "batch_no_position_ids"]


def reference_name(layout: str) -> str:
    return "-".join(layout.split("-")[:2])


def case_inputs(logits: dict, case: str) -> dict:
    source = "batch" if case.startswith("batch") else case
    inputs = {"input_ids": logits[f"{source}.input_ids"]}
    if source == "batch":
        inputs["attention_mask"] = logits["batch.attention_mask"]
    if case == "batch":
        inputs["position_ids"] = logits["batch.position_ids"]
    return inputs


def worst_logit_error(model, logits: dict, cases=CASES) -> float:
    worst = 0.0
    for case in cases:
        if f"{case}.logits" not in logits:
            continue
        inputs = case_inputs(logits, case)
        with torch.no_grad():
            out = model(**inputs).logits
        real = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).bool()
        worst = max(worst, (out - logits[f"{case}.logits"]).abs()[real].max().item())
    return worst


def greedy(model, run: dict) -> list[list[int]]:
    ids = torch.tensor(run["input_ids"] if isinstance(run["input_ids"][0], list) else [run["input_ids"]])
    mask = torch.tensor(run["attention_mask"]) if "attention_mask" in run else torch.ones_like(ids)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=2,
                             pad_token_id=0)
    return out[:, ids.shape[1]:].tolist()


def greedy_by_forward(model, run: dict, steps: int = 8) -> list[int]:
    """Greedy decoding by full forwards (the reference's single-prompt runs give the same ids without a KV cache).
    Used for peft prefix models: peft 0.21's generate under transformers 5.24 drops the prefix."""
    ids = torch.tensor([run["input_ids"]])
    for _ in range(steps):
        with torch.no_grad():
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids[0, len(run["input_ids"]):].tolist()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_converted_logits_match_thudm_code(layout, attention):
    model, version = load_native(str(REF / layout), attn_implementation=attention)
    assert version == int(layout[7])
    logits = load_file(REF / "references" / reference_name(layout) / "logits.safetensors")
    assert worst_logit_error(model.eval(), logits) <= TOL


@pytest.mark.parametrize("name", NAMES)
def test_convert_writes_a_stock_transformers_checkpoint(tmp_path, name):
    """emorec convert -> GlmForCausalLM / AutoTokenizer with no emorec code: same logits, generations, ids."""
    from transformers import AutoTokenizer, GlmForCausalLM

    from emorec.text.prompts import chat_ids

    dst = tmp_path / "glm"
    r = emorec("convert", str(REF / name), str(dst), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((dst / "config.json").read_text())
    assert config["model_type"] == "glm" and "auto_map" not in config
    assert list(dst.glob("*.safetensors")) and not list(dst.glob("*.py"))
    model = GlmForCausalLM.from_pretrained(dst, attn_implementation="sdpa").eval()
    tok = AutoTokenizer.from_pretrained(dst)
    refs = REF / "references" / name
    assert worst_logit_error(model, load_file(refs / "logits.safetensors")) <= TOL
    for run in json.loads((refs / "generate.json").read_text())["runs"]:
        want = run["new_ids"] if isinstance(run["new_ids"][0], list) else [run["new_ids"]]
        assert greedy(model, run) == want, run["name"]
    tokens = json.loads((refs / "tokens.json").read_text())
    for s in tokens["strings"]:
        assert tok(s["text"])["input_ids"] == s["input_ids"], s["text"]
    chat = tokens["chat"]["build_prompt" if "chatglm2" in name else "build_chat_input"]
    assert chat_ids(tok, chat["query"]) == chat["input_ids"]
    again = emorec("convert", str(REF / name), str(dst), "--no-progress")
    assert again.returncode == 2 and "not empty" in again.stderr


def adapter_on_native(name: str, method: str, tmp_path: Path):
    """The reference ChatGLM-layout adapter (LoRA or P-Tuning v2 prefix), read into emorec's layout and loaded on the
    native model."""
    from emorec.eval.inference import checked_adapter

    base, _ = load_native(str(REF / name), attn_implementation="sdpa")
    local = tmp_path / f"{name}-{method}"
    ca.from_chatglm_layout(str(REF / "references" / name / "adapters" / f"{method}-chatglm-layout"), str(local),
                           base.config, read_json(str(REF / name / "config.json")))
    return checked_adapter(base, str(local)).eval(), local


def per_row_logits(model, logits: dict) -> list[torch.Tensor]:
    """The batch's real tokens run one row at a time: ChatGLM's explicit position ids (0..n-1) are what a row alone
    gets, and peft's prefix path ignores position_ids."""
    ids, mask = logits["batch.input_ids"], logits["batch.attention_mask"].bool()
    out = []
    for row in range(ids.shape[0]):
        with torch.no_grad():
            got = model(input_ids=ids[row][mask[row]][None]).logits[0]
        out.append((got - logits["batch.logits"][row][mask[row]]).abs().max())
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("method", ["lora", "ptuning"])
def test_chatglm_layout_adapters_reproduce_reference_logits_both_ways(tmp_path, name, method):
    adapters = REF / "references" / name / "adapters"
    model, local = adapter_on_native(name, method, tmp_path)
    logits = load_file(adapters / f"{method}_logits.safetensors")
    assert worst_logit_error(model, logits, ["short", "medium", "chat", "batch_no_position_ids"]) <= TOL
    assert max(per_row_logits(model, logits)) <= TOL
    for run in json.loads((adapters / f"{method}_generate.json").read_text())["runs"][:2]:
        assert run["same_without_kv_cache"] and greedy_by_forward(model, run) == run["new_ids"], run["name"]
        if method == "lora":
            assert greedy(model, run) == [run["new_ids"]], run["name"]

    # And back: the adapter written in ChatGLM's layout is the reference adapter, exactly.
    out = tmp_path / "back"
    cfg = read_json(str(REF / name / "config.json"))
    if method == "lora":
        state, config = ca.lora_to_chatglm(load_file(local / "adapter_model.safetensors"),
                                           read_json(str(local / "adapter_config.json")), cfg)
        ref_state = load_file(adapters / "lora-chatglm-layout" / "adapter_model.safetensors")
        ref_config = read_json(str(adapters / "lora-chatglm-layout" / "adapter_config.json"))
        assert set(state) == set(ref_state) and config["target_modules"] == ["query_key_value"]
        for key in {k.removesuffix("lora_A.weight") for k in state if k.endswith("lora_A.weight")}:
            ours = config["lora_alpha"] / config["r"] * state[key + "lora_B.weight"] @ state[key + "lora_A.weight"]
            theirs = (ref_config["lora_alpha"] / ref_config["r"] * ref_state[key + "lora_B.weight"]
                      @ ref_state[key + "lora_A.weight"])
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    else:
        ca.write_chatglm_prefix(str(out), ca.prefix_to_chatglm(load_file(local / "adapter_model.safetensors")[
            "prompt_embeddings"], model.get_base_model().config), cfg)
        weight, written = ca.read_chatglm_prefix(str(out))
        reference, _ = ca.read_chatglm_prefix(str(adapters / "ptuning-chatglm-layout"))
        torch.testing.assert_close(weight, reference, rtol=0, atol=1e-6)
        assert written["pre_seq_len"] == 8 and written["prefix_projection"] is False
        assert torch.load(out / "pytorch_model.bin", weights_only=True).keys() == {ca.PREFIX_KEY}


def test_no_file_of_the_checkpoint_is_executed(tmp_path):
    """A planted modeling_chatglm.py (named in auto_map) that raises on import: conversion and training never run it."""
    ckpt = tmp_path / "chatglm2-tiny"
    shutil.copytree(REF / "chatglm2-tiny", ckpt)
    for name in ("modeling_chatglm.py", "configuration_chatglm.py", "tokenization_chatglm.py"):
        (ckpt / name).write_text("raise RuntimeError('checkpoint code was executed')\n")
    model, _ = load_native(str(ckpt))
    assert type(model).__name__ == "GlmForCausalLM"
    r = emorec("convert", str(ckpt), str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 0 and "checkpoint code was executed" not in r.stderr, r.stderr[-2000:]


def bad_checkpoint(tmp_path: Path, defect: str) -> Path:
    ckpt = tmp_path / "chatglm2-6b"
    shutil.copytree(REF / ("chatglm2-tiny-sharded" if defect == "missing shard" else "chatglm2-tiny"), ckpt)
    if defect == "v1 config":
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg.update(position_encoding_2d=True, inner_hidden_size=128)
        (ckpt / "config.json").write_text(json.dumps(cfg))
    elif defect == "missing shard":
        (ckpt / "pytorch_model-00003-of-00004.bin").unlink()
    elif defect == "truncated bin":
        data = (ckpt / "pytorch_model.bin").read_bytes()
        (ckpt / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    elif defect == "not sentencepiece":
        (ckpt / "tokenizer.model").write_text('{"model": {"type": "BPE"}}')
    elif defect == "layernorm variant":
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg["rmsnorm"] = False
        (ckpt / "config.json").write_text(json.dumps(cfg))
    elif defect == "pickle code":
        class Evil:
            def __reduce__(self):
                return (print, ("unpickled!",))
        torch.save({"transformer.embedding.word_embeddings.weight": Evil()}, ckpt / "pytorch_model.bin")
    return ckpt


@pytest.mark.parametrize("defect, expected", [
    ("v1 config", ["config.json", "'position_encoding_2d'", "ChatGLM-6B (v1)"]),
    ("missing shard", ["pytorch_model.bin.index.json", "pytorch_model-00003-of-00004.bin", "missing"]),
    ("truncated bin", ["pytorch_model.bin", "truncated"]),
    ("not sentencepiece", ["tokenizer.model", "SentencePiece"]),
    ("layernorm variant", ["config.json", "'rmsnorm'"]),
])
def test_bad_checkpoints_fail_in_one_line_before_any_process_group(tmp_path, fixtures_dir, defect, expected):
    from conftest import write_config

    ckpt = bad_checkpoint(tmp_path, defect)
    cfg = write_config(tmp_path / "cfg.yaml", fixtures_dir, "carer", "lora", output=str(tmp_path / "run"),
                       model={"name": str(ckpt)})
    r = emorec("train", str(cfg), "--no-progress")
    assert r.returncode == 2, r.stderr[-2000:]
    error = [line for line in r.stderr.splitlines() if line.startswith("emorec: error:")]
    assert len(error) == 1 and all(e in error[0] for e in expected), r.stderr[-2000:]
    assert "process group" not in r.stderr.lower() and not (tmp_path / "run").exists()


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    from emorec.errors import CheckpointError

    ckpt = bad_checkpoint(tmp_path, "pickle code")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.*weights_only=True"):
        load_native(str(ckpt))


def test_rope_ratio_maps_per_family():
    from emorec.model.chatglm_weights import glm_config

    cfg = read_json(str(REF / "chatglm2-tiny" / "config.json"))
    cfg["rope_ratio"] = 16
    two, three = glm_config(cfg, 2).rope_parameters, glm_config(cfg, 3).rope_parameters
    assert two["rope_type"] == "linear" and two["factor"] == 16.0 and two["rope_theta"] == 10000.0
    assert three["rope_type"] == "default" and three["rope_theta"] == 160000.0


def test_chatglm_adapter_with_unknown_keys_is_refused(tmp_path):
    """peft loads with strict=False; emorec checks that every tensor of the file lands on the model."""
    from emorec.errors import CheckpointError
    from emorec.eval.inference import checked_adapter

    model, local = adapter_on_native("chatglm2-tiny", "lora", tmp_path)
    state = load_file(local / "adapter_model.safetensors")
    state = {k.replace("layers.1.", "layers.7."): v for k, v in state.items()}
    save_file(state, local / "adapter_model.safetensors")
    base, _ = load_native(str(REF / "chatglm2-tiny"))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        checked_adapter(base, str(local))


def test_bench_shapes_are_full_size_chatglm():
    """emorec bench --shape chatglm2-6b: the GPU model is ChatGLM2-6B as the conversion maps it (6.24 B parameters)."""
    from transformers import GlmForCausalLM

    from emorec.bench.shapes import shape_config

    for shape, positions in (("chatglm2-6b", 32768), ("chatglm3-6b", 8192)):
        config = shape_config(shape)
        assert (config.num_key_value_heads, config.head_dim, config.max_position_embeddings) == (2, 128, positions)
        with torch.device("meta"):
            n = sum(p.numel() for p in GlmForCausalLM(config).parameters())
        assert n == 6_243_584_000, (shape, n)
