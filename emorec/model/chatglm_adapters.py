"""LoRA and P-Tuning v2 adapters between emorec's native GLM layout and ChatGLM2/3's own, exactly, both ways.

LoRA: emorec trains on the split `q_proj/k_proj/v_proj`; ChatGLM's peft LoRA sits on the fused `query_key_value`.
Fusing stacks the A matrices and puts the B matrices block-diagonally (rank k*r for k targeted projections, alpha
k*alpha so the scale stays alpha/r); splitting gives each projection the whole A and its rows of B. Both are exact.

P-Tuning v2: both store one [pre_seq_len, layers * 2 * kv_heads * head_dim] embedding whose rows hold every layer's
prefix key and value in the same order. They differ in positions: emorec (peft, a prefix cache) places the sequence
after the prefix, at positions P.., while ChatGLM keeps it at 0... Prefix keys carry no rotary embedding in either,
so a query at m + P against key k scores as a query at m against k rotated to position -P. The interchange rotates
the prefix keys by -P (to ChatGLM) or +P (from ChatGLM), which is exact up to float rounding.
"""

from __future__ import annotations

import json
import os
import re

import torch

from emorec.errors import CheckpointError, ConfigError
from emorec.model.chatglm_weights import fuse_qkv, read_json, split_qkv

QKV = ("q_proj", "k_proj", "v_proj")
# GLM module name -> ChatGLM module name (query_key_value is the fusion of QKV).
RENAMES = {"o_proj": "self_attention.dense", "gate_up_proj": "mlp.dense_h_to_4h", "down_proj": "mlp.dense_4h_to_h"}
GLM_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
CHATGLM_KEY = re.compile(
    r"^base_model\.model\.transformer\.encoder\.layers\.(\d+)\.(self_attention\.query_key_value|self_attention\.dense"
    r"|mlp\.dense_h_to_4h|mlp\.dense_4h_to_h)\.lora_([AB])\.weight$")
PREFIX_KEY = "transformer.prefix_encoder.embedding.weight"
# The adapter_config.json keys that the peft of ChatGLM's own environment (0.11, with transformers 4.40) knows;
# it refuses unknown ones, so the chatglm-layout export writes only these.
PEFT_0_11_LORA_KEYS = (
    "alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias", "fan_in_fan_out", "inference_mode",
    "init_lora_weights", "layer_replication", "layers_pattern", "layers_to_transform", "loftq_config", "lora_alpha",
    "lora_dropout", "megatron_config", "megatron_core", "modules_to_save", "peft_type", "r", "rank_pattern",
    "revision", "target_modules", "task_type", "use_dora", "use_rslora")


def _lora_modules(state: dict[str, torch.Tensor], pattern: re.Pattern, where: str) -> dict[tuple[int, str], dict]:
    modules: dict[tuple[int, str], dict] = {}
    for key, value in state.items():
        m = pattern.match(key)
        if not m:
            raise CheckpointError(f"{where}: LoRA tensor {key!r} is not on a module the ChatGLM layout maps")
        layer, *name, ab = m.groups()
        modules.setdefault((int(layer), name[-1].split(".")[-1]), {})[ab] = value
    return modules


