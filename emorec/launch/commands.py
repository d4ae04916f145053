"""`emorec sweep` and `emorec quickstart`; `emorec submit`/`job` (Ray Job API) and `emorec slurm` register beside them."""

from __future__ import annotations


def cmd_sweep(args) -> int:
    from emorec.launch.sweep import run_sweep
    from emorec.launch.sweep_config import load_sweep

    rows = run_sweep(load_sweep(args.config, args.overrides))
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


def cmd_quickstart(args) -> int:
    from emorec.launch.quickstart import quickstart

    return quickstart(args.out, overrides=args.overrides)


def register(sub) -> None:
    sw = sub.add_parser("sweep", help="run many jobs (datasets x methods x grid) in parallel on a Ray cluster",
                        description="Run a sweep config (see configs/quickstart.yaml, configs/sweeps/). Joins the "
                                    "cluster at RAY_ADDRESS, or starts a local one on 127.0.0.1. Each job is a Ray "
                                    "Train run of ray.workers DeepSpeed workers; overrides set sweep keys, e.g. "
                                    "max_concurrent=4 set.train.max_steps=100 datasets=[meld,iemocap].")
    sw.add_argument("config")
    sw.add_argument("overrides", nargs="*", metavar="key=value")
    sw.set_defaults(func=cmd_sweep)

    q = sub.add_parser("quickstart", help="train all six datasets x both methods on the tiny model and print a table")
    q.add_argument("--out", default="runs/quickstart", help="where fixtures, runs and the table go")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="sweep keys, e.g. set.train.max_steps=50")
    q.set_defaults(func=cmd_quickstart)

    from emorec.launch import ray_jobs, slurm

    ray_jobs.register(sub)
    slurm.register(sub)
