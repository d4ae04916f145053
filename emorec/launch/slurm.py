"""`emorec slurm submit|render`: run a sweep on a Slurm allocation, on a Ray cluster brought up inside it.

The sbatch script comes from slurm/emorec_sweep.sbatch.tmpl (string.Template with "@{name}" fields, so
the bash in it keeps its "$"): it starts Ray with one srun task per node (head on the first node of
`scontrol show hostnames`), waits for every node, runs `emorec sweep CONFIG OVERRIDES` against it with
RAY_ADDRESS set, and stops the cluster when the sweep ends or the job is cancelled.

The sweep config is loaded and expanded here first, so a typo or a job that cannot fit the allocation
fails before anything is queued.

Try it without the `emorec` entry point: `python -m emorec slurm submit CONFIG --nodes 1 ... --dry-run`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from emorec.config import REPO_ROOT
from emorec.errors import ConfigError, EmorecError
from emorec.io.paths import NAME_CHARS, absolute, safe_name

TEMPLATE = REPO_ROOT / "slurm" / "emorec_sweep.sbatch.tmpl"

# Ray's defaults where it has fixed ones; the rest are fixed here so a firewall can be opened for them.
DEFAULT_PORTS = {
    "head_port": 6379,
    "dashboard_port": 8265,
    "node_manager_port": 6700,
    "object_manager_port": 6701,
    "agent_grpc_port": 6702,
    "runtime_env_agent_port": 6703,
    "metrics_port": 6704,
    "client_server_port": 10001,
    "agent_listen_port": 52365,
    "min_worker_port": 10002,
    "max_worker_port": 19999,
}

_NAME = re.compile(f"^[A-Za-z0-9][{NAME_CHARS}]*$")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$|^(infinite|UNLIMITED)$", re.IGNORECASE)


class _Template(string.Template):
    """Only `@{name}` is a field (and `@@` a literal `@`): bash's `$x`, `"$@"` and `${a[@]}` pass through."""

    delimiter = "@"
    pattern = r"""
    @(?:
      (?P<escaped>@) |
      \{(?P<braced>[a-z_][a-z0-9_]*)\} |
      (?P<named>(?!x)x) |
      (?P<invalid>(?!x)x)
    )
    """