def lora_to_chatglm(state: dict[str, torch.Tensor], config: dict, chatglm_cfg: dict,
                    where: str = "adapter") -> tuple[dict[str, torch.Tensor], dict]:
    """(state, adapter_config) of an emorec LoRA on GLM as a peft LoRA on ChatGLM's modules."""
    if config.get("use_rslora") or config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ConfigError(f"{where}: rsLoRA, DoRA and rank/alpha patterns have no ChatGLM-layout export")
    r, alpha = config["r"], config["lora_alpha"]
    modules = _lora_modules(state, GLM_KEY, where)
    out: dict[str, torch.Tensor] = {}
    targets, fused_k = set(), 0
    for layer in sorted({layer for layer, _ in modules}):
        prefix = f"base_model.model.transformer.encoder.layers.{layer}."
        present = [n for n in QKV if (layer, n) in modules]
        if present:
            fused_k = len(present)
            a = torch.cat([modules[(layer, n)]["A"] for n in present], dim=0)
            rows = {n: torch.zeros(size, a.shape[0], dtype=a.dtype) for n, size in zip(QKV, _qkv_rows(chatglm_cfg))}
            for j, n in enumerate(present):
                rows[n][:, j * r:(j + 1) * r] = modules[(layer, n)]["B"]
            out[prefix + "self_attention.query_key_value.lora_A.weight"] = a
            out[prefix + "self_attention.query_key_value.lora_B.weight"] = fuse_qkv(*rows.values(), chatglm_cfg)
            targets.add("query_key_value")
        for glm_name, cg_name in RENAMES.items():
            if (layer, glm_name) in modules:
                out[prefix + cg_name + ".lora_A.weight"] = modules[(layer, glm_name)]["A"]
                out[prefix + cg_name + ".lora_B.weight"] = modules[(layer, glm_name)]["B"]
                targets.add(cg_name.split(".")[-1])
    new = {k: v for k, v in config.items() if k not in ("target_modules", "rank_pattern", "alpha_pattern")}
    new["target_modules"] = sorted(targets)
    if fused_k and targets == {"query_key_value"}:
        new["r"], new["lora_alpha"] = r * fused_k, alpha * fused_k
    else:
        new["rank_pattern"] = {"query_key_value": r * fused_k} if fused_k else {}
        new["alpha_pattern"] = {"query_key_value": alpha * fused_k} if fused_k else {}
    return out, new


def lora_from_chatglm(state: dict[str, torch.Tensor], config: dict, chatglm_cfg: dict,
                      where: str = "adapter") -> tuple[dict[str, torch.Tensor], dict]:
    """(state, adapter_config) of a peft LoRA on ChatGLM's modules as one on the native GLM modules."""
    if config.get("use_rslora") or config.get("use_dora"):
        raise ConfigError(f"{where}: rsLoRA and DoRA adapters are not supported")
    patterns = {"rank_pattern": dict(config.get("rank_pattern") or {}),
                "alpha_pattern": dict(config.get("alpha_pattern") or {})}
    modules = _lora_modules(state, CHATGLM_KEY, where)
    out: dict[str, torch.Tensor] = {}
    targets = set()
    for (layer, name), ab in sorted(modules.items()):
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{where}: layer {layer} {name} has lora_{''.join(sorted(ab))} only")
        prefix = f"base_model.model.model.layers.{layer}."
        if name == "query_key_value":
            for n, b in zip(QKV, split_qkv(ab["B"], chatglm_cfg)):
                out[f"{prefix}self_attn.{n}.lora_A.weight"] = ab["A"].clone()
                out[f"{prefix}self_attn.{n}.lora_B.weight"] = b.contiguous()
                targets.add(n)
        else:
            glm = {v.split(".")[-1]: k for k, v in RENAMES.items()}[name]
            out[f"{prefix}{'self_attn' if glm == 'o_proj' else 'mlp'}.{glm}.lora_A.weight"] = ab["A"]
            out[f"{prefix}{'self_attn' if glm == 'o_proj' else 'mlp'}.{glm}.lora_B.weight"] = ab["B"]
            targets.add(glm)
    for key in ("rank_pattern", "alpha_pattern"):
        if "query_key_value" in patterns[key]:
            value = patterns[key].pop("query_key_value")
            patterns[key].update({n: value for n in QKV})
        inverse = {v.split(".")[-1]: k for k, v in RENAMES.items()}
        patterns[key] = {inverse.get(k, k): v for k, v in patterns[key].items()}
    new = {k: v for k, v in config.items() if k not in ("target_modules", "rank_pattern", "alpha_pattern")}
    new.update(target_modules=sorted(targets), **patterns)
    return out, new


def _qkv_rows(cfg: dict) -> tuple[int, int, int]:
    from emorec.model.chatglm_weights import head_dim, kv_groups

    hd = head_dim(cfg)
    return cfg["num_attention_heads"] * hd, kv_groups(cfg) * hd, kv_groups(cfg) * hd


