"""ChatGLM2/3 checkpoints as native `GlmForCausalLM`: the config mapped key by key, the weights renamed and split.

ChatGLM2/3 compute the function of transformers' GLM once mapped: fused `query_key_value` (with bias) split into
q/k/v by `kv_channels` and `multi_query_group_num`; rotary embedding on half of each head with interleaved pairs;
SwiGLU with the gate first; RMSNorm; an untied `output_layer`. Nothing from the checkpoint directory is executed:
`.bin` files are read with `torch.load(weights_only=True)`, and `*.py` files are ignored.
"""

from __future__ import annotations

import json
import os
import re

import torch

from emorec.errors import CheckpointError, ConfigError

# A config key whose value the native class cannot represent -> (the value it needs, why).
REQUIRED = {
    "rmsnorm": (True, "GLM uses RMSNorm; LayerNorm ChatGLM variants are not supported"),
    "apply_residual_connection_post_layernorm": (False, "GLM adds the residual before the layer norm"),
    "post_layer_norm": (True, "GLM always has a final norm"),
    "add_bias_linear": (False, "GLM has no bias on the dense and MLP projections"),
    "original_rope": (True, "GLM's rotary embedding is ChatGLM's original one"),
}
V1_KEYS = ("position_encoding_2d", "inner_hidden_size", "gmask_token_id")


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def is_chatglm_dir(path: str) -> bool:
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return False
    try:
        return read_json(config).get("model_type") == "chatglm"
    except ConfigError:
        return False


def chatglm_version(path: str, cfg: dict | None = None) -> int:
    """2 or 3, from the names the checkpoint gives itself (tokenizer_config.json, then config.json, then the folder)."""
    names = []
    tok_cfg = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(tok_cfg):
        names.append(str(read_json(tok_cfg).get("name_or_path", "")))
    cfg = cfg if cfg is not None else read_json(os.path.join(path, "config.json"))
    names += [str(cfg.get("_name_or_path", "")), os.path.basename(os.path.normpath(path))]
    for name in names:
        found = re.search(r"chatglm([23])", name.lower())
        if found:
            return int(found.group(1))
    raise ConfigError(f"{path}: cannot tell ChatGLM2 from ChatGLM3 (neither tokenizer_config.json name_or_path nor "
                      "config.json _name_or_path nor the folder name says); set model.family=chatglm2 or chatglm3")


def check_chatglm_config(cfg: dict, where: str) -> None:
    """Refuse, naming the key, any ChatGLM variant that the native GLM class cannot compute exactly."""
    for key in V1_KEYS:
        if key in cfg:
            raise ConfigError(f"{where}: key {key!r} marks a ChatGLM-6B (v1) checkpoint, whose 2-D positions and "
                              "LayerNorm GLM cannot represent; emorec supports ChatGLM2/3 and GLM-4")
    for key in ("hidden_size", "num_layers", "num_attention_heads", "ffn_hidden_size", "padded_vocab_size"):
        if not isinstance(cfg.get(key), int) or isinstance(cfg.get(key), bool) or cfg[key] <= 0:
            raise ConfigError(f"{where}: key {key!r} must be a positive integer, found {cfg.get(key)!r}")
    for key, (needed, why) in REQUIRED.items():
        if key in cfg and cfg[key] != needed:
            raise ConfigError(f"{where}: key {key!r} is {cfg[key]!r}; only {needed!r} is supported ({why})")
    if cfg.get("multi_query_attention", False):
        groups = cfg.get("multi_query_group_num")
        if not isinstance(groups, int) or groups <= 0 or cfg["num_attention_heads"] % groups:
            raise ConfigError(f"{where}: key 'multi_query_group_num' must divide num_attention_heads "
                              f"({cfg['num_attention_heads']}), found {groups!r}")
    ratio = cfg.get("rope_ratio", 1)
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or ratio <= 0:
        raise ConfigError(f"{where}: key 'rope_ratio' must be a positive number, found {ratio!r}")


def head_dim(cfg: dict) -> int:
    return cfg.get("kv_channels") or cfg["hidden_size"] // cfg["num_attention_heads"]