@dataclass
class SlurmOptions:
    """What goes into one sbatch script, besides the sweep."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int = 1
    partition: str | None = None
    account: str | None = None
    time: str = "01:00:00"
    job_name: str | None = None
    log_dir: str = "slurm-logs"
    python: str = sys.executable
    mem: str | None = None
    node_ip: str = ""
    ip_command: str = "hostname --ip-address"
    local_test: bool = False
    include_dashboard: bool = True
    join_timeout_s: int = 300
    stop_timeout_s: int = 60
    sbatch_args: list[str] = field(default_factory=list)
    ray_start_args: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    workdir: str = field(default_factory=os.getcwd)
    template: str = str(TEMPLATE)


@dataclass
class Rendered:
    script: str
    job_name: str
    log_dir: str
    output: str
    n_jobs: int
    warnings: list[str] = field(default_factory=list)


def _check_options(o: SlurmOptions) -> None:
    if o.nodes < 1:
        raise ConfigError(f"--nodes must be at least 1, got {o.nodes}")
    if o.cpus_per_node < 1:
        raise ConfigError(f"--cpus-per-node must be at least 1, got {o.cpus_per_node}")
    if o.gpus_per_node < 0:
        raise ConfigError(f"--gpus-per-node must be 0 or more, got {o.gpus_per_node}")
    if o.node_ip and o.nodes > 1:
        raise ConfigError("--node-ip sets one address for every node, so it only works with --nodes 1; "
                          "on several nodes use --ip-command (run on each node, prints its address)")
    if not _TIME.match(o.time):
        raise ConfigError(f"--time {o.time!r} is not a Slurm time (MINUTES, HH:MM:SS, D-HH:MM:SS, ...)")
    for flag, value in (("--partition", o.partition), ("--account", o.account), ("--job-name", o.job_name)):
        if value is not None and not _NAME.match(value):
            raise ConfigError(f"{flag} {value!r}: use letters, digits, '.', '_' and '-' only")
    if o.mem is not None and not re.match(r"^\d+[KMGT]?$", o.mem):
        raise ConfigError(f"--mem {o.mem!r} is not a Slurm memory size (e.g. 64G, 0 for all of the node)")
    for flag, value in (("--log-dir", o.log_dir), ("the working directory", o.workdir)):
        if re.search(r"\s", value):
            raise ConfigError(f"{flag} {value!r} contains whitespace, which #SBATCH lines cannot carry")
    for arg in o.sbatch_args:
        if "\n" in arg or not arg.startswith("-"):
            raise ConfigError(f"--sbatch-arg {arg!r} must be one sbatch option, e.g. --sbatch-arg=--exclusive")
    for name, port in o.ports.items():
        if not 1 <= int(port) <= 65535:
            raise ConfigError(f"--{name.replace('_', '-')} {port} is not a TCP port")
    if o.ports["min_worker_port"] >= o.ports["max_worker_port"]:
        raise ConfigError("--min-worker-port must be below --max-worker-port")
    if o.join_timeout_s < 10 or o.stop_timeout_s < 1:
        raise ConfigError("--join-timeout must be at least 10 s and --stop-timeout at least 1 s")


def check_fits(jobs, o: SlurmOptions) -> None:
    """A job whose workers cannot be placed would wait forever inside the allocation: refuse it now."""
    for cfg in jobs:
        rc = cfg.ray
        if rc.cpus_per_worker > o.cpus_per_node:
            raise ConfigError(f"job {cfg.name}: a worker needs {rc.cpus_per_worker:g} CPUs, a node has "
                              f"{o.cpus_per_node} (--cpus-per-node)")
        if rc.use_gpu and rc.gpus_per_worker > o.gpus_per_node:
            raise ConfigError(f"job {cfg.name}: ray.use_gpu with {rc.gpus_per_worker:g} GPUs per worker, but a "
                              f"node has {o.gpus_per_node} (--gpus-per-node)")
        if rc.workers * rc.cpus_per_worker > o.nodes * o.cpus_per_node:
            raise ConfigError(f"job {cfg.name}: {rc.workers} workers x {rc.cpus_per_worker:g} CPUs do not fit in "
                              f"{o.nodes} node(s) x {o.cpus_per_node} CPUs")
        if rc.use_gpu and rc.workers * rc.gpus_per_worker > o.nodes * o.gpus_per_node:
            raise ConfigError(f"job {cfg.name}: {rc.workers} workers x {rc.gpus_per_worker:g} GPUs do not fit in "
                              f"{o.nodes} node(s) x {o.gpus_per_node} GPUs")


def render(config: str, overrides: list[str], o: SlurmOptions) -> Rendered:
    """Validate the sweep and the options, and fill in the template."""
    from emorec.launch.sweep_config import load_jobs, sweep_command

    _check_options(o)
    sweep, jobs = load_jobs(config, overrides)
    check_fits(jobs, o)

    workdir = os.path.abspath(o.workdir)
    log_dir = absolute(o.log_dir, workdir)
    job_name = o.job_name or f"emorec-{safe_name(sweep.name, 'sweep')}"
    config_path = os.path.abspath(config) if os.path.exists(config) else config
    python = os.path.abspath(o.python) if os.sep in o.python else o.python

    directives = []
    if o.partition:
        directives.append(f"#SBATCH --partition={o.partition}")
    if o.account:
        directives.append(f"#SBATCH --account={o.account}")
    if o.gpus_per_node:
        directives.append(f"#SBATCH --gpus-per-node={o.gpus_per_node}")
    if o.mem is not None:
        directives.append(f"#SBATCH --mem={o.mem}")
    directives += [f"#SBATCH {arg}" for arg in o.sbatch_args]

    q = shlex.quote
    fields = {
        "job_name": job_name,
        "nodes": str(o.nodes),
        "cpus_per_node": str(o.cpus_per_node),
        "gpus_per_node": str(o.gpus_per_node),
        "time": o.time,
        "log_dir": log_dir,
        "workdir": workdir,
        "extra_directives": "\n".join(directives),
        "python": q(python),
        "sweep_command": shlex.join(sweep_command(python, config_path, overrides)),
        "node_ip": q(o.node_ip),
        "ip_command": q(o.ip_command),
        "include_dashboard": "true" if o.include_dashboard else "false",
        "ray_start_args": " ".join(q(x) for x in o.ray_start_args),
        "join_timeout_s": str(int(o.join_timeout_s)),
        "stop_timeout_s": str(int(o.stop_timeout_s)),
        "local_test": "1" if o.local_test else "0",
        **{k: str(int(v)) for k, v in o.ports.items()},
    }
    try:
        text = Path(o.template).read_text(encoding="utf-8")
    except OSError as e:
        raise EmorecError(f"sbatch template {o.template}: {e.strerror}") from None
    try:
        script = _Template(text).substitute(fields)
    except KeyError as e:
        raise EmorecError(f"sbatch template {o.template} has a field this version does not fill: @{{{e.args[0]}}}") from None
    return Rendered(script=script, job_name=job_name, log_dir=log_dir,
                    output=absolute(sweep.output, workdir), n_jobs=len(jobs), warnings=_missing_data(jobs, workdir))


def _missing_data(jobs, workdir: str) -> list[str]:
    """Data paths not visible here. Only a warning: they may exist on the compute nodes only."""
    missing = sorted({p for p in (absolute(cfg.data.path, workdir) for cfg in jobs)
                      if "://" not in p and not os.path.exists(p)})
    return [f"data path {p} does not exist on this machine; the job fails unless the compute nodes have it"
            for p in missing[:5]]


def write_script(r: Rendered) -> Path:
    os.makedirs(r.log_dir, exist_ok=True)
    path = Path(r.log_dir) / f"{r.job_name}-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    n = 1
    while path.exists():
        path = Path(r.log_dir) / f"{r.job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.sbatch"
        n += 1
    path.write_text(r.script, encoding="utf-8")
    path.chmod(0o755)
    return path


def sbatch(script: Path, sbatch_bin: str = "sbatch", timeout: float = 120) -> str:
    """Submit; return the job id. Errors name the cause and carry sbatch's own message."""
    exe = shutil.which(sbatch_bin)
    if exe is None:
        raise EmorecError(f"'{sbatch_bin}' not found on PATH: submit from a Slurm login node (the script is "
                          f"written to {script}; `emorec slurm submit ... --dry-run` renders without submitting)")
    try:
        proc = subprocess.run([exe, "--parsable", str(script)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EmorecError(f"sbatch did not answer within {timeout:.0f} s (is slurmctld up?); script: {script}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or "no message"
        raise EmorecError(f"sbatch failed (exit {proc.returncode}): {detail}\n  script: {script}")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise EmorecError(f"sbatch answered {proc.stdout.strip()!r}, not a job id; script: {script}")
    return job_id


# ---------------------------------------------------------------- command line

def _options(args) -> SlurmOptions:
    return SlurmOptions(
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_node=args.cpus_per_node,
        partition=args.partition, account=args.account, time=args.time, job_name=args.job_name,
        log_dir=args.log_dir, python=args.python, mem=args.mem, node_ip=args.node_ip or "",
        ip_command=args.ip_command, local_test=args.local_test, include_dashboard=not args.no_dashboard,
        join_timeout_s=args.join_timeout, stop_timeout_s=args.stop_timeout,
        sbatch_args=list(args.sbatch_arg or []), ray_start_args=list(args.ray_start_arg or []),
        ports={k: getattr(args, k) for k in DEFAULT_PORTS}, template=args.template,
    )


def _warn(r: Rendered) -> None:
    for w in r.warnings:
        print(f"emorec: warning: {w}", file=sys.stderr)


def cmd_render(args) -> int:
    r = render(args.config, args.overrides, _options(args))
    _warn(r)
    sys.stdout.write(r.script)
    return 0


def cmd_submit(args) -> int:
    r = render(args.config, args.overrides, _options(args))
    _warn(r)
    path = write_script(r)
    info = {"job_id": None, "job_name": r.job_name, "script": str(path),
            "log": os.path.join(r.log_dir, f"{r.job_name}-%j.out"), "output": r.output,
            "results": r.output.rstrip("/") + "/results.json", "sweep_jobs": r.n_jobs}
    if args.dry_run:
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            sys.stdout.write(r.script)
            print(f"\n# dry run: not submitted; script written to {path}\n# submit it with: sbatch {path}",
                  file=sys.stderr)
        return 0
    job_id = sbatch(path, args.sbatch)
    info["job_id"] = job_id
    info["log"] = info["log"].replace("%j", job_id)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    gpus = f" + {args.gpus_per_node} GPUs" if args.gpus_per_node else ""
    print(f"submitted Slurm job {job_id} ({r.job_name}): {r.n_jobs} sweep job(s) on {args.nodes} node(s) x "
          f"{args.cpus_per_node} CPUs{gpus}")
    print(f"  script:  {path}")
    print(f"  log:     {info['log']}")
    print(f"  results: {r.output}  (results.json, results.md, one folder per job)")
    print(f"  follow:  squeue -j {job_id}; tail -f {info['log']}; cancel: scancel {job_id}")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="sweep config (see configs/sweeps/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="sweep keys, as for `emorec sweep`")
    a = p.add_argument_group("allocation")
    a.add_argument("--nodes", type=int, default=1, help="nodes; one Ray node each (default 1)")
    a.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node, given to Ray as --num-gpus (default 0)")
    a.add_argument("--cpus-per-node", type=int, required=True, help="CPUs per node, given to Ray as --num-cpus")
    a.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    a.add_argument("--account", help="Slurm account to charge")
    a.add_argument("--time", default="01:00:00", help="time limit, e.g. 04:00:00 or 1-00:00:00 (default 01:00:00)")
    a.add_argument("--mem", help="memory per node (sbatch --mem), e.g. 200G; 0 = all of it")
    a.add_argument("--job-name", help="Slurm job name (default emorec-<sweep name>)")
    a.add_argument("--log-dir", default="slurm-logs", help="where the script and the job log go (default slurm-logs)")
    a.add_argument("--sbatch-arg", action="append", metavar="OPTION",
                   help="extra #SBATCH line, e.g. --sbatch-arg=--exclusive --sbatch-arg=--qos=high (repeatable)")
    r = p.add_argument_group("Ray")
    r.add_argument("--python", default=sys.executable,
                   help="interpreter with emorec and ray installed, on every node (default: this one)")
    r.add_argument("--node-ip", help="bind Ray to this address (one-node jobs, e.g. 127.0.0.1 for a test cluster)")
    r.add_argument("--ip-command", default="hostname --ip-address",
                   help="shell command run on each node that prints the address Ray binds to "
                        "(default: hostname --ip-address; e.g. \"ip -4 -o addr show ib0 | awk '{print $4}' | cut -d/ -f1\")")
    r.add_argument("--local-test", action="store_true",
                   help="one-machine test cluster: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 and RAY_AUTH_MODE=disabled")
    r.add_argument("--no-dashboard", action="store_true", help="start the head without the dashboard")
    for name, default in DEFAULT_PORTS.items():
        r.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default, metavar="PORT",
                       help=f"(default {default})")
    r.add_argument("--ray-start-arg", action="append", metavar="ARG",
                   help="extra `ray start` argument on every node, e.g. --ray-start-arg=--temp-dir=/scratch/ray")
    r.add_argument("--join-timeout", type=int, default=300, metavar="S",
                   help="seconds for all nodes to join the Ray cluster (default 300)")
    r.add_argument("--stop-timeout", type=int, default=60, metavar="S",
                   help="seconds Ray gets to stop after the sweep before its step is killed (default 60)")
    p.add_argument("--template", default=str(TEMPLATE), help="sbatch template (default slurm/emorec_sweep.sbatch.tmpl)")


def _add_commands(sub) -> None:
    s = sub.add_parser("submit", help="render the sbatch script for a sweep and submit it",
                       description="Validate the sweep, render slurm/emorec_sweep.sbatch.tmpl into LOG_DIR and "
                                   "submit it with `sbatch --parsable`; prints the job id, the log file and where "
                                   "the results go (the sweep's `output`).")
    _add_common(s)
    s.add_argument("--dry-run", action="store_true", help="write and print the script, do not submit")
    s.add_argument("--json", action="store_true", help="print job id, script, log and output paths as JSON")
    s.add_argument("--sbatch", default="sbatch", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_submit)
    r = sub.add_parser("render", help="print the sbatch script for a sweep (nothing is written or submitted)")
    _add_common(r)
    r.set_defaults(func=cmd_render)


def register(subparsers) -> None:
    """Add `emorec slurm submit|render` to the `emorec` command line."""
    p = subparsers.add_parser("slurm", help="run a sweep on a Slurm allocation (Ray cluster per job)",
                              description="Bring up a Ray cluster on a Slurm allocation and run a sweep on it.")
    sub = p.add_subparsers(dest="slurm_command", required=True, metavar="SUBCOMMAND")
    _add_commands(sub)

