"""`emorec bench` (one model's training and eval speed), `bench-upload` and `bench-sweep` (a sweep's makespan).
The parsers only: each command imports its work when it runs, so that building emorec's parser stays light."""

from __future__ import annotations

import argparse
import json

from emorec.bench.shapes import SHAPES
from emorec.config import METHODS


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=[*METHODS, "both"], default="both")
    p.add_argument("--shape", choices=SHAPES, default="glm4-9b",
                   help="full-size model shape built on a GPU, random weights (on CPU the bench uses tiny-glm)")
    p.add_argument("--steps", type=int, default=None,
                   help="baseline steps per round, and the data size: emorec's rounds are whole epochs over the "
                        "same data (default: 10 GPU, 8 CPU; CPU takes the best of 3 rounds)")
    p.add_argument("--budget", type=int, nargs="+", default=None,
                   help="tokens per packed row; several give a training row each (with --compile the eager rows take only "
                        "the first; default: 8192 GPU, 512 CPU)")
    p.add_argument("--quick", action="store_true", help="fewer steps and eval batches")
    p.add_argument("--compile", action="store_true",
                   help="also time emorec's side with torch.compile on each decoder layer (train rows)")
    p.add_argument("--compiled-only", action="store_true", help="with --compile, skip the eager emorec rows")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="profile this many training steps of each emorec row set, at its largest budget "
                        "(device time by kernel group, top kernels, host-side calls)")
    p.add_argument("--no-eval", action="store_true", help="skip the label-scoring vs generate-and-parse rows")
    p.add_argument("--out", default="bench.json", help="where to write the JSON results")


def cmd_bench(args: argparse.Namespace) -> int:
    from emorec.bench import model

    return model.cmd_bench(args)


def _write(result: dict, path: str | None) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


def cmd_bench_upload(args: argparse.Namespace) -> int:
    from emorec.bench.cluster import bench_upload

    _write(bench_upload(args), args.json)
    return 0


def cmd_bench_sweep(args: argparse.Namespace) -> int:
    from emorec.bench.cluster import bench_sweep

    _write(bench_sweep(args), args.json)
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="emorec's training/eval paths vs a plain transformers+peft loop")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    u = sub.add_parser("bench-upload", help="checkpoint upload throughput vs a raw fsspec put of the same bytes")
    u.add_argument("--url", default="s3://emorec-bench/upload", help="where to upload (any fsspec URL)")
    u.add_argument("--start-moto", action="store_true", help="start a loopback S3 endpoint (moto) for the run")
    u.add_argument("--mb", type=int, default=256, help="total shard size")
    u.add_argument("--files", type=int, default=4)
    u.add_argument("--rounds", type=int, default=3)
    u.add_argument("--json", help="also write the figures here")
    u.set_defaults(func=cmd_bench_upload)

    s = sub.add_parser("bench-sweep", help="the quickstart sweep's makespan against sum(job times) / slots",
                       description="Run the quickstart's sweep (fixtures, configs/quickstart.yaml) and print its "
                                   "makespan against the ideal: the sum of job times over the slots. Overrides set "
                                   "sweep keys, e.g. max_concurrent=2 set.train.max_steps=60.")
    s.add_argument("--out", default="runs/bench-sweep")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    s.add_argument("--json", help="also write the figures here")
    s.set_defaults(func=cmd_bench_sweep)
