"""Every launcher builds the sweep's command line, its paths and its names with one helper each."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO

from emorec.io.paths import NAME_CHARS, absolute, is_url, safe_name
from emorec.launch.ray_jobs import build_submission, default_submission_id
from emorec.launch.slurm import SlurmOptions, render
from emorec.launch.sweep_config import load_jobs, sweep_command


def test_ray_job_and_slurm_run_the_same_sweep_command(tmp_path):
    overrides = ["output=/shared/runs/qs", "data_root=/shared/data", "set.train.max_steps=3"]
    sub = build_submission(str(REPO / "configs/quickstart.yaml"), overrides, working_dir=str(REPO))
    assert sub["kwargs"]["entrypoint"] == shlex.join(sweep_command("python", "configs/quickstart.yaml", overrides))
    r = render(str(REPO / "configs/quickstart.yaml"), overrides,
               SlurmOptions(cpus_per_node=4, log_dir=str(tmp_path), workdir=str(tmp_path), python=sys.executable))
    line = next(x for x in r.script.splitlines() if x.startswith("SWEEP_COMMAND=("))
    assert shlex.split(line[len("SWEEP_COMMAND=("):-1]) == sweep_command(
        sys.executable, str(REPO / "configs/quickstart.yaml"), overrides)
    assert '"${SWEEP_COMMAND[@]}" &' in r.script


def test_paths_resolve_one_way():
    assert absolute("s3://b/x", "/w") == "s3://b/x" and is_url("gs://b/x") and not is_url("/a/b")
    assert absolute("/abs/x", "/w") == "/abs/x"
    assert absolute("runs/../out", "/w") == "/w/out"


def test_one_name_character_set_for_jobs_submissions_and_files(tmp_path):
    odd = "my sweep/ä:v2..*"
    assert safe_name(odd) == "my-sweep-v2"
    assert re.fullmatch(f"[{NAME_CHARS}]+", safe_name(odd))
    assert safe_name("///", "sweep") == "sweep"
    assert default_submission_id(odd).startswith("emorec-my-sweep-v2-")
    r = render(str(REPO / "configs/quickstart.yaml"), [f"name={odd}"],
               SlurmOptions(cpus_per_node=4, log_dir=str(tmp_path), workdir=str(tmp_path)))
    assert r.job_name == "emorec-my-sweep-v2"


def test_load_jobs_is_the_one_expansion():
    sweep, jobs = load_jobs(str(REPO / "configs/quickstart.yaml"), ["datasets=[meld]"])
    assert [j.name for j in jobs] == ["meld_lora", "meld_ptuning"] and sweep.datasets == ["meld"]


def test_a_sweep_trial_starts_without_the_training_stack():
    """Every Tune trial imports emorec.launch.sweep to run its driver: that must not pull torch, peft or DeepSpeed
    (seconds per job on the sweep's critical path); the workers import them."""
    code = ("import sys, emorec.launch.sweep; "
            "print(sorted(m for m in ('torch', 'peft', 'deepspeed', 'sklearn', 'emorec.train.recipe') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_every_job_tells_ray_train_how_often_to_poll(monkeypatch, tmp_path):
    from emorec.config import build_config
    from emorec.launch import ray_train

    cfg = build_config({"name": "x", "data": {"dataset": "carer", "path": "/d"}, "output": str(tmp_path),
                        "ray": {"poll_interval_s": 0.25}})
    assert cfg.ray.poll_interval_s == 0.25 and build_config({"name": "x", "data": {"dataset": "carer", "path": "/d"}}
                                                            ).ray.poll_interval_s == 0.5
    monkeypatch.delenv(ray_train.HEALTH_CHECK_INTERVAL, raising=False)
    seen = {}

    class Stop(Exception):
        pass

    def fake_make_trainer(cfg, **kwargs):
        seen["env"] = os.environ.get(ray_train.HEALTH_CHECK_INTERVAL)
        raise Stop

    monkeypatch.setattr(ray_train, "make_trainer", fake_make_trainer)
    with pytest.raises(Stop):
        ray_train.run_job(cfg, prepared="ref")
    assert seen["env"] == "0.25"
