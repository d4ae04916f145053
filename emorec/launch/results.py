"""Results tables over finished runs: what the quickstart and sweeps print."""

from __future__ import annotations

from typing import Iterable


def results_table(rows: Iterable[dict]) -> str:
    rows = list(rows)
    header = ("job", "dataset", "method", "metric", "value", "chance", "steps", "time_s", "status")
    lines = []
    for r in rows:
        value, floor = r.get("value"), r.get("chance")
        lines.append((
            r.get("name", "?"), r.get("dataset", "?"), r.get("method", "?"), r.get("primary", "-"),
            f"{100 * value:.2f}" if isinstance(value, float) else "-",
            f"{100 * floor:.2f}" if isinstance(floor, float) else "-", str(r.get("steps", "-")),
            f"{r['wall_seconds']:.1f}" if isinstance(r.get("wall_seconds"), (int, float)) else "-",
            r.get("status", "ok"),
        ))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    failures = [f"  {r.get('name')}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join(out + (["", "failures:", *failures] if failures else []))
