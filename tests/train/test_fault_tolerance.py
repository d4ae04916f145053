"""Fault tolerance against a real S3 endpoint: a killed worker, a kill mid-upload, an endpoint outage."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import REPO, make_bucket, write_config
from safetensors.torch import load_file
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.distributed

BUCKET = "emorec-faults"


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def train_workers(ray) -> list[int]:
    """Pids of the Ray Train worker processes under this test's own raylet."""
    import psutil

    node = ray._private.worker._global_node
    raylet = node.all_processes["raylet"][0].process.pid
    kids = psutil.Process(raylet).children(recursive=True)
    return sorted(p.pid for p in kids if "RayTrainWorker" in " ".join(p.cmdline()) or "RayTrainWorker" in p.name())


def _job_config(tmp_path, fixtures_dir, output, **train):
    from emorec.config import load_config

    path = write_config(tmp_path / f"cfg-{abs(hash(output))}.yaml", fixtures_dir, "meld", "lora", output=output,
                        train={"max_steps": 30, "save_every": 5, "micro_batch_size": 8, "grad_accum": 1,
                               "upload_retries": 3, "upload_backoff_s": 0.2, **train},
                        data={"max_eval_samples": 8},
                        ray={"workers": 2, "cpus_per_worker": 0.5, "max_failures": 2})
    return load_config(str(path))


def _adapter(fs, root):
    local = f"/tmp/emorec-test-adapter-{os.getpid()}-{abs(hash(root))}.safetensors"
    fs.get(f"{root}/adapter/adapter_model.safetensors", local)
    return load_file(local)


def test_killed_worker_job_resumes_from_storage_and_matches_uninterrupted_run(ray_local, s3_endpoint, tmp_path,
                                                                               fixtures_dir):
    from emorec.launch.ray_train import run_job

    fs = make_bucket(BUCKET)
    outcome = {}

    def fit(run: str) -> threading.Thread:
        cfg = _job_config(tmp_path, fixtures_dir, f"s3://{BUCKET}/{run}")
        thread = threading.Thread(target=lambda: outcome.update({run: run_job(cfg)}))
        thread.start()
        return thread

    killed = fit("killed")
    _wait_for(lambda: fs.exists(f"{BUCKET}/killed/checkpoints/step-0000005/MANIFEST.json"), 240, "first checkpoint")
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/killed/checkpoints/step-0000030/MANIFEST.json")
    workers = train_workers(ray_local)
    assert len(workers) == 2
    # The uninterrupted run, on the cluster's other CPU while the killed one recovers: its workers start after the
    # pids above were taken, so only the first job loses one.
    full = fit("full")
    os.kill(workers[-1], signal.SIGKILL)
    killed.join(timeout=400)
    full.join(timeout=400)
    assert outcome["killed"]["steps"] == 30 and outcome["full"]["steps"] == 30

    fs.invalidate_cache()
    a, b = _adapter(fs, f"{BUCKET}/full"), _adapter(fs, f"{BUCKET}/killed")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    curve = lambda run: json.loads(fs.cat(f"{BUCKET}/{run}/train_curve.json"))  # noqa: E731
    assert curve("full") == curve("killed")


def _train_process(cfg_path, endpoint, *overrides):
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
    return subprocess.Popen([sys.executable, "-m", "emorec.cli", "train", str(cfg_path), "--no-progress", *overrides],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _manifests_are_whole(fs, root):
    tags = [p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/checkpoints") if "/step-" in p]
    complete = []
    for tag in sorted(tags):
        if fs.exists(f"{root}/checkpoints/{tag}/MANIFEST.json"):
            manifest = json.loads(fs.cat(f"{root}/checkpoints/{tag}/MANIFEST.json"))
            for rel, meta in manifest["files"].items():
                assert fs.size(f"{root}/checkpoints/{tag}/{rel}") == meta["size"], (tag, rel)
            complete.append(tag)
    return tags, complete


def test_kill_during_upload_leaves_no_manifest_and_resume_takes_the_previous(s3_endpoint, tmp_path, fixtures_dir):
    fs = make_bucket(BUCKET)
    root = f"{BUCKET}/upload-kill"
    proxy = TcpProxy(s3_endpoint["port"], delay_per_chunk_s=0.05).start()
    cfg = write_config(tmp_path / "c.yaml", fixtures_dir, "meld", "lora", output=f"s3://{root}",
                       train={"max_steps": 40, "save_every": 5, "micro_batch_size": 8, "grad_accum": 1},
                       data={"max_eval_samples": 8})
    proc = _train_process(cfg, f"http://127.0.0.1:{proxy.port}")
    try:
        def partial_after_complete():
            fs.invalidate_cache()
            if not fs.exists(f"{root}/checkpoints"):
                return False
            tags, complete = _manifests_are_whole(fs, root)
            return bool(complete) and any(t > complete[-1] and fs.ls(f"{root}/checkpoints/{t}") for t in tags)

        _wait_for(partial_after_complete, 240, "an upload in flight after a complete checkpoint", interval=0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proxy.stop()
    fs.invalidate_cache()
    tags, complete = _manifests_are_whole(fs, root)
    partial = [t for t in tags if t not in complete]
    assert partial and partial[-1] > complete[-1]

    proc = _train_process(cfg, s3_endpoint["url"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert f"resumed from {complete[-1]}" in err
    fs.invalidate_cache()
    _, complete_after = _manifests_are_whole(fs, root)
    assert complete_after[-1] == "step-0000040"


def test_endpoint_outage_fails_clearly_and_resume_loses_no_completed_step(s3_endpoint, tmp_path, fixtures_dir):
    fs = make_bucket(BUCKET)
    root = f"{BUCKET}/outage"
    proxy = TcpProxy(s3_endpoint["port"]).start()
    cfg = write_config(tmp_path / "c.yaml", fixtures_dir, "meld", "lora", output=f"s3://{root}",
                       train={"max_steps": 60, "save_every": 5, "micro_batch_size": 8, "grad_accum": 1,
                              "upload_retries": 3, "upload_backoff_s": 0.2},
                       data={"max_eval_samples": 8},
                       # short socket timeouts and no retries inside botocore: emorec's own retries are under test
                       storage_options={"config_kwargs": {"connect_timeout": 2, "read_timeout": 10,
                                                          "retries": {"max_attempts": 1}}})
    proc = _train_process(cfg, f"http://127.0.0.1:{proxy.port}")
    try:
        _wait_for(lambda: fs.exists(f"{root}/checkpoints/step-0000010/MANIFEST.json"), 240, "step 10 checkpoint")
        proxy.stop()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err[-3000:]
    assert "failed after 3 attempts" in err and "resume=auto" in err
    fs.invalidate_cache()
    _, complete = _manifests_are_whole(fs, root)
    last = complete[-1]
    assert last >= "step-0000010"

    proxy.start()
    try:
        proc = _train_process(cfg, f"http://127.0.0.1:{proxy.port}")
        out, err = proc.communicate(timeout=300)
    finally:
        proxy.stop()
    assert proc.returncode == 0, err[-3000:]
    assert f"resumed from {last}" in err
    curve = json.loads(fs.cat(f"{root}/train_curve.json"))
    assert [s for s, _ in curve] == list(range(1, 61))
