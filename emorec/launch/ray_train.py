"""One (dataset, method) job as a Ray Train run: a TorchTrainer whose workers run the same recipe as
`emorec train`, on Ray's process group, checkpointing through Ray into the run's storage."""

from __future__ import annotations

import logging
import os
import shutil
import time

from emorec.config import RunConfig, build_config, resolve_repo_path
from emorec.io.paths import absolute
from emorec.io.secrets import hidden_from_ray, install
from emorec.io.storage import open_store

log = logging.getLogger(__name__)

HEALTH_CHECK_INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
RAY_RUN_NAME = "checkpoints"  # Ray's experiment dir is OUTPUT/checkpoints, beside emorec's own files


def pyarrow_filesystem(store):
    """Ray Train's storage, on the same fsspec filesystem emorec uses (pyarrow's FSSpecHandler bridges them)."""
    import pyarrow.fs

    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(store.fs))


def ray_publisher(tag_dir: str, tag: str, upload) -> None:
    """Every rank reports its own shard; Ray uploads them asynchronously through emorec's uploader."""
    import ray.train
    from ray.train import Checkpoint, CheckpointUploadMode

    storage = ray.train.get_context().get_storage()

    def upload_fn(checkpoint: Checkpoint, dir_name: str) -> Checkpoint:
        upload(checkpoint.path, dir_name)
        shutil.rmtree(os.path.dirname(checkpoint.path), ignore_errors=True)
        return Checkpoint(path=f"{storage.experiment_fs_path}/{dir_name}", filesystem=storage.storage_filesystem)

    ray.train.report({"checkpoint": tag, "step": int(tag.split("-")[1])},
                     checkpoint=Checkpoint.from_directory(tag_dir), checkpoint_dir_name=tag,
                     checkpoint_upload_mode=CheckpointUploadMode.ASYNC, checkpoint_upload_fn=upload_fn,
                     delete_local_checkpoint_after_upload=False)


def worker_loop(config: dict) -> None:
    import ray
    import ray.train

    from emorec.train.recipe import run

    secrets = ray.get(config["secrets"])
    install(secrets["env"])
    raw = dict(config["cfg"])
    raw["storage_options"] = secrets["storage_options"]
    cfg = build_config(raw, f"job {raw.get('name')}")
    prepared = ray.get(config["prepared"]) if config.get("prepared") is not None else None
    result = run(cfg, show_progress=False, publisher=ray_publisher, prepared=prepared)
    ray.train.report({k: v for k, v in result.items() if isinstance(v, (int, float, str))})


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """Ray workers start in another directory: pin the driver's relative paths."""
    out = cfg.model_copy(deep=True)
    out.output = absolute(cfg.output)
    out.data.path = absolute(cfg.data.path)
    out.train.deepspeed = absolute(resolve_repo_path(cfg.train.deepspeed))
    return out


def make_trainer(cfg: RunConfig, *, callbacks=None, credentials: dict[str, str] | None = None, store=None,
                 prepared=None):
    """A TorchTrainer for this run. Credentials and storage_options travel as an object ref, not as config; so does
    `prepared` (the driver's checked data, an object ref), which spares every worker loading the dataset."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    store = store or open_store(cfg.output, cfg.storage_options, training=True)
    rc = cfg.ray
    resources = {"CPU": rc.cpus_per_worker}
    if rc.use_gpu:
        resources["GPU"] = rc.gpus_per_worker
    public = absolute_paths(cfg).model_dump()
    public["storage_options"] = {}
    loop_config = {"cfg": public, "secrets": ray.put({"env": credentials or {}, "storage_options": cfg.storage_options}),
                   "prepared": prepared}
    return TorchTrainer(
        worker_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if rc.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=rc.workers, use_gpu=rc.use_gpu, resources_per_worker=resources,
                                     placement_strategy=rc.placement_strategy),
        run_config=RayRunConfig(
            name=RAY_RUN_NAME, storage_path=store.root, storage_filesystem=pyarrow_filesystem(store),
            failure_config=FailureConfig(max_failures=rc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            callbacks=callbacks,
        ),
    )


def run_job(cfg: RunConfig, *, callbacks=None, credentials: dict[str, str] | None = None, prepared=None) -> dict:
    """Fit one job on the connected Ray cluster and return its metrics.json. `prepared`: an object ref to the
    `Prepared` data of a driver that has preflighted this job; without it the job is checked here first."""
    import ray

    install(credentials)
    os.environ[HEALTH_CHECK_INTERVAL] = str(cfg.ray.poll_interval_s)  # Ray Train hands it to the controller it starts
    started = time.perf_counter()
    if prepared is None:
        from emorec.train.recipe import preflight

        prepared = ray.put(preflight(cfg).prepared)
    store = open_store(cfg.output, cfg.storage_options, training=True)
    with hidden_from_ray(store.fs) as creds:  # Ray Train's storage is this filesystem: connected first
        trainer = make_trainer(cfg, callbacks=callbacks, credentials={**creds, **(credentials or {})}, store=store,
                               prepared=prepared)
        trainer.fit()
    metrics = store.read_json("metrics.json")
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    return metrics