def rotate_prefix_keys(embedding: torch.Tensor, config, positions: int) -> torch.Tensor:
    """The [P, layers*2*kv*hd] prefix with every key rotated by `positions`, by the rotary embedding of `config` (a
    GlmConfig); values are unchanged."""
    from transformers.models.glm.modeling_glm import GlmRotaryEmbedding, apply_rotary_pos_emb

    n_layers, kv, hd = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
    p = embedding.shape[0]
    if embedding.dim() != 2 or embedding.shape[1] != n_layers * 2 * kv * hd:
        raise CheckpointError(f"a prefix of shape {list(embedding.shape)} does not fit this model "
                              f"([pre_seq_len, {n_layers} layers * 2 * {kv} kv heads * {hd}])")
    view = embedding.detach().to(torch.float64).reshape(p, n_layers, 2, kv, hd).clone()
    keys = view[:, :, 0].reshape(p * n_layers, kv, 1, hd)
    cos, sin = GlmRotaryEmbedding(config=config)(keys.float(), torch.tensor([[positions]]))
    _, rotated = apply_rotary_pos_emb(keys, keys, cos.double(), sin.double())
    view[:, :, 0] = rotated.reshape(p, n_layers, kv, hd)
    return view.reshape(p, -1).to(embedding.dtype)


def prefix_to_chatglm(embedding: torch.Tensor, config) -> torch.Tensor:
    return rotate_prefix_keys(embedding, config, -embedding.shape[0])


def prefix_from_chatglm(embedding: torch.Tensor, config) -> torch.Tensor:
    return rotate_prefix_keys(embedding, config, embedding.shape[0])


def chatglm_adapter_kind(path: str) -> str | None:
    """'lora' (peft LoRA on query_key_value & co.), 'ptuning' (THUDM prefix checkpoint), or None."""
    config = os.path.join(path, "adapter_config.json")
    if os.path.isfile(config):
        targets = read_json(config).get("target_modules") or []
        if any(t in ("query_key_value", "dense_h_to_4h", "dense_4h_to_h") for t in targets):
            return "lora"
        return None
    cfg = os.path.join(path, "config.json")
    if os.path.isfile(cfg) and read_json(cfg).get("pre_seq_len"):
        return "ptuning"
    return None


