"""The training recipe: setup -> train -> save/resume -> export -> evaluate. Reads top to bottom.

Runs as one process, under torchrun, or inside a Ray Train worker: the process group comes from
the environment, and every rank executes this same function.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from emorec.config import RunConfig
from emorec.data import load_dataset
from emorec.data.schema import DatasetSpec, Example, spec_to_json
from emorec.dist import SINGLE, setup_distributed
from emorec.errors import CheckpointError, ConfigError, DataError
from emorec.eval.evaluate import evaluate
from emorec.eval.metrics import METRICS, PRIMARY
from emorec.io.secrets import redact_text, redacted_config
from emorec.io.storage import RunStore, open_store
from emorec.model.adapters import apply_adapter, trainable_parameters
from emorec.model.families import check_model, compile_decoder_layers, load_model
from emorec.model.packed_lm import PackedCausalLM, num_prefix_tokens
from emorec.text.batches import training_features
from emorec.train.batching import batching
from emorec.train.checkpoint import CHECKPOINTS, Checkpointer, Publisher
from emorec.train.engine import create_engine, fill_ds_config, read_ds_config, zero_stage
from emorec.train.export import export_adapter
from emorec.train.prefetch import Prefetcher
from emorec.train.tensorboard import write_tensorboard
from emorec.train.throughput import Throughput, batch_counts, model_facts

log = logging.getLogger(__name__)


class StoppedEarly(Exception):
    """Raised after `train.stop_after` steps, once the checkpoint of that step is safe."""


def load_data(cfg: RunConfig):
    ds = load_dataset(cfg.data.dataset, cfg.data.path, on_bad_row=cfg.data.on_bad_row, seed=cfg.seed,
                      options=cfg.data.options)
    train = ds.splits["train"][: cfg.data.max_train_samples]
    held_out = ds.splits[cfg.eval.split][: cfg.data.max_eval_samples]
    for split, examples in (("train", train), (cfg.eval.split, held_out)):
        if not examples:
            raise DataError(f"{cfg.data.dataset} at {cfg.data.path}: the {split} split is empty")
    return ds, train, held_out


@dataclass
class Prepared:
    """What a driver's preflight hands the processes that train a run, so that none of them checks or loads it
    again: the dataset's spec and the two splits the run uses."""

    spec: DatasetSpec
    train: list[Example]
    held_out: list[Example]


@dataclass
class Checked:
    """What preflight found: where the run lives, the checkpoint to resume from, and the data it trains on."""

    store: RunStore
    tag: str | None
    prepared: Prepared
    fetched: dict[str, str] = field(default_factory=dict)  # the resume checkpoint's verified local copy


def _store(cfg: RunConfig) -> RunStore:
    try:
        return open_store(cfg.output, cfg.storage_options, retries=cfg.train.upload_retries,
                          backoff_s=cfg.train.upload_backoff_s, training=True)
    except ConfigError as e:
        raise ConfigError(f"output: {e}") from None


def _stage(cfg: RunConfig) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return zero_stage(fill_ds_config(read_ds_config(cfg.train.deepspeed), cfg, world, bf16=False))


def preflight(cfg: RunConfig, scratch: str | None = None) -> Checked:
    """Everything that can be wrong with the user's input, checked before any process group or model: config, data,
    the output folder (whose run it holds), and the checkpoint to resume from, verified byte for byte: in place,
    or, with `scratch` (a process about to train), by downloading it there for the run to load."""
    stage = _stage(cfg)
    check_model(cfg.model)
    store = _store(cfg)
    check_output(store, cfg)
    ds, train, held_out = load_data(cfg)
    check_metric(cfg, ds.spec)
    ckpt = Checkpointer(store, SINGLE, scratch or "", cfg.train.keep_last, zero_stage=stage)
    tag = ckpt.resolve(cfg.resume, fetch=scratch is not None)
    return Checked(store, tag, Prepared(ds.spec, train, held_out), ckpt.fetched)


def resume_point(cfg: RunConfig, scratch: str, prepared: Prepared) -> Checked:
    """For a run its driver has preflighted: only where it lives and the checkpoint to resume from, chosen now (a
    restarted worker takes the newest one, which may postdate the driver's check) and fetched into `scratch`."""
    store = _store(cfg)
    ckpt = Checkpointer(store, SINGLE, scratch, cfg.train.keep_last, zero_stage=_stage(cfg))
    return Checked(store, ckpt.resolve(cfg.resume, fetch=True), prepared, ckpt.fetched)


