"""Base models and tokenizers: GLM-4 and ChatGLM2/3, all as native `GlmForCausalLM`, and a tiny random GLM for tests.

No code from a checkpoint runs: ChatGLM2/3 are converted on load (see chatglm_weights), never `trust_remote_code`."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast

from emorec.config import ModelConfig
from emorec.errors import ConfigError

log = logging.getLogger(__name__)

TINY = "tiny-glm"
TINY_SEED = 1234

LORA_TARGETS = {
    "tiny": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "glm": ["q_proj", "k_proj", "v_proj"],
    "chatglm2": ["q_proj", "k_proj", "v_proj"],
    "chatglm3": ["q_proj", "k_proj", "v_proj"],
}
CHATGLM = ("chatglm2", "chatglm3")
# What a hub download of a ChatGLM checkpoint may fetch: never its *.py files.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.bin", "tokenizer.model"]
# A hub id: `name` or `org/name`. Anything else (a leading /, . or ~, more than one /) is a local path.
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]*[A-Za-z0-9_-])?")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    family: str
    name: str


def _tiny_corpus() -> list[str]:
    from emorec.data.fixtures.text import corpus
    from emorec.text.prompts import template_corpus

    return corpus() + template_corpus()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in-process on fixed text: offline, deterministic, covers any input."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus() * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


def tiny_glm(vocab_size: int) -> torch.nn.Module:
    from transformers import GlmConfig, GlmForCausalLM

    config = GlmConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=vocab_size,
        pad_token_id=0,
        eos_token_id=1,
        max_position_embeddings=2048,
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = GlmForCausalLM(config)
    model.config._name_or_path = TINY
    model.name_or_path = TINY
    return model


@contextlib.contextmanager
def attention_implementation(model, impl: str):
    """Run the block with `model` on another attention implementation, then switch back."""
    current = model.config._attn_implementation
    if impl != current:
        model.set_attn_implementation(impl)
    try:
        yield
    finally:
        if model.config._attn_implementation != current:
            model.set_attn_implementation(current)


def compile_decoder_layers(model: torch.nn.Module, on: bool = True) -> None:
    """torch.compile each decoder layer of a transformers model, or back to eager. One graph serves every layer:
    no per-layer state reaches it (P-Tuning's prefix is handed to the attention modules, see prefix_attention).
    Graphs differ by row length, by grad mode and for the first layer (its input needs no grad)."""
    torch._dynamo.reset()
    for layer in model.get_decoder().layers:
        layer._compiled_call_impl = None
        if on:
            layer.compile(dynamic=False)


def detect_family(cfg: ModelConfig) -> str:
    from emorec.model.chatglm_weights import V1_KEYS, chatglm_version, check_chatglm_config, read_json

    if cfg.family != "auto":
        return cfg.family
    if cfg.name == TINY:
        return "tiny"
    config_file = os.path.join(cfg.name, "config.json")
    if os.path.isfile(config_file):
        raw = read_json(config_file)
        model_type = raw.get("model_type", "")
        if model_type == "chatglm":
            if any(key in raw for key in V1_KEYS):
                check_chatglm_config(raw, config_file)  # refuses ChatGLM-6B v1, naming the key
            return f"chatglm{chatglm_version(cfg.name, raw)}"
    elif os.path.exists(cfg.name):
        raise ConfigError(f"model.name={cfg.name!r} is a local path without a config.json")
    elif not HUB_ID.fullmatch(cfg.name):
        raise ConfigError(f"model.name={cfg.name!r}: no such local folder (expected a model folder with a config.json; "
                          "a hub id is 'name' or 'org/name')")
    else:
        lowered = cfg.name.lower()
        for family in CHATGLM:
            if family in lowered:
                return family
        model_type = "glm"
    if model_type in ("glm", "glm4"):
        return "glm"
    raise ConfigError(
        f"model.name={cfg.name!r} has model_type {model_type!r}; emorec supports glm/glm4 (GLM-4) and "
        "chatglm (ChatGLM2/3). Set model.family to override."
    )


def check_model(cfg: ModelConfig) -> str:
    """The model family, after the checks that need no weights (run before any process group): for a local ChatGLM
    folder its config, its weight files and its tokenizer model."""
    family = detect_family(cfg)
    if family in CHATGLM and os.path.isdir(cfg.name):
        check_chatglm_dir(cfg.name)
    return family


def check_chatglm_dir(path: str) -> None:
    from emorec.model.chatglm_tokenizer import read_sentencepiece
    from emorec.model.chatglm_weights import check_chatglm_config, check_weight_file, read_json, weight_files

    where = os.path.join(path, "config.json")
    check_chatglm_config(read_json(where), where)
    for file in weight_files(path):
        check_weight_file(file)
    read_sentencepiece(os.path.join(path, "tokenizer.model"))


def resolve_dtype(cfg: ModelConfig) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, cfg.dtype)


def local_chatglm(name: str) -> str:
    """A local folder for a ChatGLM folder or hub id (downloaded without any of its code files)."""
    if os.path.isdir(name):
        return name
    from huggingface_hub import snapshot_download

    log.info("downloading %s from the hub (weights, configs and tokenizer model only; no code files)", name)
    return snapshot_download(name, allow_patterns=HUB_PATTERNS)


def load_chatglm(name: str, family: str | None = None, *, dtype: torch.dtype = torch.float32,
                 attn_implementation: str | None = None, progress=None):
    """(native GlmForCausalLM, fast tokenizer, family) for a ChatGLM2/3 folder or hub id, converted in memory."""
    from emorec.model.chatglm_tokenizer import chatglm_tokenizer
    from emorec.model.chatglm_weights import load_native

    path = local_chatglm(name)
    model, version = load_native(path, dtype=dtype, attn_implementation=attn_implementation, progress=progress)
    if family in CHATGLM:
        version = int(family[-1])
    return model, chatglm_tokenizer(path, version), f"chatglm{version}"


def load_model(cfg: ModelConfig) -> LoadedModel:
    family = check_model(cfg)
    dtype = resolve_dtype(cfg)
    if family == "tiny":
        tokenizer = tiny_tokenizer()
        model = tiny_glm(len(tokenizer)).to(dtype)
        return LoadedModel(model, tokenizer, family, TINY)

    from transformers import AutoTokenizer, GlmForCausalLM

    if family in CHATGLM:
        log.info("loading %s %s, converted to native GlmForCausalLM in memory", family, cfg.name)
        model, tokenizer, family = load_chatglm(cfg.name, family, dtype=dtype,
                                                attn_implementation=cfg.attn_implementation)
    else:
        kwargs = {"dtype": dtype}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        log.info("loading GLM %s natively (GlmForCausalLM)", cfg.name)
        model = GlmForCausalLM.from_pretrained(cfg.name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(cfg.name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, family, cfg.name)