def kv_groups(cfg: dict) -> int:
    return cfg["multi_query_group_num"] if cfg.get("multi_query_attention", False) else cfg["num_attention_heads"]


def glm_config(cfg: dict, version: int, where: str = "config.json"):
    """The `GlmConfig` that computes what this ChatGLM config computes.

    `rope_ratio` (the 32k variants): ChatGLM3 multiplies the RoPE base by it; ChatGLM2 divides the positions by it,
    which is transformers' linear RoPE scaling."""
    from transformers import GlmConfig

    check_chatglm_config(cfg, where)
    ratio = float(cfg.get("rope_ratio", 1))
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    if ratio != 1 and version == 3:
        rope["rope_theta"] = 10000.0 * ratio
    elif ratio != 1:
        rope.update(rope_type="linear", factor=ratio)
    return GlmConfig(
        vocab_size=cfg["padded_vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["ffn_hidden_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=kv_groups(cfg),
        head_dim=head_dim(cfg),
        hidden_act="silu",
        attention_dropout=float(cfg.get("attention_dropout", 0.0)),
        max_position_embeddings=int(cfg.get("seq_length", 2048)),
        rms_norm_eps=float(cfg.get("layernorm_epsilon", 1e-5)),
        rope_parameters=rope,
        attention_bias=bool(cfg.get("add_qkv_bias", False)),
        tie_word_embeddings=False,
        pad_token_id=cfg.get("pad_token_id", 0),
        eos_token_id=cfg.get("eos_token_id", 2),
        bos_token_id=None,
        architectures=["GlmForCausalLM"],
    )


def weight_files(path: str) -> list[str]:
    """The checkpoint's weight files: an index's shards, one model file, or every `*.safetensors`."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = os.path.join(path, index_name)
        if os.path.isfile(index_path):
            weight_map = read_json(index_path).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index_path}: expected a non-empty 'weight_map' object")
            files = sorted(set(map(str, weight_map.values())))
            for name in files:
                full = os.path.normpath(os.path.join(path, name))
                if os.path.dirname(full) != os.path.normpath(path):
                    raise CheckpointError(f"{index_path}: shard {name!r} is not a file of this folder")
                if not os.path.isfile(full):
                    raise CheckpointError(f"{index_path}: names shard {name!r}, which is missing from {path}")
            return [os.path.join(path, name) for name in files]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(path, single)):
            return [os.path.join(path, single)]
    shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if shards:
        return [os.path.join(path, f) for f in shards]
    raise CheckpointError(f"{path}: no weights found (expected model.safetensors, pytorch_model.bin, or an index "
                          "with its shards)")


def check_weight_file(file: str) -> None:
    """Cheap structural checks (no tensor read): a `.bin` must be a complete zip archive (torch.save's format), a
    `.safetensors` file must hold every byte its header promises."""
    import struct
    import zipfile

    size = os.path.getsize(file)
    if file.endswith(".safetensors"):
        try:
            with open(file, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n)) if 8 + n <= size else None
        except (struct.error, json.JSONDecodeError, UnicodeDecodeError):
            header = None
        if not isinstance(header, dict):
            raise CheckpointError(f"{file}: not a safetensors file (its header cannot be read)")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            raise CheckpointError(f"{file}: truncated ({size} bytes, its header needs {8 + n + end})")
        return
    try:
        with zipfile.ZipFile(file) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{file}: truncated or not a torch.save archive ({e}); emorec reads .bin files only "
                              "as complete zip archives through torch.load(weights_only=True)") from None


def read_weights(path: str, progress=None) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, on the CPU. Pickled `.bin` files are loaded with weights_only=True only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        try:
            if file.endswith(".safetensors"):
                part = load_file(file)
            else:
                part = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{file}: cannot read its tensors ({e})") from None
        except Exception as e:  # torch.load: UnpicklingError when weights_only refuses, RuntimeError when truncated
            raise CheckpointError(f"{file}: cannot be loaded with torch.load(weights_only=True), which emorec requires "
                                  f"for pickled checkpoints: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise CheckpointError(f"{file}: expected a mapping of tensor names to tensors")
        state.update(part)
        if progress is not None:
            progress.update(1)
    return state


def split_qkv(weight: torch.Tensor, cfg: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of the fused projection: [q | k | v] with grouped KV, or per head [q_h k_h v_h] without it."""
    heads, hd, groups = cfg["num_attention_heads"], head_dim(cfg), kv_groups(cfg)
    if cfg.get("multi_query_attention", False):
        return tuple(weight.split([heads * hd, groups * hd, groups * hd], dim=0))
    per_head = weight.reshape(heads, 3, hd, *weight.shape[1:])
    return tuple(per_head[:, i].reshape(heads * hd, *weight.shape[1:]) for i in range(3))


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: dict) -> torch.Tensor:
    """The inverse of `split_qkv`."""
    if cfg.get("multi_query_attention", False):
        return torch.cat([q, k, v], dim=0)
    heads, hd = cfg["num_attention_heads"], head_dim(cfg)
    parts = [t.reshape(heads, 1, hd, *t.shape[1:]) for t in (q, k, v)]
    return torch.cat(parts, dim=1).reshape(3 * heads * hd, *q.shape[1:])


def to_glm_state(state: dict[str, torch.Tensor], cfg: dict, where: str) -> dict[str, torch.Tensor]:
    """ChatGLM's tensor names -> GlmForCausalLM's, every expected tensor present and nothing left over."""
    state = dict(state)
    out: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        try:
            return state.pop(key)
        except KeyError:
            raise CheckpointError(f"{where}: tensor {key!r} is missing") from None

    t = "transformer."
    out["model.embed_tokens.weight"] = take(t + "embedding.word_embeddings.weight")
    for i in range(cfg["num_layers"]):
        src, dst = f"{t}encoder.layers.{i}.", f"model.layers.{i}."
        out[dst + "input_layernorm.weight"] = take(src + "input_layernorm.weight")
        out[dst + "post_attention_layernorm.weight"] = take(src + "post_attention_layernorm.weight")
        names = ("q_proj", "k_proj", "v_proj")
        for name, part in zip(names, split_qkv(take(src + "self_attention.query_key_value.weight"), cfg)):
            out[f"{dst}self_attn.{name}.weight"] = part.contiguous()
        if cfg.get("add_qkv_bias", False):
            for name, part in zip(names, split_qkv(take(src + "self_attention.query_key_value.bias"), cfg)):
                out[f"{dst}self_attn.{name}.bias"] = part.contiguous()
        out[dst + "self_attn.o_proj.weight"] = take(src + "self_attention.dense.weight")
        out[dst + "mlp.gate_up_proj.weight"] = take(src + "mlp.dense_h_to_4h.weight")
        out[dst + "mlp.down_proj.weight"] = take(src + "mlp.dense_4h_to_h.weight")
    out["model.norm.weight"] = take(t + "encoder.final_layernorm.weight")
    out["lm_head.weight"] = take(t + "output_layer.weight")
    state.pop(t + "rotary_pos_emb.inv_freq", None)  # recomputed in fp32 by the native rotary embedding
    prefix = [k for k in state if k.startswith(t + "prefix_encoder.")]
    leftover = sorted(set(state) - set(prefix))
    if leftover:
        raise CheckpointError(f"{where}: tensors the conversion does not know: {', '.join(leftover[:5])}"
                              + (f" (+{len(leftover) - 5} more)" if len(leftover) > 5 else ""))
    return out


def load_native(path: str, *, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None,
                progress=None):
    """(GlmForCausalLM holding the checkpoint's weights, the ChatGLM version 2 or 3)."""
    from transformers import GlmForCausalLM

    where = os.path.join(path, "config.json")
    cfg = read_json(where)
    version = chatglm_version(path, cfg)
    config = glm_config(cfg, version, where)
    state = to_glm_state(read_weights(path, progress), cfg, path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = GlmForCausalLM.from_pretrained(None, config=config, state_dict=state, dtype=dtype, **kwargs)
    model.config._name_or_path = path
    model.name_or_path = path
    return model, version