# What makes a run the same run: resuming under any other value would mix two runs' work.
IDENTITY = (("name",), ("data", "dataset"), ("method", "name"), ("model", "name"))


def _at(raw, path: tuple[str, ...]):
    for part in path:
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def differences(theirs: dict, mine: dict) -> list[str]:
    """The identity keys in which two run configs differ (the method's own settings too, when the method is the same:
    they shape the adapter)."""
    keys = list(IDENTITY)
    method = _at(mine, ("method", "name"))
    if _at(theirs, ("method", "name")) == method:
        fields = {**_mapping(_at(theirs, ("method", method))), **_mapping(_at(mine, ("method", method)))}
        keys += [("method", method, f) for f in fields]
    return [f"{'.'.join(k)} {_at(theirs, k)!r} (this config: {_at(mine, k)!r})" for k in keys
            if _at(theirs, k) != _at(mine, k)]


def check_output(store, cfg: RunConfig) -> None:
    """The output folder is new, or holds this same run: never another run's checkpoints, config or results. With
    resume=never it must hold no checkpoints at all (a fresh run's would be pruned against the old ones)."""
    where = redact_text(store.url)
    tags = [t for t in store.listdir(CHECKPOINTS) if t.startswith("step-")]
    if not store.exists("config.json"):
        if tags:
            raise CheckpointError(f"output {where} holds checkpoints ({', '.join(tags)}) but no config.json: cannot "
                                  "tell whose run they are. Set output to a new folder")
        return
    try:
        stored = json.loads(store.read_bytes("config.json").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where}/config.json: not valid JSON ({e}); is output another tool's folder?") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("data"), dict):
        raise CheckpointError(f"{where}/config.json is not an emorec run config; set output to a new folder")
    diffs = differences(stored, redacted_config(cfg))
    name = stored.get("name")
    if diffs:
        raise CheckpointError(
            f"output {where} holds another run: '{name}' ({_at(stored, ('method', 'name'))} on "
            f"{_at(stored, ('data', 'dataset'))}, model {_at(stored, ('model', 'name'))}); it differs in "
            f"{'; '.join(diffs)}. Set output to a new folder, or resume that run with its own config")
    if cfg.resume == "never" and tags:
        raise CheckpointError(
            f"resume=never, but output {where} already holds checkpoints {', '.join(tags)} of run '{name}': "
            "a new run there would be pruned against them. Use resume=auto to continue it, remove them, or set output "
            "to a new folder")


def check_metric(cfg: RunConfig, spec) -> None:
    key = "data.options.metric" if "metric" in cfg.data.options else f"the metric of dataset {spec.name}"
    if spec.metric not in METRICS:
        known = ", ".join(m + (f" (reports {PRIMARY[m]})" if PRIMARY[m] != m else "") for m in METRICS)
        raise ConfigError(f"{key}={spec.metric!r} is not a metric emorec computes; choose one of {known}")
    if spec.multi_label and spec.metric != "multilabel_macro_f1":
        raise ConfigError(f"{key}={spec.metric!r}: dataset {spec.name} is multi-label, scored only with "
                          "multilabel_macro_f1")


def agreed(tag: str | None, dist) -> str | None:
    """Every rank resumes from the same checkpoint, or none does."""
    if dist.world > 1:
        tags = [None] * dist.world
        torch.distributed.all_gather_object(tags, tag)
        if len(set(tags)) > 1:
            raise CheckpointError(f"ranks chose different checkpoints to resume from ({tags}); storage changed "
                                  "during start-up? Re-run with resume=auto")
    return tag


