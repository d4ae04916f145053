"""`emorec slurm submit`: the rendered sbatch script, its checks, and a tiny sweep on a real one-node Slurm.

The Slurm test starts slurm-wlm + munge on this machine with slurm/setup_local_slurm.sh (as root; it
installs the packages if they are missing) and stops them by pid at the end. Without root, or when the
daemons cannot start, it is skipped with the reason, unless EMOREC_REQUIRE_SLURM=1 (CI), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

SETUP = REPO / "slurm" / "setup_local_slurm.sh"
STOP = REPO / "slurm" / "stop_local_slurm.sh"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}
JOB_WAIT_S = 480


def slurm_cli(*args: str, env=None, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emorec", "slurm", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or REPO)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_range(size: int) -> int:
    """The first port of `size` consecutive free ports on 127.0.0.1 (for Ray's worker ports)."""
    for base in range(21000, 60000, 997):
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def ray_port_args() -> tuple[int, list[str]]:
    names = ["head-port", "dashboard-port", "node-manager-port", "object-manager-port", "agent-grpc-port",
             "runtime-env-agent-port", "metrics-port", "client-server-port", "agent-listen-port"]
    ports = {n: _free_port() for n in names}
    base = _free_range(100)
    args = [x for n, p in ports.items() for x in (f"--{n}", str(p))]
    args += ["--min-worker-port", str(base), "--max-worker-port", str(base + 99)]
    return ports["head-port"], args


def write_tiny_sweep(path: Path) -> Path:
    """One dataset x one method on the tiny GLM, 4 steps, a checkpoint every 2 (see configs/quickstart.yaml)."""
    path.write_text(yaml.safe_dump({
        "name": "slurm-tiny",
        "output": "runs/placeholder",          # overridden on the command line
        "datasets": ["carer"],
        "methods": ["lora"],
        "set": {
            "model.name": "tiny-glm", "prompt.max_length": 256, "prompt.history": 1,
            "train.micro_batch_size": 8, "train.grad_accum": 1, "train.max_steps": 4, "train.warmup_steps": 0,
            "train.save_every": 2, "train.log_every": 2, "train.lr": 1.0e-2, "eval.batch_size": 64,
            "method.lora.target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "ray.workers": 1, "ray.cpus_per_worker": 1,
        },
        "max_concurrent": 1,
    }))
    return path


def _sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


# ---------------------------------------------------------------- fast: rendering and checks

def fake_sbatch(tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "fake-sbatch"
    exe.write_text("#!/bin/bash\n" + body + "\n")
    exe.chmod(0o755)
    return exe


def test_dry_run_renders_multi_node_gpu_script(tmp_path):
    marker = tmp_path / "called"
    exe = fake_sbatch(tmp_path, f"touch {marker}; echo 1")
    logs = tmp_path / "logs"
    r = slurm_cli("submit", "configs/sweeps/paper.yaml", "output=s3://bucket/emorec/paper",
                  "--nodes", "2", "--gpus-per-node", "8", "--cpus-per-node", "64", "--partition", "gpu",
                  "--account", "proj42", "--time", "1-00:00:00", "--job-name", "paper-sweep",
                  "--log-dir", str(logs), "--mem", "0", "--sbatch-arg=--exclusive", "--dry-run", "--sbatch", str(exe))
    assert r.returncode == 0, r.stderr
    assert not marker.exists(), "--dry-run must not call sbatch"
    lines = _sbatch_lines(r.stdout)
    for expected in ("--job-name=paper-sweep", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=64",
                     "--gpus-per-node=8", "--partition=gpu", "--account=proj42", "--time=1-00:00:00",
                     f"--output={logs}/%x-%j.out", "--mem=0", "--exclusive"):
        assert f"#SBATCH {expected}" in lines, (expected, lines)
    scripts = list(logs.glob("paper-sweep-*.sbatch"))
    assert len(scripts) == 1 and scripts[0].read_text() == r.stdout
    script = r.stdout
    assert "NUM_GPUS=8" in script and "NUM_CPUS=64" in script
    assert f" -m emorec.cli sweep {REPO}/configs/sweeps/paper.yaml output=s3://bucket/emorec/paper)" in script
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in script
    assert "LOCAL_TEST=0" in script and "NODE_IP=''" in script
    assert "@{" not in script
    subprocess.run(["bash", "-n", str(scripts[0])], check=True)


def test_render_prints_script_without_writing(tmp_path):
    r = slurm_cli("render", "configs/quickstart.yaml", "--cpus-per-node", "4", "--node-ip", "127.0.0.1",
                  "--local-test", "--log-dir", str(tmp_path / "logs"), "--head-port", "7000")
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --nodes=1" in _sbatch_lines(r.stdout)
    assert "LOCAL_TEST=1" in r.stdout and "NODE_IP=127.0.0.1" in r.stdout and "HEAD_PORT=7000" in r.stdout
    assert not any("--gpus-per-node" in line for line in _sbatch_lines(r.stdout))
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("overrides, message", [
    (["datsets=[meld]"], "unknown sweep key 'datsets'"),
    (["set.trian.lr=1"], "unknown key 'trian'"),
    (["methods=[lora]", "datasets=[meld]", "set.ray.use_gpu=true"], "GPUs per worker"),
])
def test_bad_sweep_fails_before_sbatch(tmp_path, overrides, message):
    marker = tmp_path / "called"
    exe = fake_sbatch(tmp_path, f"touch {marker}; echo 1")
    r = slurm_cli("submit", "configs/quickstart.yaml", *overrides, "--cpus-per-node", "8",
                  "--log-dir", str(tmp_path / "logs"), "--sbatch", str(exe))
    assert r.returncode == 2
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists(), "sbatch must not run for an invalid sweep"


def test_bad_options_fail_clearly(tmp_path):
    r = slurm_cli("submit", "configs/quickstart.yaml", "--cpus-per-node", "8", "--nodes", "2",
                  "--node-ip", "127.0.0.1", "--dry-run", "--log-dir", str(tmp_path))
    assert r.returncode == 2 and "--ip-command" in r.stderr
    r = slurm_cli("submit", "configs/quickstart.yaml", "--cpus-per-node", "8", "--time", "soon",
                  "--dry-run", "--log-dir", str(tmp_path))
    assert r.returncode == 2 and "--time 'soon'" in r.stderr


def test_sbatch_errors_are_reported(tmp_path):
    exe = fake_sbatch(tmp_path, 'echo "sbatch: error: Batch job submission failed: Invalid account" >&2; exit 1')
    r = slurm_cli("submit", "configs/quickstart.yaml", "--cpus-per-node", "8", "--log-dir", str(tmp_path / "l"),
                  "--sbatch", str(exe))
    assert r.returncode == 2
    assert "sbatch failed (exit 1): sbatch: error: Batch job submission failed: Invalid account" in r.stderr
    r = slurm_cli("submit", "configs/quickstart.yaml", "--cpus-per-node", "8", "--log-dir", str(tmp_path / "l"),
                  "--sbatch", str(tmp_path / "no-such-sbatch"))
    assert r.returncode == 2 and "not found on PATH" in r.stderr
    exe = fake_sbatch(tmp_path, 'echo "4242;cluster"')
    r = slurm_cli("submit", "configs/quickstart.yaml", "--cpus-per-node", "8", "--log-dir", str(tmp_path / "l"),
                  "--sbatch", str(exe), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["job_id"] == "4242" and info["log"].endswith("emorec-quickstart-4242.out")
    assert info["output"] == str(REPO / "runs" / "quickstart")


# ---------------------------------------------------------------- slow: a real Slurm

def _skip_or_fail(reason: str):
    if os.environ.get("EMOREC_REQUIRE_SLURM") == "1":
        pytest.fail(f"EMOREC_REQUIRE_SLURM=1 but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm on this machine (its own ports and state dir); stopped by pid at module end."""
    if os.geteuid() != 0:
        _skip_or_fail("a real Slurm needs root (slurm/setup_local_slurm.sh installs and starts slurmctld/slurmd)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        _skip_or_fail("slurm-wlm is not installed and there is no apt-get to install it")
    state = tmp_path_factory.mktemp("slurm-state")
    env = {**os.environ, "SLURMCTLD_PORT": str(_free_port()), "SLURMD_PORT": str(_free_port())}
    try:
        try:
            r = subprocess.run(["bash", str(SETUP), str(state)], capture_output=True, text=True, timeout=900, env=env)
        except subprocess.TimeoutExpired:
            _skip_or_fail("slurm/setup_local_slurm.sh did not finish in 900 s")
        if r.returncode != 0:
            _skip_or_fail(f"could not start Slurm: {(r.stderr or r.stdout).strip()[-800:]}")
        env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf"), "GLOO_SOCKET_IFNAME": "lo"}
        env.pop("RAY_ADDRESS", None)
        yield {"env": env, "state": state}
    finally:
        subprocess.run(["bash", str(STOP), str(state)], capture_output=True, timeout=60)


def job_state(job_id: str, env) -> str:
    r = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                       env=env, timeout=30)
    state = r.stdout.strip()
    if not state:  # gone from squeue (MinJobAge): ask scontrol
        r = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, env=env,
                           timeout=30)
        m = re.search(r"JobState=(\S+)", r.stdout)
        state = m.group(1) if m else ""
    return state


def ray_processes_on(head_port: int) -> list[str]:
    """Command lines of live processes that belong to the Ray cluster whose GCS listens on head_port."""
    needles = (f"127.0.0.1:{head_port}".encode(), f"--gcs_server_port={head_port}".encode())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if any(n in cmd for n in needles):
            text = cmd.replace(b"\0", b" ")[:200].decode(errors="replace")
            found.append(f"{pid}: {text}")
    return found


@pytest.mark.slow
@pytest.mark.distributed
def test_sbatch_runs_tiny_sweep_on_real_slurm(slurm, tmp_path):
    from emorec.data.fixtures import make_all

    if (os.cpu_count() or 1) < 2:
        pytest.skip("the sweep needs 2 CPUs: one train worker plus the Tune driver's share")
    make_all(str(tmp_path / "fixtures"))
    sweep = write_tiny_sweep(tmp_path / "tiny.yaml")
    out, logs = tmp_path / "out", tmp_path / "logs"
    head_port, port_args = ray_port_args()
    env = slurm["env"]
    r = slurm_cli("submit", str(sweep), f"output={out}", f"data_root={tmp_path / 'fixtures'}",
                  "--nodes", "1", "--cpus-per-node", "2", "--node-ip", "127.0.0.1", "--local-test",
                  "--no-dashboard", "--time", "15", "--log-dir", str(logs), "--join-timeout", "120",
                  "--stop-timeout", "30", *port_args, "--json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    job_id, log = info["job_id"], Path(info["log"])
    assert info["output"] == str(out) and log.parent == logs

    deadline = time.monotonic() + JOB_WAIT_S
    state = ""
    while time.monotonic() < deadline:
        state = job_state(job_id, env)
        if state in TERMINAL:
            break
        time.sleep(3)
    else:
        subprocess.run(["scancel", job_id], env=env, timeout=30)
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    assert state == "COMPLETED", f"job {job_id} is {state or 'unknown'} after polling; log tail:\n{text[-4000:]}"

    results = json.loads((out / "results.json").read_text())
    assert [j["status"] for j in results["jobs"]] == ["ok"], results
    job_dir = out / results["jobs"][0]["name"]
    metrics = json.loads((job_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "carer" and metrics["method"] == "lora"
    manifests = sorted(job_dir.glob("checkpoints/step-*/MANIFEST.json"))
    assert [m.parent.name for m in manifests] == ["step-0000002", "step-0000004"], manifests
    assert "1/1 Ray nodes up" in text and "Ray cluster stopped" in text, text[-4000:]
    assert f"at 127.0.0.1:{head_port}" in text

    # The job's Ray cluster is gone: nothing on this machine still talks to its GCS.
    end = time.monotonic() + 30
    while ray_processes_on(head_port) and time.monotonic() < end:
        time.sleep(1)
    assert ray_processes_on(head_port) == []
