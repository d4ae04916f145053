"""Benchmarks of the cluster side: sweep makespan against the ideal, and checkpoint upload throughput
against a raw fsspec `put` of the same bytes. Commands that print figures, not timed tests."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from emorec.dist import SINGLE
from emorec.errors import EmorecError
from emorec.io.storage import open_store
from emorec.train.checkpoint import STATE, Checkpointer


def _moto() -> tuple[object, str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise EmorecError("bench-upload --start-moto needs moto's S3 server, which only the dev extra installs: "
                          "pip install 'emorec[dev]' (or 'moto[server]'), or drop --start-moto and give --url "
                          "an S3 endpoint of your own") from None

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    return server, os.environ["AWS_ENDPOINT_URL"]


def _shard_dir(root: str, total_mb: int, files: int) -> str:
    tag_dir = os.path.join(root, "step-0000001")
    os.makedirs(tag_dir)
    per_file = total_mb * (1 << 20) // files
    for i in range(files):
        with open(os.path.join(tag_dir, f"zero_pp_rank_{i}_mp_rank_00_optim_states.pt"), "wb") as f:
            f.write(os.urandom(per_file))
    with open(os.path.join(tag_dir, STATE), "w", encoding="utf-8") as f:
        json.dump({"step": 1, "curve": [[1, 0.0]]}, f)
    return tag_dir


def bench_upload(args: argparse.Namespace) -> dict:
    server = None
    if args.start_moto:
        server, endpoint = _moto()
        print(f"moto S3 endpoint on {endpoint}")
    store = open_store(args.url)
    if args.url.startswith("s3://"):
        bucket = args.url[5:].split("/", 1)[0]
        if not store.fs.exists(bucket):
            store.fs.mkdir(bucket)
    scratch = tempfile.mkdtemp(prefix="emorec-bench-upload-")
    tag_dir = _shard_dir(scratch, args.mb, args.files)
    size = sum(os.path.getsize(os.path.join(tag_dir, n)) for n in os.listdir(tag_dir))
    raw, ours = [], []
    for round_ in range(args.rounds):
        store.fs.makedirs(store.path(f"raw-{round_}"), exist_ok=True)  # a local folder needs it; S3 has no folders
        started = time.perf_counter()
        for name in sorted(os.listdir(tag_dir)):
            store.fs.put_file(os.path.join(tag_dir, name), store.path(f"raw-{round_}", name))
        raw.append(time.perf_counter() - started)
        ckpt = Checkpointer(open_store(store.url.rstrip("/") + f"/emorec-{round_}"), SINGLE, scratch, keep_last=1)
        started = time.perf_counter()
        ckpt.upload_shard(tag_dir, "step-0000001")
        ours.append(time.perf_counter() - started)
    if server is not None:
        server.stop()
    result = {
        "bytes": size, "files": args.files + 1, "rounds": args.rounds,
        "raw_put_s": raw, "emorec_upload_s": ours,
        "raw_mb_s": size / 1e6 / statistics.median(raw), "emorec_mb_s": size / 1e6 / statistics.median(ours),
    }
    result["ratio"] = result["emorec_mb_s"] / result["raw_mb_s"]
    print(f"checkpoint upload, {size / 1e6:.0f} MB in {args.files + 1} files to {args.url}, median of {args.rounds}:")
    print(f"  raw fsspec put_file   {result['raw_mb_s']:8.1f} MB/s")
    print(f"  emorec upload_shard   {result['emorec_mb_s']:8.1f} MB/s  (sha256 of every file, parts, manifest)")
    print(f"  ratio                 {result['ratio']:8.2f}x  (target >= 0.8)")
    return result


def bench_sweep(args: argparse.Namespace) -> dict:
    """The quickstart's sweep (the same fixtures and config), timed: its makespan against the ideal."""
    from emorec.launch.quickstart import fixture_sweep
    from emorec.launch.sweep import run_sweep

    rows = run_sweep(fixture_sweep(args.out, args.overrides))
    with open(os.path.join(args.out, "results.json"), encoding="utf-8") as f:
        summary = json.load(f)
    times = [r["wall_seconds"] for r in rows if "wall_seconds" in r]
    ideal = sum(times) / summary["max_concurrent"]
    result = {"jobs": len(rows), "slots": summary["max_concurrent"], "sum_job_s": sum(times),
              "ideal_s": ideal, "makespan_s": summary["makespan_s"], "ratio": summary["makespan_s"] / ideal}
    print(f"sweep of {len(rows)} jobs, {result['slots']} slots: sum of job times {sum(times):.1f}s, "
          f"ideal {ideal:.1f}s, makespan {result['makespan_s']:.1f}s -> {result['ratio']:.2f}x ideal (target <= 1.15)")
    return result
