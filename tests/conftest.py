import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
# Before anything imports ray: Ray reads these at import time. They keep every test cluster on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    from emorec.data.fixtures import make_all

    out = tmp_path_factory.mktemp("fixtures")
    make_all(str(out))
    return out


CHATGLM_REFERENCE = Path(__file__).resolve().parent / "chatglm_reference"


def tiny_peft(method: str, model: str = "tiny-glm"):
    """A tiny GLM (or a reference ChatGLM2/3 checkpoint, converted) with a deterministic LoRA (non-zero, no dropout)
    or 4-token prefix adapter."""
    import torch
    from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model

    from emorec.model.families import tiny_glm

    if method == "lora":
        cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, lora_dropout=0.0,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
    else:
        cfg = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)
    if model == "tiny-glm":
        base = tiny_glm(1024)
    else:
        from emorec.model.chatglm_weights import load_native

        base = load_native(str(CHATGLM_REFERENCE / model))[0]
    torch.manual_seed(0)
    return get_peft_model(base, cfg)


def tiny_overrides(fixtures: Path, dataset: str, method: str) -> dict:
    """Settings under which the tiny GLM learns the fixtures' cue words in a few seconds."""
    common = {
        "model": {"name": "tiny-glm"},
        "data": {"dataset": dataset, "path": str(fixtures / dataset)},
        "prompt": {"history": 1, "max_length": 256},
        "eval": {"batch_size": 64},
    }
    if method == "lora":
        common["method"] = {"name": "lora", "lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}}
        common["train"] = {"lr": 1e-2}
    else:
        common["method"] = {"name": "ptuning", "ptuning": {"pre_seq_len": 32}}
        common["train"] = {"lr": 1e-1}
    return common


def write_config(path: Path, fixtures: Path, dataset: str, method: str, **sections) -> Path:
    raw = tiny_overrides(fixtures, dataset, method)
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def clean_env() -> dict:
    """The environment for a child process, without any process-group variables of this one."""
    return {k: v for k, v in os.environ.items() if k not in DIST_VARS}


def torchrun(nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "emorec.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=clean_env())


def emorec(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emorec.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=clean_env())


SECRET = "emorecTestSecretKey-7f3c9b1d2e"


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint on loopback (moto's server), with credentials in the standard env vars."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "emorec-test-key", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield {"host": host, "port": port, "url": env["AWS_ENDPOINT_URL"]}
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def make_bucket(name: str, endpoint_url: str | None = None):
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint_url) if endpoint_url else s3fs.S3FileSystem()
    if not fs.exists(name):
        fs.mkdir(name)
    return fs


@pytest.fixture(scope="module")
def ray_local(s3_endpoint):
    """A local Ray cluster on loopback, started after the S3 credentials are in the environment."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def make_bucket_elsewhere(name: str, env: dict) -> None:
    """The bucket is made by another process, as a user would have made it: this process's s3fs never connected."""
    code = f"import s3fs; fs = s3fs.S3FileSystem(); fs.mkdir({name!r}); print(fs.ls({name!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr[-2000:]


def s3_env(s3_endpoint) -> dict:
    env = {k: v for k, v in clean_env().items() if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER"))}
    assert env["AWS_SECRET_ACCESS_KEY"] == SECRET and env["AWS_ENDPOINT_URL"] == s3_endpoint["url"]
    # Only the environment's credentials: no credentials file, no instance metadata (which would leave loopback).
    env.update(AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_CONFIG_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    return env
