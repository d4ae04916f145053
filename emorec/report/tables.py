"""The results table: one row per job with the published numbers beside it, as CSV and as Markdown."""

from __future__ import annotations

import csv
import io

from emorec.report.published import published


def result_rows(jobs: list[dict]) -> list[dict]:
    rows = []
    for j in jobs:
        metric = j.get("primary") or ""
        value, floor = j.get("value"), j.get("chance")
        rows.append({
            "job": j.get("name", "?"), "dataset": j.get("dataset", "?"), "method": j.get("method", "?"),
            "model": j.get("model"),
            "workers": j.get("world_size"), "split": j.get("split"), "metric": metric,
            "value": round(100 * float(value), 2) if isinstance(value, (int, float)) else None,
            "chance": round(100 * float(floor), 2) if isinstance(floor, (int, float)) else None,
            **published(str(j.get("dataset", "")), metric),
            "n": j.get("n"), "steps": j.get("steps"),
            "samples_per_s": round(float(j["samples_per_s"]), 3) if j.get("samples_per_s") else None,
            "status": j.get("status", "ok"), "error": j.get("error"),
        })
    return rows


def to_csv(rows: list[dict], columns: tuple[str, ...] | list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue().encode("utf-8")


def _cell(v) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v).replace("|", "\\|")


def results_markdown(rows: list[dict]) -> str:
    header = ["job", "dataset", "method", "workers", "metric", "value (%)", "chance (%)", "best published (%)",
              "source", "ChatGLM2-6B LoRA, InstructERC (%)", "status"]
    keys = ["job", "dataset", "method", "workers", "metric", "value", "chance", "published_best", "published_source",
            "chatglm2_lora_instructerc", "status"]
    numeric = ("value", "chance", "published_best", "chatglm2_lora_instructerc", "workers")
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if k in numeric else "---" for k in keys) + "|"]
    out += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(out)
