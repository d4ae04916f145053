"""`emorec submit` and `emorec job` against a real Ray head started here (`ray start --head` with the
dashboard, on loopback, in its own temp dir), stopped by killing only the processes this test started."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO, SECRET, clean_env, free_port

RAY = str(Path(sys.executable).with_name("ray"))
QUICKSTART = "configs/quickstart.yaml"
# Flat dotted keys: one `set=` mapping replaces the quickstart's set with tiny-run settings.
TINY_SET = ("set={model.name: tiny-glm, prompt.max_length: 256, prompt.history: 1, train.micro_batch_size: 4, "
            "train.grad_accum: 1, train.max_steps: 4, train.save_every: 2, train.lr: 0.01, eval.batch_size: 64, "
            "data.max_eval_samples: 16, ray.workers: 1, ray.cpus_per_worker: 0.5}")


def _env(**extra) -> dict:
    # No credentials, no cluster address and no process-group variables of this process reach the children.
    env = {k: v for k, v in clean_env().items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra)
    return env


def emorec(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emorec.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env or _env())


def _our_pids(pgid: int, temp_dir: str) -> list[int]:
    """Processes of the head's session, or that name its private temp dir (started by this test only)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            sid = os.getsid(int(entry))
        except (OSError, ProcessLookupError):
            continue
        if sid == pgid or temp_dir in cmdline:
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head with the job server on 127.0.0.1; every port chosen free, so it cannot meet another cluster."""
    temp_dir = tempfile.mkdtemp(prefix="emo-ray-", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    port, dashboard = free_port(), free_port()
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
           "--num-gpus=0", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
           f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
           f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
    log = open(os.path.join(temp_dir, "head.log"), "w")
    head = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=temp_dir)
    address = f"http://127.0.0.1:{dashboard}"
    old_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process's client talks to a head without token auth
    try:
        from ray.job_submission import JobSubmissionClient

        client, last = None, None
        for _ in range(240):  # up to ~2 minutes on a busy machine
            if head.poll() is not None:
                break
            try:
                client = JobSubmissionClient(address)
                break
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.5)
        if client is None:
            log.flush()
            raise RuntimeError(f"Ray head did not come up ({last}); log:\n{Path(temp_dir, 'head.log').read_text()[-3000:]}")
        yield {"address": address, "client": client, "temp_dir": temp_dir}
    finally:
        _stop(head, temp_dir)
        log.close()
        if old_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old_auth
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop(head: subprocess.Popen, temp_dir: str) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        pids = _our_pids(head.pid, temp_dir)
        if not pids and head.poll() is not None:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                head.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            if not _our_pids(head.pid, temp_dir):
                return


def _wait_terminal(client, sid: str, limit_s: float = 120) -> str:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = client.get_job_status(sid)
        if status.is_terminal():
            return str(status)
        time.sleep(0.5)
    return str(client.get_job_status(sid))


# ---------------------------------------------------------------------------------------------------
# Without a cluster: what would be submitted
# ---------------------------------------------------------------------------------------------------

def test_dry_run_validates_locally_and_carries_no_credentials(tmp_path, fixtures_dir, monkeypatch, capsys):
    """In this process (no cluster is involved): the credentials are in the environment, as on a laptop."""
    from emorec.cli import main

    for key in [k for k in os.environ if k.startswith(("AWS_", "RAY_ADDRESS"))]:
        monkeypatch.delenv(key)
    for key, value in (("AWS_ACCESS_KEY_ID", "emorec-test-key"), ("AWS_SECRET_ACCESS_KEY", SECRET),
                       ("AWS_SESSION_TOKEN", SECRET + "tok")):
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)

    def emorec(*args, env=None):
        rc = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)

    out = tmp_path / "out"
    env = None
    r = emorec("submit", "--dry-run", QUICKSTART, "datasets=[carer]", "methods=[lora]", f"data_root={fixtures_dir}",
               f"output={out}", TINY_SET, "--submission-id", "emorec-dry", env=env)
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)
    assert SECRET not in r.stdout + r.stderr
    assert not any(k.startswith("AWS_") for k in sub["runtime_env"]["env_vars"])
    assert sub["submission_id"] == "emorec-dry"
    assert sub["entrypoint"].startswith("python -m emorec.cli sweep configs/quickstart.yaml ")
    assert "'datasets=[carer]'" in sub["entrypoint"]
    assert sub["entrypoint_num_cpus"] > 0  # the driver is placed by resources, not on the head by default
    assert Path(sub["runtime_env"]["working_dir"]) == REPO
    assert {"/.venv/", "/runs/", ".git/"} <= set(sub["runtime_env"]["excludes"])
    assert sub["metadata"]["emorec_sweep"] == "quickstart" and sub["metadata"]["emorec_jobs"] == "1"

    # A typo fails here, before any cluster is involved (there is none: no --address, no RAY_ADDRESS).
    r = emorec("submit", QUICKSTART, "datasets=[carer]", "methods=[lora]", f"output={out}", "set={train.max_stepz: 3}",
               env=env)
    assert r.returncode == 2 and "max_stepz" in r.stderr, r.stderr
    # Results must not vanish with the job's temporary working dir.
    r = emorec("submit", "--dry-run", QUICKSTART, "datasets=[carer]", "output=runs/rel", env=env)
    assert r.returncode == 2 and "relative path" in r.stderr
    # Credentials are refused in the runtime_env and in the entrypoint.
    r = emorec("submit", "--dry-run", QUICKSTART, f"output={out}", f"data_root={fixtures_dir}",
               "--env", f"AWS_SECRET_ACCESS_KEY={SECRET}", env=env)
    assert r.returncode == 2 and "credentials must not travel" in r.stderr and SECRET not in r.stdout + r.stderr
    r = emorec("submit", "--dry-run", QUICKSTART, f"output={out}", f"data_root={fixtures_dir}",
               "storage_options.secret=abc", env=env)
    assert r.returncode == 2 and "credential" in r.stderr
    # A config outside the working dir would not reach the cluster.
    outside = tmp_path / "sweep.yaml"
    outside.write_text((REPO / QUICKSTART).read_text())
    r = emorec("submit", "--dry-run", str(outside), f"output={out}", f"data_root={fixtures_dir}", env=env)
    assert r.returncode == 2 and "outside the working directory" in r.stderr


# ---------------------------------------------------------------------------------------------------
# Against a real head
# ---------------------------------------------------------------------------------------------------

@pytest.mark.distributed
@pytest.mark.slow
def test_submit_wait_runs_a_sweep_on_a_ray_head(ray_head, tmp_path, fixtures_dir):
    address = ray_head["address"]
    out = tmp_path / "sweep"
    sid = f"emorec-test-{os.getpid()}"
    env = _env(AWS_ACCESS_KEY_ID="emorec-test-key", AWS_SECRET_ACCESS_KEY=SECRET)
    r = emorec("submit", "--address", address, QUICKSTART, "datasets=[carer]", "methods=[lora]",
               f"data_root={fixtures_dir}", f"output={out}", TINY_SET, "max_concurrent=1",
               "--submission-id", sid, "--wait", "--timeout", "480", env=env, timeout=540)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert f"submitted {sid}" in r.stdout
    assert "1 jobs, 1 ok" in r.stdout  # the job's own log, followed live
    assert f"{sid}: SUCCEEDED" in r.stderr

    results = json.loads((out / "results.json").read_text())
    assert [j["status"] for j in results["jobs"]] == ["ok"]
    metrics = json.loads((out / "carer_lora" / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["dataset"] == "carer"
    assert (out / "carer_lora" / "adapter" / "adapter_model.safetensors").exists()

    r = emorec("job", "status", sid, "--address", address)
    assert r.returncode == 0 and "SUCCEEDED" in r.stdout and str(out) in r.stdout, r.stdout + r.stderr
    r = emorec("job", "status", sid, "--address", address, "--json")
    info = json.loads(r.stdout)
    assert info["status"] == "SUCCEEDED" and info["metadata"]["emorec_sweep"] == "quickstart"
    assert SECRET not in r.stdout and "AWS_" not in json.dumps(info["runtime_env"])
    r = emorec("job", "logs", sid, "--address", address)
    assert r.returncode == 0 and "1 jobs, 1 ok" in r.stdout
    r = emorec("job", "list", "--address", address)
    assert sid in r.stdout


@pytest.mark.distributed
@pytest.mark.slow
def test_submit_wait_fails_when_the_job_fails_and_stop_ends_a_job(ray_head, tmp_path):
    address, client = ray_head["address"], ray_head["client"]
    # Valid config, but the data is not where the cluster looks: the job fails on the cluster.
    missing = tmp_path / "no-such-data"
    r = emorec("submit", "--address", address, QUICKSTART, "datasets=[carer]", "methods=[lora]",
               f"data_root={missing}", f"output={tmp_path / 'out'}", TINY_SET, "--submission-id", "emorec-fails",
               "--wait", "--timeout", "240", timeout=300)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "emorec-fails: FAILED" in r.stderr
    assert _wait_terminal(client, "emorec-fails") == "FAILED"

    # `emorec job stop` on a running job.
    sid = client.submit_job(entrypoint="python -c 'import time; time.sleep(120)'", submission_id="emorec-sleeper",
                            entrypoint_num_cpus=0.1)
    for _ in range(120):
        if str(client.get_job_status(sid)) == "RUNNING":
            break
        time.sleep(0.5)
    r = emorec("job", "stop", sid, "--address", address, "--wait")
    assert r.returncode == 0 and "stop requested" in r.stdout, r.stdout + r.stderr
    assert _wait_terminal(client, sid) == "STOPPED"
    r = emorec("job", "status", "no-such-job", "--address", address)
    assert r.returncode == 2 and "emorec: error" in r.stderr
