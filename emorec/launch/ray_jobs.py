"""`emorec submit` and `emorec job`: run a sweep on a remote Ray cluster through the Ray Job API.

    emorec submit --address http://HEAD:8265 configs/sweeps/paper.yaml output=s3://bucket/emorec/paper --wait
    emorec job status|logs|stop SUBMISSION_ID --address http://HEAD:8265

The sweep config is validated here first (every job's run config), so a typo fails before the cluster
is touched. The job's runtime_env carries the working directory (code and configs; no .venv, runs/,
.git or large files), its entrypoint is `python -m emorec.cli sweep CONFIG overrides...`, and it asks
for entrypoint resources so the Ray scheduler places the driver like any task instead of on the head
node by default (ray-project/ray#23010). Credentials never travel in the runtime_env, the entrypoint
or the metadata (all of which the dashboard shows): the cluster's nodes get them from their own
environment or instance role, or the sweep's storage_options.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import os
import re
import secrets
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

from emorec.errors import ConfigError, EmorecError
from emorec.io.paths import is_url, safe_name

log = logging.getLogger(__name__)

DEFAULT_EXCLUDES = [
    ".git/", "/.venv/", "/venv/", "/env/", "/runs/", "/fixtures-data/", "/build/", "/dist/", "**/__pycache__/",
    "*.egg-info/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".ipynb_checkpoints/", "wandb/",
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.gguf", "*.onnx",
    "*.tar", "*.tar.gz", "*.tgz", "*.zip", "*.parquet", "*.arrow",
]
LARGE_FILE_BYTES = 10 * 1024 * 1024  # Ray warns from 10 MiB per file; such files belong in storage
DEFAULT_ENTRYPOINT_CPUS = 0.5  # the driver is a light Tune loop; >0 lets the scheduler place it anywhere
SECRET_NAME = re.compile(r"(secret|token|password|passwd|credential|session|key)", re.IGNORECASE)
_SKIP_SCAN = {".git", ".venv", "venv", "env", "runs", "__pycache__", "node_modules", ".pytest_cache", "build", "dist"}


# --------------------------------------------------------------------------------------------------
# Building the submission (pure: no cluster needed; `--dry-run` prints it)
# --------------------------------------------------------------------------------------------------

def _redact_url(url: str) -> str:
    return re.sub(r"(://)[^/@]*@", r"\1***@", url)


def _config_in_working_dir(config: str, working_dir: str | None) -> str:
    """The CONFIG argument as the job will see it: relative to the working dir, or a URL."""
    if is_url(config):
        return config
    if working_dir is None:
        if not os.path.isabs(config):
            raise ConfigError(f"{config}: with --no-working-dir, CONFIG must be an absolute path on the cluster "
                              "or a URL (s3://...)")
        return config
    cfg, root = Path(config).resolve(), Path(working_dir).resolve()
    try:
        rel = cfg.relative_to(root)
    except ValueError:
        raise ConfigError(f"{config} is outside the working directory {root}; the job only sees files inside it. "
                          "Move the config there, pass --working-dir, or put the config on storage "
                          "(s3://...)") from None
    return rel.as_posix()


def check_overrides(overrides: list[str]) -> None:
    """Overrides end up in the entrypoint, which the dashboard shows: no credentials there."""
    for item in overrides:
        key = item.split("=", 1)[0]
        if "storage_options" in key and SECRET_NAME.search(key.rsplit(".", 1)[-1]):
            raise ConfigError(f"override {key}=... would put a credential in the job's entrypoint, which the Ray "
                              "dashboard shows; give the cluster's nodes credentials through their environment "
                              "or instance role, or keep them in the config's storage_options")


def _check_paths(sweep, working_dir: str | None) -> list[str]:
    """Relative local paths resolve inside the job's temporary copy of the working dir on the cluster."""
    notes = []
    if not is_url(sweep.output) and not os.path.isabs(sweep.output):
        raise ConfigError(f"output={sweep.output} is a relative path: on the cluster it would land inside the job's "
                          "temporary working directory and be lost. Use object storage (output=s3://bucket/prefix) "
                          "or an absolute path on a filesystem every node shares")
    if not is_url(sweep.output):
        notes.append(f"output {sweep.output} is a local path: every node of the cluster must share it")
    root = sweep.data_root
    if root and not is_url(root):
        if os.path.isabs(root):
            notes.append(f"data_root {root} must exist on every node of the cluster")
        elif working_dir is None or not (Path(working_dir) / root).exists():
            raise ConfigError(f"data_root={root} is relative and not inside the working directory: on the cluster "
                              "it would resolve inside the job's working dir. Give an absolute path on the "
                              "cluster's shared filesystem or a URL")
        else:
            notes.append(f"data_root {root} travels with the working dir (keep it small, or use storage)")
    return notes


