"""Ray + object storage: a sweep on a local Ray cluster checkpoints shard-per-rank into a real S3
endpoint (moto's server on loopback), with manifests, and no secret leaks anywhere."""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml
from conftest import REPO, SECRET, make_bucket, make_bucket_elsewhere, s3_env

pytestmark = pytest.mark.distributed

BUCKET = "emorec-sweep"


def sweep_config(tmp_path, fixtures_dir, output: str, datasets=("carer", "meld"), methods=("lora", "ptuning"), **set_):
    from emorec.launch.sweep_config import SweepConfig

    settings = {
        "model.name": "tiny-glm", "prompt.max_length": 256, "prompt.history": 1, "eval.batch_size": 64,
        "train.max_steps": 6, "train.save_every": 2, "train.micro_batch_size": 4, "train.grad_accum": 1,
        "train.upload_retries": 3, "train.upload_backoff_s": 0.2, "data.max_eval_samples": 16,
        "ray.workers": 2, "ray.cpus_per_worker": 0.5, **set_,
    }
    return SweepConfig(name="t", output=output, datasets=list(datasets), methods=list(methods),
                       data_root=str(fixtures_dir), set=settings, max_concurrent=2,
                       per_method={"lora": {"train.lr": 1e-2}, "ptuning": {"train.lr": 1e-1,
                                                                           "method.ptuning.pre_seq_len": 8}})


def test_sweep_checkpoints_every_rank_into_s3_with_manifests_and_no_secret(s3_endpoint, tmp_path, fixtures_dir):
    """The user's path: `emorec sweep` in a fresh process with its own local Ray cluster, the credentials only in the
    standard environment variables, and the bucket made beforehand by another process."""
    import s3fs

    env = s3_env(s3_endpoint)
    make_bucket_elsewhere(BUCKET, env)
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_config(tmp_path, fixtures_dir, f"s3://{BUCKET}/sweep1").model_dump()))
    ray_tmp = tempfile.mkdtemp(prefix="emo-r-", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    env["RAY_TMPDIR"] = ray_tmp
    try:
        r = subprocess.run([sys.executable, "-m", "emorec.cli", "sweep", str(config)], capture_output=True, text=True,
                           timeout=900, cwd=REPO, env=env)
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
        assert "NoCredentialsError" not in r.stderr and "4 jobs, 4 ok" in r.stdout, r.stdout[-2000:]
        # The secret key was in the environment of every process; it must appear in nothing written.
        assert SECRET not in r.stdout + r.stderr
        scanned = 0
        for path in glob.glob(os.path.join(ray_tmp, "**", "*"), recursive=True):
            if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) < 50_000_000:
                with open(path, "rb") as f:
                    assert SECRET.encode() not in f.read(), path
                scanned += 1
        assert scanned > 10  # Ray's session logs were there to be read
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for job in ("carer_lora", "carer_ptuning", "meld_lora", "meld_ptuning"):
        root = f"{BUCKET}/sweep1/{job}"
        tags = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/checkpoints") if "/step-" in p)
        assert tags == ["step-0000002", "step-0000004", "step-0000006"]
        for tag in tags:
            manifest = json.loads(fs.cat(f"{root}/checkpoints/{tag}/MANIFEST.json"))
            names = set(manifest["files"])
            assert {"rng_rank_0.safetensors", "rng_rank_1.safetensors"} <= names
            assert any("zero_pp_rank_0_" in n for n in names) and any("zero_pp_rank_1_" in n for n in names)
            for rel, meta in manifest["files"].items():
                assert fs.size(f"{root}/checkpoints/{tag}/{rel}") == meta["size"]
        assert fs.exists(f"{root}/adapter/adapter_model.safetensors")
        metrics = json.loads(fs.cat(f"{root}/metrics.json"))
        assert metrics["world_size"] == 2 and metrics["steps"] == 6
    rows = json.loads(fs.cat(f"{BUCKET}/sweep1/results.json"))["jobs"]
    assert {(r["dataset"], r["method"]) for r in rows} == {(d, m) for d in ("carer", "meld") for m in ("lora", "ptuning")}
    assert fs.exists(f"{BUCKET}/sweep1/results.md")
    for path in fs.find(f"{BUCKET}/sweep1"):
        assert SECRET.encode() not in fs.cat(path), path


def test_a_failed_job_does_not_stop_the_others(ray_local, s3_endpoint, tmp_path, fixtures_dir):
    from emorec.launch.sweep import run_sweep

    make_bucket(BUCKET)
    broken = tmp_path / "glm-without-weights"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "glm"}))
    cfg = sweep_config(tmp_path, fixtures_dir, f"s3://{BUCKET}/sweep2", datasets=("carer",), methods=("lora", "ptuning"),
                       **{"ray.workers": 1, "ray.max_failures": 0, "train.max_steps": 2})
    cfg.per_method["ptuning"]["model.name"] = str(broken)
    rows = {r["name"]: r for r in run_sweep(cfg)}
    assert rows["carer_lora"]["status"] == "ok"
    assert rows["carer_ptuning"]["status"] == "failed"
    assert "glm-without-weights" in rows["carer_ptuning"]["error"] or "Error" in rows["carer_ptuning"]["error"]
