"""Where a training step's time goes: device busy time against wall time, by kernel group, and the host calls."""

from __future__ import annotations

import time
from typing import Callable

import torch


def profile_steps(step: Callable[[int], tuple[int, int]], first: int, n: int, device: torch.device) -> dict:
    """torch.profiler over `n` steps: device busy time against wall time, and the kernels that take it."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for k in range(first, first + n):
            step(k)
        sync()
        wall = time.perf_counter() - start
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    if device.type == "cuda":
        events = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
    busy_us = sum(getattr(e, attr) for e in events)
    groups: dict[str, float] = {}
    for e in events:
        group = _kernel_group(e.key)
        groups[group] = groups.get(group, 0.0) + getattr(e, attr) / 1e6
    top = sorted(events, key=lambda e: -getattr(e, attr))[:12]
    host = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    return {
        "host_top": [{"name": e.key[:120], "seconds": e.self_cpu_time_total / 1e6, "calls": e.count} for e in host],
        "steps": n, "wall_s": wall, "busy_s": busy_us / 1e6, "busy_fraction": busy_us / 1e6 / wall if wall else None,
        "groups_s": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "top": [{"name": e.key[:120], "seconds": getattr(e, attr) / 1e6, "calls": e.count} for e in top],
    }


def _kernel_group(name: str) -> str:
    low = name.lower()
    if "flex" in low or "triton_tem" in low or "attention" in low or "fmha" in low or "flash" in low:
        return "attention"
    if any(k in low for k in ("gemm", "nvjet", "cutlass", "xmma", "matmul", "aten::mm", "aten::addmm", "aten::bmm")):
        return "matmul"
    if "triton" in low:
        return "fused (inductor)"
    if "memcpy" in low or "memset" in low:
        return "copies"
    return "other kernels"