def large_files(working_dir: str, limit: int = LARGE_FILE_BYTES, max_files: int = 20000) -> list[str]:
    """Files over `limit` bytes under working_dir (skipping the usual heavy folders), as anchored patterns."""
    out, seen = [], 0
    root = Path(working_dir).resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_SCAN and not d.endswith(".egg-info")]
        for name in filenames:
            seen += 1
            if seen > max_files:
                log.warning("working dir %s has more than %d files; stopped looking for large ones", root, max_files)
                return out
            path = Path(dirpath) / name
            try:
                if path.stat().st_size >= limit and not path.is_symlink():
                    out.append("/" + path.relative_to(root).as_posix())
            except OSError:
                continue
    return out


def parse_env(items: list[str] | None) -> dict[str, str]:
    from emorec.io.secrets import CREDENTIAL_VARS

    env = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--env {item!r}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        if name in CREDENTIAL_VARS or SECRET_NAME.search(name):
            raise ConfigError(f"--env {name}: credentials must not travel in the runtime_env (the dashboard and "
                              "the runtime-env agent's logs show it); give the cluster's nodes their own")
        env[name] = value
    return env


def default_submission_id(sweep_name: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"emorec-{safe_name(sweep_name, 'sweep')}-{stamp}-{secrets.token_hex(3)}"


def build_submission(config: str, overrides: list[str] = (), *, working_dir: str | None = ".",
                     excludes: list[str] = (), pip: list[str] = (), env: list[str] | None = None,
                     python: str = "python", submission_id: str | None = None,
                     entrypoint_num_cpus: float | None = DEFAULT_ENTRYPOINT_CPUS, entrypoint_num_gpus: float | None = None,
                     entrypoint_resources: dict[str, float] | None = None) -> dict[str, Any]:
    """Validate the sweep locally and return the submit_job keyword arguments (plus a few notes)."""
    from emorec import __version__
    from emorec.launch.concurrency import is_scaling_sweep, scaling_warnings, worker_counts
    from emorec.launch.sweep_config import load_jobs, sweep_command

    overrides = list(overrides)
    check_overrides(overrides)
    sweep, jobs = load_jobs(config, overrides)
    notes = _check_paths(sweep, working_dir) + scaling_warnings(sweep)
    config_arg = _config_in_working_dir(config, working_dir)

    runtime_env: dict[str, Any] = {"env_vars": {"PYTHONUNBUFFERED": "1", **parse_env(env)}}
    if working_dir is not None:
        wd = str(Path(working_dir).resolve())
        if not (Path(wd) / "emorec" / "__init__.py").exists():
            notes.append(f"{wd} holds no emorec package: the cluster's Python must have emorec installed")
        big = large_files(wd)
        if big:
            notes.append(f"left out of the working dir (>= {LARGE_FILE_BYTES >> 20} MiB): {', '.join(big[:5])}"
                         + (" ..." if len(big) > 5 else ""))
        runtime_env.update(working_dir=wd, excludes=[*DEFAULT_EXCLUDES, *excludes, *big])
    if pip:
        pip = list(pip)
        runtime_env["pip"] = pip[0] if len(pip) == 1 and pip[0].endswith(".txt") and os.path.isfile(pip[0]) else pip

    entrypoint = shlex.join(sweep_command(python, config_arg, overrides))
    metadata = {
        "emorec_version": __version__, "emorec_sweep": sweep.name, "emorec_config": config_arg,
        "emorec_jobs": str(len(jobs)), "emorec_output": _redact_url(sweep.output),
    }
    if is_scaling_sweep(sweep):
        metadata["emorec_scaling_workers"] = ",".join(map(str, worker_counts(sweep)))
    kwargs = {
        "entrypoint": entrypoint, "runtime_env": runtime_env, "metadata": metadata,
        "submission_id": submission_id or default_submission_id(sweep.name),
        "entrypoint_num_cpus": entrypoint_num_cpus or None, "entrypoint_num_gpus": entrypoint_num_gpus or None,
        "entrypoint_resources": entrypoint_resources or None,
    }
    assert_no_secrets(kwargs)
    return {"kwargs": kwargs, "notes": notes, "sweep": sweep, "jobs": len(jobs)}


def assert_no_secrets(kwargs: dict[str, Any]) -> None:
    """A last check: no credential held by this process appears anywhere in what the cluster will show."""
    from emorec.io.secrets import CREDENTIAL_VARS

    text = json.dumps(kwargs, default=str)
    for name in CREDENTIAL_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 6 and value in text:
            raise EmorecError(f"the job submission would contain the value of {name}; refusing to submit")
    for name in (kwargs.get("runtime_env") or {}).get("env_vars", {}):
        if name in CREDENTIAL_VARS:
            raise EmorecError(f"{name} must not travel in the runtime_env")


# --------------------------------------------------------------------------------------------------
# Talking to the cluster
# --------------------------------------------------------------------------------------------------

CONNECT_TIMEOUT_S = 10.0  # one TCP connect to a cluster's address; Ray's own connect retries for minutes
_DEFAULT_PORTS = {"http": 80, "https": 443, "ray": 10001, "": 6379}  # "": a bare GCS address, host[:port]
ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address (http(s)://HOST:PORT, ray://HOST:PORT or HOST:PORT), or None for the ones Ray
    resolves itself (auto, local)."""
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return None
    scheme = address.split("://", 1)[0].lower() if "://" in address else ""
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"Ray address {_redact_url(address)!r}: expected http://HOST:PORT (the dashboard), "
                          "ray://HOST:PORT or HOST:PORT (the cluster's GCS)")
    parts = urlsplit(address if scheme else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1:
        raise ConfigError(f"Ray address {_redact_url(address)!r}: expected HOST:PORT with a port number")
    return parts.hostname, port or _DEFAULT_PORTS[scheme]


def check_reachable(address: str, source: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """One bounded TCP connect to the cluster's address: a clear error naming it (and where it came from,
    e.g. "RAY_ADDRESS" or "--address") when nothing answers, instead of Ray's minutes of retries."""
    target = _host_port(address)
    if target is None and address == "auto":  # the cluster last started on this machine, if Ray recorded one
        try:
            from ray._private.services import find_bootstrap_address

            found = find_bootstrap_address(None)
        except Exception:  # a private helper: without it Ray's own lookup decides
            found = None
        target = _host_port(found) if found else None
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.timeout:
        reason = f"no answer within {timeout:g}s"
    except OSError as e:
        reason = e.strerror or type(e).__name__
    else:
        return
    hint = " (unset it to start a local cluster)" if source == "RAY_ADDRESS" else ""
    raise ConfigError(f"{source}={_redact_url(address)}: cannot reach a Ray cluster at {host}:{port}: {reason}; is the "
                      f"cluster up and the address right?{hint}")


@contextlib.contextmanager
def _only_address(address: str):
    """Ray's job client lets RAY_API_SERVER_ADDRESS/RAY_ADDRESS override the address it is given: not here."""
    saved = {k: os.environ.pop(k) for k in ADDRESS_VARS if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def client(address: str | None):
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as e:  # pragma: no cover - ray[default] is a dependency
        raise EmorecError(f"the Ray Job API needs ray[default]: {e}") from None
    source = "--address"
    if not address:
        source = next((k for k in ADDRESS_VARS if os.environ.get(k)), None)
        address = os.environ.get(source) if source else None
    if not address:
        raise EmorecError("give --address http://HEAD:8265 (the Ray dashboard) or set RAY_ADDRESS")
    check_reachable(address, source)
    from ray.exceptions import RayError

    try:
        with _only_address(address):
            return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError, RayError) as e:  # one line naming the address
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EmorecError(f"cannot reach the Ray job server at {source}={_redact_url(address)}: {first}") from None


async def _tail(c, submission_id: str, out) -> None:
    async for chunk in c.tail_job_logs(submission_id):
        out.write(chunk)
        out.flush()


def follow(c, submission_id: str, *, timeout: float | None = None, out=None, poll_s: float = 1.0) -> str:
    """Stream the job's logs until it ends; returns its final status ("SUCCEEDED", "FAILED", "STOPPED",
    or the current one when `timeout` seconds pass first)."""
    out = out or sys.stdout
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(_tail(c, submission_id, out), timeout=timeout))
    except (asyncio.TimeoutError, TimeoutError):
        return str(c.get_job_status(submission_id))
    except Exception as e:  # the websocket closed early or the dashboard hiccuped: poll the status instead
        log.warning("log stream for %s ended (%s: %s); polling its status", submission_id, type(e).__name__, e)
    # The stream ends when the job does; the status may lag a moment behind it.
    deadline = None if timeout is None else started + timeout
    for _ in range(100000):
        status = c.get_job_status(submission_id)
        if status.is_terminal() or (deadline is not None and time.monotonic() > deadline):
            return str(status)
        time.sleep(poll_s)
    return str(c.get_job_status(submission_id))


