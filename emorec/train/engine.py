"""The DeepSpeed engine: the ZeRO config with its 'auto' fields filled, and initialisation."""

from __future__ import annotations

import copy
import json
import logging

import torch

from emorec.config import RunConfig, resolve_repo_path
from emorec.dist import Dist, on_gpu
from emorec.errors import ConfigError
from emorec.model.adapters import trainable_parameters

log = logging.getLogger(__name__)


DS_SECTIONS = ("zero_optimization", "optimizer", "scheduler", "bf16", "fp16")  # mappings when present


def read_ds_config(path: str) -> dict:
    """The DeepSpeed JSON at `path` (resolved like every shipped config), as a mapping, or a ConfigError naming it."""
    resolved = resolve_repo_path(path)
    try:
        with open(resolved, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"train.deepspeed: DeepSpeed config not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"train.deepspeed: {resolved} is a directory, expected a DeepSpeed JSON file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"train.deepspeed: {resolved}: not a UTF-8 text file (byte {e.start}); expected a DeepSpeed "
                          "JSON object") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"train.deepspeed: {resolved} line {e.lineno}: not valid JSON: {e.msg}") from None
    except OSError as e:
        raise ConfigError(f"train.deepspeed: {resolved}: cannot be read ({e.strerror or e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"train.deepspeed: {resolved}: expected a JSON object ({{\"zero_optimization\": ...}}), "
                          f"got a JSON {_json_kind(raw)}")
    for key in DS_SECTIONS:
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"train.deepspeed: {resolved}: '{key}' must be a JSON object, got a JSON "
                              f"{_json_kind(raw[key])}")
    for section in ("optimizer", "scheduler"):
        if "params" in raw.get(section, {}) and not isinstance(raw[section]["params"], dict):
            raise ConfigError(f"train.deepspeed: {resolved}: '{section}.params' must be a JSON object, got a JSON "
                              f"{_json_kind(raw[section]['params'])}")
    stage = raw.get("zero_optimization", {}).get("stage", 0)
    if stage != "auto" and (isinstance(stage, bool) or stage not in (0, 1, 2, 3)):
        raise ConfigError(f"train.deepspeed: {resolved}: zero_optimization.stage must be 0-3, got {stage!r}")
    return raw


def _json_kind(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def fill_ds_config(raw: dict, cfg: RunConfig, world: int, bf16: bool) -> dict:
    """Replace every "auto" with the value from the run config; an "auto" left unknown is an error."""
    t = cfg.train
    values = {
        "train_batch_size": t.micro_batch_size * t.grad_accum * world,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": t.grad_clip,
        "bf16.enabled": bf16,
        "fp16.enabled": False,
        "optimizer.params.lr": cfg.lr,
        "optimizer.params.weight_decay": t.weight_decay,
        "scheduler.params.warmup_max_lr": cfg.lr,
        "scheduler.params.warmup_num_steps": max(1, t.warmup_steps),
        "scheduler.params.total_num_steps": max(t.max_steps, t.warmup_steps + 2),
    }
    ds = copy.deepcopy(raw)

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, dotted + ".")
            elif value == "auto":
                if dotted not in values:
                    raise ConfigError(f"train.deepspeed: emorec cannot fill \"auto\" at '{dotted}'; set a value")
                node[key] = values[dotted]

    walk(ds, "")
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise ConfigError(f"train.deepspeed: zero_optimization.stage must be 0-3, got {stage!r}")
    return ds


def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def create_engine(model: torch.nn.Module, cfg: RunConfig, dist: Dist):
    import deepspeed

    bf16 = on_gpu() and next(model.parameters()).dtype == torch.bfloat16
    ds_config = fill_ds_config(read_ds_config(cfg.train.deepspeed), cfg, dist.world, bf16)
    params = trainable_parameters(model)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=ds_config)
    return engine, ds_config