def run(cfg: RunConfig, *, show_progress: bool = True, publisher: Publisher | None = None,
        prepared: Prepared | None = None) -> dict:
    """Train, checkpoint, export and evaluate one run. `prepared`: its driver's preflight already checked the input
    and loaded the data (a sweep's jobs), so this process only picks the checkpoint to resume from."""
    throughput = Throughput()
    scratch = tempfile.mkdtemp(prefix="emorec-")
    try:
        checked = preflight(cfg, scratch) if prepared is None else resume_point(cfg, scratch, prepared)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)  # bad input leaves nothing behind
        raise
    store, prepared = checked.store, checked.prepared
    spec, train_examples, eval_examples = prepared.spec, prepared.train, prepared.held_out
    dist = setup_distributed()
    tag = agreed(checked.tag, dist)
    from transformers import set_seed

    set_seed(cfg.seed + dist.rank)

    loaded = load_model(cfg.model)
    model = apply_adapter(loaded.model, cfg.method, loaded.family, loaded.name, cfg.seed)
    if cfg.train.compile:
        compile_decoder_layers(loaded.model)
    tokenizer = loaded.tokenizer
    features = training_features(train_examples, spec, tokenizer, cfg.prompt)
    order, make_batch = batching(cfg, features, dist, tokenizer.pad_token_id, num_prefix_tokens(model))
    n_train = sum(p.numel() for p in trainable_parameters(model))
    facts = model_facts(model, micro_batch_size=cfg.train.micro_batch_size, grad_accum=cfg.train.grad_accum)
    engine, ds_config = create_engine(PackedCausalLM(model), cfg, dist)
    stage = zero_stage(ds_config)
    facts["zero_stage"] = stage
    if dist.is_main:
        store.write_json("config.json", redacted_config(cfg))
        store.write_json("spec.json", spec_to_json(spec))
        log.info("%s: %s on %s, %d train features, %d trainable params, ZeRO-%d, world %d",
                 cfg.name, cfg.method.name, spec.name, len(features), n_train, stage, dist.world)

    ckpt = Checkpointer(store, dist, scratch, cfg.train.keep_last, publisher=publisher, zero_stage=stage,
                        fetched=checked.fetched)
    state = {"step": 0, "curve": [], "elapsed_s": 0.0}
    if tag:
        state = ckpt.load(engine, tag)
        if dist.is_main:
            log.info("resumed from %s at step %d", tag, state["step"])

    ga, device = cfg.train.grad_accum, engine.device
    batches = Prefetcher(make_batch, order, device, engine.module)
    step = state["step"]
    bar = tqdm(total=cfg.train.max_steps, initial=step, desc=f"train {cfg.name}", unit="step",
               disable=not (show_progress and dist.is_main))
    engine.train()
    started = time.perf_counter() - state["elapsed_s"]
    throughput.start()
    while step < cfg.train.max_steps:
        total = torch.zeros((), dtype=torch.float64)
        samples = tokens = 0
        for micro in range(ga):
            k = step * ga + micro
            batch, on_device = batches.get(k)
            n_samples, n_tokens = batch_counts(batch)
            samples, tokens = samples + n_samples, tokens + n_tokens
            loss = engine(**on_device).loss
            engine.backward(loss)
            if k + 1 < cfg.train.max_steps * ga:
                batches.prefetch(k + 1)
            engine.step()
            total += loss.detach().double().cpu()
        if dist.world > 1:
            torch.distributed.all_reduce(total)
        step += 1
        throughput.step(samples, tokens)
        loss_value = float(total) / (ga * dist.world)
        state["curve"].append([step, loss_value])
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if dist.is_main and step % cfg.train.log_every == 0:
            log.info("step %d loss %.4f lr %.3g", step, loss_value, engine.get_lr()[0])
        if step % cfg.train.save_every == 0 or step == cfg.train.max_steps:
            state.update(step=step, elapsed_s=time.perf_counter() - started,
                         micro_batches_seen=step * ga, epoch=order.epoch_of(step * ga))
            with throughput.paused():
                ckpt.save(engine, step, state)
        if cfg.train.stop_after is not None and step >= cfg.train.stop_after and step < cfg.train.max_steps:
            bar.close()
            ckpt.close()
            raise StoppedEarly(f"stopped after step {step} as train.stop_after asks")
    bar.close()
    ckpt.close()

    export_adapter(engine, stage, store, dist)
    engine.eval()
    metrics, rows = evaluate(engine, spec, eval_examples, tokenizer, cfg, dist, device, show_progress=show_progress)
    result = {
        "name": cfg.name, "dataset": spec.name, "method": cfg.method.name, "split": cfg.eval.split,
        "steps": step, "train_seconds": round(time.perf_counter() - started, 3), "world_size": dist.world,
        "final_loss": state["curve"][-1][1] if state["curve"] else None, **metrics,
        **throughput.summary(), **facts,
    }
    if cfg.scaling_group:
        result["scaling_group"] = cfg.scaling_group
    if dist.is_main:
        store.write_json("metrics.json", result)
        store.write_bytes("predictions.jsonl", "\n".join(map(_json, rows)).encode("utf-8") + b"\n")
        write_tensorboard(store, state["curve"], result)
        log.info("%s: %s = %.4f on %s (%d examples)", cfg.name, metrics["primary"], metrics["value"],
                 cfg.eval.split, metrics["n"])
    if publisher is None:  # otherwise the publisher's uploads may still be reading the staged shards
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def _json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)