def cmd_submit(args) -> int:
    resources = json.loads(args.entrypoint_resources) if args.entrypoint_resources else None
    sub = build_submission(
        args.config, args.overrides, working_dir=None if args.no_working_dir else args.working_dir,
        excludes=args.exclude or [], pip=args.pip or [], env=args.env, python=args.python,
        submission_id=args.submission_id, entrypoint_num_cpus=args.entrypoint_num_cpus,
        entrypoint_num_gpus=args.entrypoint_num_gpus, entrypoint_resources=resources,
    )
    for note in sub["notes"]:
        print(f"note: {note}", file=sys.stderr)
    kwargs = sub["kwargs"]
    if args.dry_run:
        print(json.dumps(kwargs, indent=2))
        return 0
    c = client(args.address)
    try:
        sid = c.submit_job(**kwargs)
    except RuntimeError as e:
        raise EmorecError(f"submission refused: {str(e).strip().splitlines()[-1] if str(e).strip() else e}") from None
    address = args.address or os.environ.get("RAY_ADDRESS", "")
    addr = f" --address {address}" if address else ""
    print(f"submitted {sid}: sweep {sub['sweep'].name}, {sub['jobs']} jobs -> {_redact_url(sub['sweep'].output)}")
    print(f"  logs:   emorec job logs {sid}{addr} --follow")
    print(f"  status: emorec job status {sid}{addr}")
    print(f"  stop:   emorec job stop {sid}{addr}")
    print(f"  report: emorec report {_redact_url(sub['sweep'].output)}   (when it has finished)")
    sys.stdout.flush()
    if not args.wait:
        return 0
    return _wait_and_exit(c, sid, args.timeout)


