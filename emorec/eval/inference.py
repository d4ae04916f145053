"""Load a finished run's exported adapter (peft safetensors) for evaluation and prediction, without DeepSpeed."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import torch

from emorec.config import RunConfig, build_config
from emorec.data.schema import DatasetSpec, Example, Turn, spec_from_json
from emorec.errors import CheckpointError, EmorecError
from emorec.eval.scoring.kv_cache import label_logprobs
from emorec.eval.scoring.reference import decide
from emorec.io.storage import open_store
from emorec.model.adapters import ADAPTER
from emorec.model.families import load_model
from emorec.text.batches import encode_examples


@dataclass
class Predictor:
    cfg: RunConfig
    spec: DatasetSpec
    model: torch.nn.Module
    tokenizer: object
    device: torch.device

    def predict(self, examples: list[Example]) -> list[dict]:
        prompts, answers = encode_examples(examples, self.spec, self.tokenizer, self.cfg.prompt)
        lp = label_logprobs(self.model, prompts, list(answers.values()), batch_size=self.cfg.eval.batch_size,
                            pad_id=self.tokenizer.pad_token_id, device=self.device)
        preds, probs = decide(self.spec, lp, self.cfg.eval.multi_label_threshold)
        return [
            {"labels": list(p), "probabilities": {l: round(float(v), 6) for l, v in zip(self.spec.labels, pr)}}
            for p, pr in zip(preds, probs)
        ]


def load_predictor(run_url: str, storage_options: dict | None = None) -> Predictor:
    store = open_store(run_url, storage_options)
    for needed in ("config.json", "spec.json", f"{ADAPTER}/adapter_config.json"):
        if not store.exists(needed):
            raise CheckpointError(f"{run_url}: no {needed}; is this the output of a finished `emorec train`?")
    raw = store.read_json("config.json")
    raw["storage_options"] = dict(storage_options or {})
    cfg = build_config(raw, f"{run_url}/config.json")
    spec = spec_from_json(store.read_json("spec.json"))
    local = tempfile.mkdtemp(prefix="emorec-adapter-")
    for name in store.listdir(ADAPTER):
        store.get_file(f"{ADAPTER}/{name}", os.path.join(local, name))
    check_adapter_files(local, f"{run_url.rstrip('/')}/{ADAPTER}")
    loaded = load_model(cfg.model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = checked_adapter(loaded.model, local).to(device).eval()
    return Predictor(cfg, spec, model, loaded.tokenizer, device)


def load_adapter_predictor(adapter: str, model_name: str, dataset: str, data_path: str | None = None,
                           overrides: list[str] = ()) -> tuple[Predictor, object]:
    """(Predictor, loaded dataset) for an adapter trained outside emorec: a peft adapter on the native model, or
    ChatGLM2/3's own layouts (peft LoRA on query_key_value, THUDM P-Tuning v2 prefix), converted exactly."""
    from emorec.data import load_dataset
    from emorec.model.chatglm_adapters import chatglm_adapter_kind, from_chatglm_layout, source_chatglm_config
    from emorec.model.chatglm_weights import read_json

    if not os.path.isdir(adapter):
        raise CheckpointError(f"{adapter}: not an adapter folder")
    kind = chatglm_adapter_kind(adapter)
    if kind is None and not os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        raise CheckpointError(f"{adapter}: neither a peft adapter (adapter_config.json) nor a ChatGLM P-Tuning v2 "
                              "checkpoint (config.json with pre_seq_len)")
    method = kind or ("lora" if read_json(os.path.join(adapter, "adapter_config.json")).get("peft_type") == "LORA"
                      else "ptuning")
    from emorec.config import apply_overrides

    raw = {"model": {"name": model_name}, "method": {"name": method}, "data": {"dataset": dataset, "path": data_path}}
    cfg = build_config(apply_overrides(raw, list(overrides)), "command line")
    ds = load_dataset(cfg.data.dataset, cfg.data.path, on_bad_row=cfg.data.on_bad_row, seed=cfg.seed,
                      options=cfg.data.options)
    if kind is None:
        check_adapter_files(adapter, adapter)
    loaded = load_model(cfg.model)
    local = adapter
    if kind is not None:
        chatglm_cfg, _ = source_chatglm_config(model_name)
        local = tempfile.mkdtemp(prefix="emorec-adapter-")
        from_chatglm_layout(adapter, local, loaded.model.config, chatglm_cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = checked_adapter(loaded.model, local).to(device).eval()
    return Predictor(cfg, ds.spec, model, loaded.tokenizer, device), ds


def check_adapter_files(local: str, shown: str) -> None:
    """A peft adapter folder whose files are whole, checked before any model loads: a cut-short or corrupt
    adapter_model.safetensors or adapter_config.json is named, not left to fail inside peft."""
    from safetensors import SafetensorError, safe_open

    from emorec.model.chatglm_weights import read_json

    try:
        read_json(os.path.join(local, "adapter_config.json"))
    except EmorecError as e:
        raise CheckpointError(str(e).replace(local, shown, 1)) from None
    weights = os.path.join(local, "adapter_model.safetensors")
    if not os.path.isfile(weights):
        raise CheckpointError(f"{shown}/adapter_model.safetensors: missing (expected the adapter's weights)")
    try:
        with safe_open(weights, "pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{shown}/adapter_model.safetensors: not a readable safetensors file ({e}); the adapter "
                              "is truncated or corrupt: export or train it again") from None


def checked_adapter(base: torch.nn.Module, local: str) -> torch.nn.Module:
    """PeftModel.from_pretrained, then a check that every tensor of the file landed on a module (peft loads with
    strict=False: names that match nothing would silently leave the adapter out)."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    model = PeftModel.from_pretrained(base, local)
    stored = load_file(os.path.join(local, "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(model, save_embedding_layers=False)
    missing, unused = sorted(set(loaded) - set(stored)), sorted(set(stored) - set(loaded))
    if missing or unused:
        raise CheckpointError(f"{local}: the adapter does not fit the model: "
                              + "; ".join(f"{what}: {', '.join(keys[:3])}" for what, keys in
                                          (("not in the file", missing), ("matching no module", unused)) if keys))
    return model


def example_from_dialogue(turns: list[dict], *, speaker: str | None = None) -> Example:
    """The last turn is the one to classify; the earlier ones are its context."""
    if not turns:
        raise ValueError("a dialogue needs at least one turn")
    *context, last = turns
    return Example(
        id="input", text=last["text"], labels=(), speaker=last.get("speaker", speaker),
        context=tuple(Turn(t.get("speaker"), t["text"]) for t in context),
    )