def read_chatglm_prefix(path: str) -> tuple[torch.Tensor, dict]:
    """The prefix embedding of a THUDM P-Tuning v2 checkpoint and its config (pre_seq_len, prefix_projection)."""
    from safetensors.torch import load_file

    cfg = read_json(os.path.join(path, "config.json"))
    if cfg.get("prefix_projection"):
        raise ConfigError(f"{os.path.join(path, 'config.json')}: key 'prefix_projection' is true; only the "
                          "embedding-only prefix (prefix_projection: false) can be read")
    for name in ("model.safetensors", "pytorch_model.bin"):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            try:
                state = load_file(file) if name.endswith(".safetensors") else torch.load(
                    file, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(f"{file}: cannot be read (safetensors, or torch.load with weights_only=True): "
                                      f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
            if PREFIX_KEY not in state:
                raise CheckpointError(f"{file}: no {PREFIX_KEY!r} (keys: {', '.join(list(state)[:5])})")
            weight = state[PREFIX_KEY]
            if weight.shape[0] != cfg["pre_seq_len"]:
                raise CheckpointError(f"{file}: prefix has {weight.shape[0]} rows, config.json pre_seq_len is "
                                      f"{cfg['pre_seq_len']}")
            return weight, cfg
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin with the prefix")


def write_chatglm_prefix(out: str, embedding: torch.Tensor, chatglm_cfg: dict) -> None:
    """THUDM's P-Tuning v2 layout: `transformer.prefix_encoder.embedding.weight` in pytorch_model.bin (and a
    safetensors copy) beside the checkpoint's config.json with pre_seq_len and prefix_projection."""
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    state = {PREFIX_KEY: embedding.detach().cpu().contiguous()}
    torch.save(state, os.path.join(out, "pytorch_model.bin"))
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    cfg = {k: v for k, v in chatglm_cfg.items() if k != "auto_map"}
    cfg.update(pre_seq_len=int(embedding.shape[0]), prefix_projection=False)
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)


def source_chatglm_config(model_name: str) -> tuple[dict, int]:
    """(config.json, version 2 or 3) of the ChatGLM model a model came from: a ChatGLM folder or hub id, or a folder
    that `emorec convert` wrote (it keeps both)."""
    from emorec.model.chatglm_weights import chatglm_version, is_chatglm_dir
    from emorec.model.families import local_chatglm

    if os.path.isdir(model_name) and not is_chatglm_dir(model_name):
        cfg = read_json(os.path.join(model_name, "config.json"))
        if isinstance(cfg.get("chatglm_config"), dict) and cfg.get("chatglm_version") in (2, 3):
            return cfg["chatglm_config"], cfg["chatglm_version"]
        raise ConfigError(f"{model_name}: not a ChatGLM2/3 checkpoint, nor one that `emorec convert` wrote; the "
                          "chatglm layout needs the ChatGLM model the adapter was trained on")
    path = local_chatglm(model_name)
    cfg = read_json(os.path.join(path, "config.json"))
    return cfg, chatglm_version(path, cfg)


def to_chatglm_layout(adapter_dir: str, out: str, model_name: str) -> str:
    """Write an emorec adapter folder (peft, on native GLM) in ChatGLM's layout; returns the method."""
    from safetensors.torch import load_file, save_file

    from emorec.model.chatglm_weights import glm_config

    chatglm_cfg, version = source_chatglm_config(model_name)
    config = read_json(os.path.join(adapter_dir, "adapter_config.json"))
    state = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    os.makedirs(out, exist_ok=True)
    if config.get("peft_type") == "LORA":
        state, config = lora_to_chatglm(state, config, chatglm_cfg, adapter_dir)
        save_file(state, os.path.join(out, "adapter_model.safetensors"), metadata={"format": "pt"})
        config.update(base_model_name_or_path=model_name, inference_mode=True)
        config = {k: config[k] for k in PEFT_0_11_LORA_KEYS if k in config}
        with open(os.path.join(out, "adapter_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        return "lora"
    if config.get("peft_type") == "PREFIX_TUNING":
        if config.get("prefix_projection"):
            raise ConfigError(f"{adapter_dir}: a prefix with prefix_projection has no ChatGLM-layout export here")
        glm = glm_config(chatglm_cfg, version)
        write_chatglm_prefix(out, prefix_to_chatglm(state["prompt_embeddings"], glm), chatglm_cfg)
        return "ptuning"
    raise ConfigError(f"{adapter_dir}/adapter_config.json: peft_type {config.get('peft_type')!r} has no ChatGLM layout")


def from_chatglm_layout(adapter_dir: str, out: str, base_config, chatglm_cfg: dict) -> str:
    """Write a ChatGLM-layout adapter (peft LoRA on query_key_value, or a THUDM P-Tuning v2 folder) as an emorec
    peft adapter for the native GLM model with `base_config`; returns the method."""
    from peft import PrefixTuningConfig, TaskType
    from safetensors.torch import load_file, save_file

    kind = chatglm_adapter_kind(adapter_dir)
    os.makedirs(out, exist_ok=True)
    if kind == "lora":
        config = read_json(os.path.join(adapter_dir, "adapter_config.json"))
        file = os.path.join(adapter_dir, "adapter_model.safetensors")
        if not os.path.isfile(file):
            raise CheckpointError(f"{adapter_dir}: no adapter_model.safetensors")
        state, config = lora_from_chatglm(load_file(file), config, chatglm_cfg, adapter_dir)
        save_file(state, os.path.join(out, "adapter_model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(out, "adapter_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
        return "lora"
    if kind == "ptuning":
        weight, cfg = read_chatglm_prefix(adapter_dir)
        prefix = prefix_from_chatglm(weight.float(), base_config)
        save_file({"prompt_embeddings": prefix.contiguous()}, os.path.join(out, "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        peft_cfg = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=int(cfg["pre_seq_len"]),
                                      token_dim=base_config.num_key_value_heads * base_config.head_dim,
                                      num_attention_heads=base_config.num_key_value_heads,
                                      num_layers=base_config.num_hidden_layers, num_transformer_submodules=1)
        peft_cfg.save_pretrained(out)
        return "ptuning"
    raise ConfigError(f"{adapter_dir}: not a ChatGLM-layout adapter (expected adapter_config.json targeting "
                      "query_key_value, or a config.json with pre_seq_len beside the prefix weights)")