def _wait_and_exit(c, sid: str, timeout: float | None) -> int:
    try:
        status = follow(c, sid, timeout=timeout or None)
    except KeyboardInterrupt:
        print(f"\nstopped following; {sid} is still running (emorec job stop {sid} to end it)", file=sys.stderr)
        return 130
    info = c.get_job_info(sid)
    print(f"{sid}: {status}" + (f" ({info.message})" if info.message else ""), file=sys.stderr)
    if status == "SUCCEEDED":
        return 0
    return 124 if status not in ("FAILED", "STOPPED") else 1


def _info_dict(info) -> dict[str, Any]:
    keys = ("submission_id", "job_id", "status", "message", "error_type", "entrypoint", "start_time", "end_time",
            "metadata", "runtime_env", "driver_node_id", "driver_exit_code")
    out = {}
    for k in keys:
        v = getattr(info, k, None)
        out[k] = str(v) if k == "status" and v is not None else v
    return out


def _when(ms) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def cmd_job(args) -> int:
    c = client(args.address)
    try:
        if args.job_command == "list":
            jobs = [_info_dict(j) for j in c.list_jobs()]
            if args.json:
                print(json.dumps(jobs, indent=2, default=str))
            for j in [] if args.json else sorted(jobs, key=lambda j: j["start_time"] or 0):
                print(f"{j['submission_id'] or j['job_id']}  {j['status']:<9}  {_when(j['start_time'])}  {j['entrypoint']}")
            return 0
        if args.job_command == "status":
            info = _info_dict(c.get_job_info(args.id))
            if args.json:
                print(json.dumps(info, indent=2, default=str))
            else:
                print(f"{args.id}: {info['status']}")
                if info["message"]:
                    print(f"  {info['message']}")
                print(f"  started {_when(info['start_time'])}, ended {_when(info['end_time'])}")
                print(f"  entrypoint: {info['entrypoint']}")
                meta = info.get("metadata") or {}
                if meta.get("emorec_output"):
                    print(f"  results: {meta['emorec_output']}")
            return 0
        if args.job_command == "logs":
            if args.follow:
                status = follow(c, args.id)
                return 0 if status == "SUCCEEDED" else 1
            sys.stdout.write(c.get_job_logs(args.id))
            return 0
        if args.job_command == "stop":
            stopped = c.stop_job(args.id)
            print(f"{args.id}: " + ("stop requested" if stopped else "was not running"))
            if args.wait and stopped:
                for _ in range(600):
                    status = c.get_job_status(args.id)
                    if status.is_terminal():
                        print(f"{args.id}: {status}")
                        break
                    time.sleep(0.5)
            return 0
    except RuntimeError as e:
        raise EmorecError(str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)) from None
    raise EmorecError(f"unknown job command {args.job_command}")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

