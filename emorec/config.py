"""Typed run configs: one YAML file plus `key=value` overrides. Unknown keys are errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import fsspec
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    dataset: str = Field(description="iemocap | meld | emorynlp | dailydialog | carer | goemotions | custom")
    path: str = Field(description="directory holding the dataset's native release files")
    on_bad_row: Literal["error", "skip"] = "error"
    options: dict[str, Any] = Field(default_factory=dict, description="loader options, e.g. validation_share")
    max_train_samples: int | None = Field(default=None, ge=1)
    max_eval_samples: int | None = Field(default=None, ge=1)


class PromptConfig(Strict):
    history: int = Field(default=12, ge=0, description="previous dialogue turns shown in the prompt")
    max_length: int = Field(default=512, ge=16, description="token budget; oldest context is dropped first")


class ModelConfig(Strict):
    name: str = Field(default="tiny-glm", description="tiny-glm, a local path or a hub id")
    family: Literal["auto", "tiny", "glm", "chatglm2", "chatglm3"] = Field(
        default="auto", description="auto: from the checkpoint's config.json (ChatGLM2/3 are converted on load)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str | None = None


class LoraConfig(Strict):
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(default=None, description="default: per model family")


class PTuningConfig(Strict):
    pre_seq_len: int = Field(default=128, ge=1)
    prefix_projection: bool = False
    encoder_hidden_size: int | None = Field(default=None, ge=1)


class MethodConfig(Strict):
    name: Literal["lora", "ptuning"] = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    ptuning: PTuningConfig = Field(default_factory=PTuningConfig)


class TrainConfig(Strict):
    deepspeed: str = Field(default="configs/deepspeed/zero2.json", description="ZeRO JSON with 'auto' fields")
    micro_batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=16, ge=1)
    lr: float | None = Field(default=None, gt=0, description="default: 2e-2 for ptuning, 5e-4 for lora")
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    max_steps: int = Field(default=3000, ge=1, description="optimizer steps")
    grad_clip: float = Field(default=1.0, ge=0)
    save_every: int = Field(default=500, ge=1)
    keep_last: int = Field(default=3, ge=1, description="complete checkpoints kept in storage")
    upload_retries: int = Field(default=5, ge=1, description="attempts per storage operation")
    upload_backoff_s: float = Field(default=0.5, ge=0, description="first retry delay; doubles each time")
    log_every: int = Field(default=10, ge=1)
    packing: bool = Field(default=False, description="pack samples into rows of pack_tokens, isolated per sample")
    pack_tokens: int = Field(default=4096, ge=64, description="token budget of one packed row")
    compile: bool = Field(default=False, description="torch.compile each decoder layer (needs packing)")
    stop_after: int | None = Field(default=None, ge=1, description="end the process after this step (tests a crash)")

    @model_validator(mode="after")
    def _compile_needs_packing(self) -> "TrainConfig":
        if self.compile and not self.packing:
            raise ValueError("train.compile needs train.packing: true (compiled layers are built for one row "
                             "length, pack_tokens)")
        return self


class EvalConfig(Strict):
    split: Literal["validation", "test"] = "test"
    batch_size: int = Field(default=8, ge=1)
    multi_label_threshold: float = Field(default=0.25, gt=0, lt=1)


class RayJobConfig(Strict):
    workers: int = Field(default=1, ge=1, description="Ray Train workers (one per GPU) for this job")
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=1.0, ge=0)
    max_failures: int = Field(default=2, ge=-1, description="worker-group restarts after a worker dies (-1: forever)")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class RunConfig(Strict):
    name: str = "run"
    seed: int = 42
    output: str = Field(default="runs/run", description="fsspec URL or path for checkpoints and results")
    resume: str = Field(default="auto", description="auto | never | a checkpoint tag such as step-000100")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for output")
    data: DataConfig
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ray: RayJobConfig = Field(default_factory=RayJobConfig, description="used when the run goes through Ray")

    @model_validator(mode="after")
    def _method_defaults(self) -> "RunConfig":
        if self.train.lr is None:
            self.train.lr = 2e-2 if self.method.name == "ptuning" else 5e-4
        return self

    @property
    def lr(self) -> float:
        assert self.train.lr is not None
        return self.train.lr


def _describe(model: type[BaseModel], loc: tuple) -> str:
    """The keys allowed at `loc`, so an error can say what would have been accepted."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return ""
        current = field.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return ", ".join(current.model_fields)
    return ""


def _format(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _describe(model or RunConfig, e["loc"])
            lines.append(f"unknown key '{key}'" + (f" (allowed here: {allowed})" if allowed else ""))
        elif e["type"] == "missing":
            lines.append(f"missing required key '{key}'")
        else:
            lines.append(f"key '{key}': {e['msg']} (got {e.get('input')!r})")
    return f"{source}: " + "; ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=1e-4)")
    key, raw = item.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{p}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def read_yaml(path: str) -> dict:
    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    return raw


def build_config(raw: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format(e, source)) from None


def load_config(path: str | None, overrides: list[str] = ()) -> RunConfig:
    raw = read_yaml(path) if path else {}
    raw = apply_overrides(raw, list(overrides))
    return build_config(raw, path or "overrides")


def resolve_repo_path(path: str) -> str:
    """Configs name shipped files relative to the repo (configs/deepspeed/zero2.json); find them anywhere."""
    p = Path(path)
    if p.exists() or p.is_absolute() or "://" in path:
        return path
    shipped = REPO_ROOT / path
    return str(shipped) if shipped.exists() else path


def dump(cfg: RunConfig) -> str:
    return json.dumps(cfg.model_dump(), indent=2)
