"""Keep secrets out of everything emorec writes: configs, logs, reports, metadata."""

from __future__ import annotations

import re

from .config import RunConfig

SECRET_KEYS = re.compile(r"(secret|token|password|passwd|credential|session|key)", re.IGNORECASE)
REDACTED = "***"


def redact(obj):
    if isinstance(obj, dict):
        return {k: (REDACTED if SECRET_KEYS.search(str(k)) and not isinstance(v, (dict, list)) else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def redacted_config(cfg: RunConfig) -> dict:
    raw = cfg.model_dump()
    raw["storage_options"] = redact(raw["storage_options"])
    return raw