def _address_arg(p) -> None:
    p.add_argument("--address", default=None,
                   help="the Ray job server, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS)")


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "submit", help="submit a sweep to a Ray cluster through the Ray Job API",
        description="Validate a sweep config here, then submit `emorec sweep CONFIG overrides...` as a Ray job: the "
                    "working directory travels as the runtime_env (without .venv, runs/, .git or large files), and "
                    "the driver asks for entrypoint resources so it is placed by the scheduler, not on the head by "
                    "default. Data and output must be where the cluster can read them (s3://..., or a shared "
                    "filesystem). Credentials come from the cluster's environment, never from this machine.")
    _address_arg(s)
    s.add_argument("config", help="sweep config, inside the working directory (or a URL)")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="sweep keys, e.g. output=s3://bucket/x")
    s.add_argument("--wait", action="store_true", help="follow the logs until the job ends; exit non-zero if it failed")
    s.add_argument("--timeout", type=float, default=0, help="with --wait: stop following after this many seconds (0: never)")
    s.add_argument("--submission-id", help="the job's id (default emorec-<sweep>-<time>-<random>)")
    s.add_argument("--entrypoint-num-cpus", type=float, default=DEFAULT_ENTRYPOINT_CPUS,
                   help=f"CPUs reserved for the driver (default {DEFAULT_ENTRYPOINT_CPUS}); start the head with "
                        "--num-cpus=0 to keep drivers off it")
    s.add_argument("--entrypoint-num-gpus", type=float, default=None, help="GPUs reserved for the driver (default 0)")
    s.add_argument("--entrypoint-resources", default=None, metavar="JSON",
                   help='custom resources for the driver, e.g. \'{"driver_slot": 1}\'')
    s.add_argument("--working-dir", default=".", help="directory shipped to the cluster (default: the current one)")
    s.add_argument("--no-working-dir", action="store_true",
                   help="ship nothing: the cluster's Python has emorec installed and CONFIG is a path there or a URL")
    s.add_argument("--exclude", action="append", metavar="PATTERN", help="also leave out of the working dir (repeatable)")
    s.add_argument("--pip", action="append", metavar="REQ",
                   help="pip requirement installed for the job (repeatable), or one requirements.txt")
    s.add_argument("--env", action="append", metavar="NAME=VALUE",
                   help="environment variable for the job (repeatable; credentials are refused)")
    s.add_argument("--python", default="python", help="the interpreter on the cluster (default: python)")
    s.add_argument("--dry-run", action="store_true", help="validate and print the submission; submit nothing")
    s.set_defaults(func=cmd_submit)

    j = subparsers.add_parser("job", help="status, logs, stop or list of jobs submitted to a Ray cluster")
    jsub = j.add_subparsers(dest="job_command", required=True, metavar="SUBCOMMAND")
    st = jsub.add_parser("status", help="a job's status and message")
    st.add_argument("id", help="the submission id")
    st.add_argument("--json", action="store_true")
    _address_arg(st)
    lg = jsub.add_parser("logs", help="a job's driver logs")
    lg.add_argument("id")
    lg.add_argument("--follow", "-f", action="store_true", help="follow until the job ends")
    _address_arg(lg)
    sp = jsub.add_parser("stop", help="stop a job")
    sp.add_argument("id")
    sp.add_argument("--wait", action="store_true", help="wait until it has stopped")
    _address_arg(sp)
    ls = jsub.add_parser("list", help="every job on the cluster")
    ls.add_argument("--json", action="store_true")
    _address_arg(ls)
    for p in (st, lg, sp, ls):
        p.set_defaults(func=cmd_job)
