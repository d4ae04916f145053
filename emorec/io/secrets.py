"""Secrets: where storage credentials travel, and how emorec keeps them out of what it writes.

Credentials. Storage credentials travel through Ray's object store, never through runtime_env or job metadata.

Ray Tune copies AWS_* variables from the driver into each trial's runtime_env, and Ray's runtime-env
agent logs that runtime_env in plain text. emorec hides them from Ray while it schedules work and
hands them to its own processes as an object reference instead.

A filesystem that reads its credentials from the environment when it first connects (s3fs does, on its
first request, not when it is made) must connect before they are hidden: `hidden_from_ray(fs, ...)`
connects the filesystems it is given first, and they keep the credentials they resolved.

Redaction. Keep secrets out of everything emorec writes: configs, logs, reports, metadata.

Two nets: by key (any storage_options entry whose name says secret, token, password...), and by the shape of a value
anywhere in the config (a URL's password, a secret in a URL query, strings shaped like access keys or tokens).
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator

CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "GOOGLE_APPLICATION_CREDENTIALS")


def connect_now(*filesystems) -> None:
    """Make each fsspec filesystem resolve its credentials now, from the environment as it is."""
    for fs in filesystems:
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        if {"s3", "s3a"} & set(protocols) and callable(getattr(fs, "connect", None)):
            fs.connect()  # s3fs: makes the client, which holds the credentials botocore resolved; no request


@contextlib.contextmanager
def hidden_from_ray(*filesystems) -> Iterator[dict[str, str]]:
    """Take the credential variables out of os.environ for the block (yielding them), after connecting
    `filesystems` (the ones Ray will use in this process) while the variables are still there."""
    connect_now(*filesystems)
    captured = {k: os.environ.pop(k) for k in CREDENTIAL_VARS if k in os.environ}
    try:
        yield captured
    finally:
        os.environ.update(captured)


def install(credentials: dict[str, str] | None) -> None:
    """In a worker: make the credentials visible to fsspec/boto the standard way."""
    if credentials:
        os.environ.update(credentials)

SECRET_KEYS = re.compile(r"(secret|token|password|passwd|pass|pwd|credential|session|key|auth|signature|cookie|"
                         r"private)", re.IGNORECASE)
REDACTED = "***"

USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#@\s:]*)(?::(?P<password>[^/?#@\s]*))?@")
QUERY_SECRET = re.compile(r"(?P<name>[?&;][^=&#\s]*(?:secret|token|pass|pwd|credential|signature|sig|key|auth)"
                          r"[^=&#\s]*=)(?P<value>[^&#\s]+)", re.IGNORECASE)
# Well-known token formats: AWS access key ids, GitHub, GitLab, Hugging Face, OpenAI, Slack, Google API keys, JWTs.
TOKENS = re.compile(
    r"(?<![A-Za-z0-9])(?:(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[A-Za-z0-9_-]{35}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
)
BASE64ISH = re.compile(r"[A-Za-z0-9+/]{30,}={0,2}")
HEX = re.compile(r"[0-9a-f]{32,}|[0-9A-F]{32,}")
# Values that must survive a round trip through config.json (eval and resume read them back): only URL passwords and
# well-known token formats are cut from these, never a guess from the shape alone.
PATH_KEYS = ("name", "path", "output", "deepspeed", "resume")


def _class(c: str) -> str:
    return "u" if c.isupper() else "l" if c.islower() else "d" if c.isdigit() else "o"


def key_like(s: str) -> bool:
    """A random-looking access key or secret: base64 or hex, 30+ characters, mixed case and digits that switch often
    (words and names have long runs of one kind: 'ChatGLM3Checkpoint'; keys do not: 'wJalrXUtnFEMI/K7MDENG')."""
    if HEX.fullmatch(s):
        return any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
    if not BASE64ISH.fullmatch(s) or s.startswith("/"):
        return False
    if not (any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)):
        return False
    runs = 1 + sum(_class(a) != _class(b) for a, b in zip(s, s[1:]))
    return len(s) / runs < 2.4


def _userinfo(m: re.Match) -> str:
    user, password = m["user"], m["password"]
    if password is not None:
        return f"{m['head']}{user}:{REDACTED}@"
    return f"{m['head']}{REDACTED if key_like(user) or TOKENS.fullmatch(user) else user}@"


def redact_text(s: str, *, by_shape: bool = True) -> str:
    """`s` with URL passwords, secret query values and token-shaped strings replaced by ***."""
    if not isinstance(s, str):
        return s
    out = USERINFO.sub(_userinfo, s)
    out = QUERY_SECRET.sub(lambda m: m["name"] + REDACTED, out)
    out = TOKENS.sub(REDACTED, out)
    if by_shape and key_like(out):
        return REDACTED
    return out


def redact(obj, key: str = "", *, by_key: bool = True):
    """A copy of a config tree with secrets replaced: values under secret-named keys (when `by_key`), and secret-shaped
    values everywhere."""
    if isinstance(obj, dict):
        return {k: _item(str(k), v, by_key) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, key, by_key=by_key) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, by_shape=key not in PATH_KEYS)
    return obj


def _item(key: str, value, by_key: bool):
    if by_key and SECRET_KEYS.search(key):
        return _hide(value)
    return redact(value, key, by_key=by_key)


def _hide(value):
    if isinstance(value, dict):
        return {k: _hide(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_hide(v) for v in value]
    return REDACTED if isinstance(value, str) and value else value


def redacted_config(cfg) -> dict:
    """The config as it may be printed or stored: storage_options redacted by key and by shape, the rest by shape
    (config keys outside storage_options are emorec's own, none of them a secret: `train.pack_tokens` is a number)."""
    raw = cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)  # a RunConfig or its dict
    out = redact({k: v for k, v in raw.items() if k != "storage_options"}, by_key=False)
    if "storage_options" in raw:
        out["storage_options"] = redact(raw["storage_options"])
    return {k: out[k] for k in raw}
