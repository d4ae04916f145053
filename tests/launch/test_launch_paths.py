"""Every launcher builds the sweep's command line, its paths and its names with one helper each."""

import re
import shlex
import sys

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
