"""Load a finished run's exported adapter (peft safetensors) for evaluation and prediction, without DeepSpeed."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import torch

from .config import RunConfig, build_config
from .data.schema import DatasetSpec, Example, Turn, spec_from_json
from .errors import CheckpointError
from .export import ADAPTER
from .models import load_model
from .fast_scoring import label_logprobs
from .scoring import decide
from .batches import encode_examples
from .storage import open_store


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
    from peft import PeftModel

    store = open_store(run_url, storage_options)
    for needed in ("config.json", "spec.json", f"{ADAPTER}/adapter_config.json"):
        if not store.exists(needed):
            raise CheckpointError(f"{run_url}: no {needed}; is this the output of a finished `emorec train`?")
    raw = store.read_json("config.json")
    raw["storage_options"] = dict(storage_options or {})
    cfg = build_config(raw, f"{run_url}/config.json")
    spec = spec_from_json(store.read_json("spec.json"))
    loaded = load_model(cfg.model)
    local = tempfile.mkdtemp(prefix="emorec-adapter-")
    for name in store.listdir(ADAPTER):
        store.get_file(f"{ADAPTER}/{name}", os.path.join(local, name))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = PeftModel.from_pretrained(loaded.model, local).to(device).eval()
    return Predictor(cfg, spec, model, loaded.tokenizer, device)


def example_from_dialogue(turns: list[dict], *, speaker: str | None = None) -> Example:
    """The last turn is the one to classify; the earlier ones are its context."""
    if not turns:
        raise ValueError("a dialogue needs at least one turn")
    *context, last = turns
    return Example(
        id="input", text=last["text"], labels=(), speaker=last.get("speaker", speaker),
        context=tuple(Turn(t.get("speaker"), t["text"]) for t in context),
    )

