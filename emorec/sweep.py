"""Run every job of a sweep and collect a results table."""

from __future__ import annotations

import logging
import time

from .results import results_table
from .storage import open_store
from .sweep_config import SweepConfig, expand

log = logging.getLogger(__name__)


def run_local(jobs) -> list[dict]:
    """One job after another in this process; a failed job is recorded and the others go on."""
    from .train import run

    results = []
    for cfg in jobs:
        started = time.perf_counter()
        try:
            result = run(cfg, show_progress=False)
            result["status"] = "ok"
        except Exception as e:  # a failed job must not stop the sweep
            log.exception("job %s failed", cfg.name)
            result = {"name": cfg.name, "dataset": cfg.data.dataset, "method": cfg.method.name,
                      "status": f"failed: {type(e).__name__}: {e}"[:200]}
        result.setdefault("train_seconds", time.perf_counter() - started)
        results.append(result)
    return results


def run_sweep(sweep: SweepConfig) -> list[dict]:
    jobs = expand(sweep)
    log.info("sweep %s: %d jobs", sweep.name, len(jobs))
    results = run_local(jobs)
    table = results_table(results)
    print(table)
    store = open_store(sweep.output, sweep.storage_options)
    store.write_bytes("results.md", (table + "\n").encode("utf-8"))
    store.write_json("results.json", results)
    return results
