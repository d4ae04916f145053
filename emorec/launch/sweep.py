"""A sweep: many (dataset, method, ...) jobs at once on one Ray cluster, through Ray Tune.

Each Tune trial is a light driver that fits one job's TorchTrainer; Tune runs trials side by side
up to the concurrency limit, and a failed job is recorded while the others go on.
"""

from __future__ import annotations

import logging
import os
import time

from emorec.config import RunConfig
from emorec.errors import ConfigError
from emorec.io.secrets import hidden_from_ray
from emorec.io.storage import open_store
from emorec.launch.concurrency import concurrency_for, scaling_warnings
from emorec.launch.ray_train import absolute_paths, pyarrow_filesystem, run_job
from emorec.launch.results import results_table
from emorec.launch.sweep_config import SweepConfig, expand

log = logging.getLogger(__name__)


def check_address() -> None:
    """If RAY_ADDRESS is set, one bounded connect to it: a stale address fails in seconds, naming it."""
    from emorec.launch.ray_jobs import check_reachable

    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address, "RAY_ADDRESS")


def connect(num_cpus: int | None = None) -> None:
    """Join RAY_ADDRESS if set, else start a local cluster that listens on loopback only."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # Ray processes find their own address; this keeps a one-machine cluster on loopback throughout.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return
    if address:
        check_address()
        from ray.exceptions import RayError

        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError, TimeoutError, ValueError, RayError) as e:  # one line naming it
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            from emorec.launch.ray_jobs import _redact_url

            raise ConfigError(f"RAY_ADDRESS={_redact_url(address)}: cannot join the Ray cluster there: "
                              f"{first}") from None
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")


def _driver(config: dict, jobs: dict[str, RunConfig], credentials: dict[str, str], prepared: dict) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = jobs[config["job"]]
    metrics = run_job(cfg, callbacks=[TuneReportCallback()], credentials=credentials, prepared=prepared[config["job"]])
    ray.tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))} | {"done": True})


def default_concurrency(jobs: list[RunConfig]) -> int:
    import ray

    cpus = ray.cluster_resources().get("CPU", 1)
    per_job = max(j.ray.workers * j.ray.cpus_per_worker for j in jobs)
    return max(1, int(cpus // per_job))


def run_sweep(sweep: SweepConfig) -> list[dict]:
    from emorec.train.recipe import preflight  # not at the top: every Tune trial imports this module for _driver

    check_address()  # before anything slow: a stale RAY_ADDRESS is the first thing to hear about
    jobs = [absolute_paths(cfg) for cfg in expand(sweep)]
    checked = {cfg.name: preflight(cfg).prepared for cfg in jobs}  # every job, once, before anything is scheduled
    log.info("sweep %s: %d jobs", sweep.name, len(jobs))
    connect()
    import ray

    prepared = {name: ray.put(data) for name, data in checked.items()}
    store = open_store(sweep.output, sweep.storage_options, training=True)
    concurrency = concurrency_for(sweep, sweep.max_concurrent or default_concurrency(jobs))
    for warning in scaling_warnings(sweep):
        log.warning("%s", warning)
    by_name = {cfg.name: cfg for cfg in jobs}
    started = time.perf_counter()
    # Ray Tune's storage is this store's filesystem: it connects (and keeps the credentials it finds) before they go.
    with hidden_from_ray(store.fs) as credentials:
        rows = _tune(sweep, store, by_name, concurrency, credentials, prepared)
    makespan = time.perf_counter() - started
    table = results_table(rows)
    print(table)
    print(f"{len(rows)} jobs, {sum(r['status'] == 'ok' for r in rows)} ok, makespan {makespan:.1f}s, "
          f"{concurrency} at a time")
    store.write_bytes("results.md", (table + "\n").encode("utf-8"))
    store.write_json("results.json", {"jobs": rows, "makespan_s": makespan, "max_concurrent": concurrency})
    return rows


def _tune(sweep: SweepConfig, store, by_name: dict[str, RunConfig], concurrency: int, credentials,
          prepared: dict) -> list[dict]:
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_driver, jobs=by_name, credentials=credentials, prepared=prepared),
                            {"cpu": 0.01}),
        param_space={"job": tune.grid_search(list(by_name))},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name="tune", storage_path=store.root, storage_filesystem=pyarrow_filesystem(store),
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False), verbose=1),
    )
    grid = tuner.fit()
    rows = []
    for result in grid:
        name = result.config["job"]
        cfg = by_name[name]
        if result.error is not None:
            rows.append({"name": name, "dataset": cfg.data.dataset, "method": cfg.method.name,
                         "status": "failed", "error": _first_line(result.error)})
        else:
            rows.append({**result.metrics, "name": name, "status": "ok"})
    rows.sort(key=lambda r: list(by_name).index(r["name"]))
    return rows


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]
