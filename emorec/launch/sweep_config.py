"""Sweep configs: datasets x methods x any grid of run keys, expanded into validated run configs."""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import Field, ValidationError

from emorec.config import (METHODS, Method, RunConfig, Strict, _format, apply_overrides, build_config, read_yaml,
                           resolve_repo_path)
from emorec.data import LOADERS
from emorec.errors import ConfigError
from emorec.launch.concurrency import WORKER_KEY


class SweepConfig(Strict):
    name: str = "sweep"
    output: str = Field(default="runs/sweep", description="each job writes under OUTPUT/<job name>")
    storage_options: dict[str, Any] = Field(default_factory=dict)
    base: str = Field(default="configs/runs/{dataset}_{method}.yaml", description="run config per job")
    datasets: list[str]
    methods: list[Method] = Field(default_factory=lambda: list(METHODS))
    data_root: str | None = Field(default=None, description="if set, data.path = DATA_ROOT/<dataset>")
    set: dict[str, Any] = Field(default_factory=dict, description="run keys applied to every job")
    per_method: dict[Method, dict[str, Any]] = Field(default_factory=dict)
    per_dataset: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="dataset -> run keys for its jobs, applied after set and per_method; "
                                          "under lora: or ptuning: only for that method's job")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="run key -> values: one job per combination")
    max_concurrent: int = Field(default=0, ge=0, description="jobs at once; 0 = as many as resources allow")


def load_sweep(path: str, overrides: list[str] = ()) -> SweepConfig:
    raw = apply_overrides(read_yaml(path), list(overrides))
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format(e, path, SweepConfig).replace("unknown key", "unknown sweep key")) from None


def load_jobs(path: str, overrides: list[str] = ()) -> tuple[SweepConfig, list[RunConfig]]:
    """The sweep at `path` and every one of its jobs, validated: what each launcher checks before it takes anything."""
    sweep = load_sweep(path, list(overrides))
    return sweep, expand(sweep)


def sweep_command(python: str, config: str, overrides: list[str] = ()) -> list[str]:
    """The command line that runs a sweep where a launcher puts it (a Ray Job's entrypoint, a Slurm job)."""
    return [python, "-m", "emorec.cli", "sweep", config, *overrides]


def _suffix(key: str, value: Any) -> str:
    return f"{key.split('.')[-1]}{value}"


def expand(sweep: SweepConfig) -> list[RunConfig]:
    """Every job's full run config, validated now so a typo fails before any cluster resource is taken."""
    jobs = []
    axes = list(sweep.grid.items())
    # A known dataset the sweep does not run (the quickstart with datasets=[meld]) is fine; anything else is a typo.
    unknown = [name for name in sweep.per_dataset if name not in sweep.datasets and name not in LOADERS]
    if unknown:
        raise ConfigError(f"per_dataset names {', '.join(map(repr, unknown))}, which is not a dataset of this sweep "
                          f"(expected one of: {', '.join(sweep.datasets)})")
    for dataset, method in itertools.product(sweep.datasets, sweep.methods):
        base_path = resolve_repo_path(sweep.base.format(dataset=dataset, method=method))
        for combo in itertools.product(*[values for _, values in axes]) if axes else [()]:
            raw = read_yaml(base_path)
            name = "_".join([f"{dataset}_{method}", *(_suffix(k, v) for (k, _), v in zip(axes, combo))])
            group = "_".join([f"{dataset}_{method}", *(_suffix(k, v) for (k, _), v in zip(axes, combo)
                                                      if k != WORKER_KEY)])
            items = {**_flat(sweep.set), **_flat(sweep.per_method.get(method, {})),
                     **_dataset_keys(sweep.per_dataset.get(dataset, {}), method),
                     **{k: v for (k, _), v in zip(axes, combo)}}
            overrides = [f"{k}={_yaml(v)}" for k, v in items.items()]
            overrides += [f"name={name}", f"output={sweep.output.rstrip('/')}/{name}"]
            if WORKER_KEY in sweep.grid:
                overrides.append(f"scaling_group={group}")
            if sweep.data_root:
                overrides.append(f"data.path={sweep.data_root.rstrip('/')}/{dataset}")
            raw = apply_overrides(raw, overrides)
            raw.setdefault("data", {})["dataset"] = raw.get("data", {}).get("dataset", dataset)
            raw.setdefault("method", {})["name"] = method
            raw["storage_options"] = {**sweep.storage_options, **raw.get("storage_options", {})}
            jobs.append(build_config(raw, f"{base_path} (job {name})"))
    if not jobs:
        raise ConfigError("sweep has no jobs: give at least one dataset and one method")
    return jobs


def _dataset_keys(keys: dict[str, Any], method: str) -> dict[str, Any]:
    """A per_dataset entry's run keys for one method's job: its own keys, then those under `lora:`/`ptuning:`."""
    scoped = {m: keys[m] for m in METHODS if m in keys}
    for m, value in scoped.items():
        if not isinstance(value, dict):
            raise ConfigError(f"per_dataset entry {m!r} must map run keys to values for the {m} job "
                              f"(e.g. {m}: {{train.lr: 0.01}}); got {value!r}")
    common = {k: v for k, v in keys.items() if k not in METHODS}
    return {**_flat(common), **_flat(scoped.get(method, {}))}


def _flat(keys: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} and {"train.lr": 1} both mean the one key train.lr, not a whole new section."""
    out: dict[str, Any] = {}
    for key, value in keys.items():
        if isinstance(value, dict) and value and not key.endswith(("options", "storage_options")):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _yaml(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else value
