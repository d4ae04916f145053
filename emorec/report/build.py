"""`emorec report RUN_URL`: the tables and plots people read, from a sweep's or one run's output.

Reads OUTPUT/results.json (a sweep), or OUTPUT/metrics.json (one run), or, for a sweep still running,
whatever OUTPUT/<job>/metrics.json files exist; on a local path or any fsspec URL (s3://...). Writes:

  report.md            results table with the best published number beside each result, plots, scaling
  results.csv          the same table, machine-readable (values in percent)
  confusion/<job>.png  one confusion matrix per job
  train_curves.png     training loss of every job
  scaling.png, scaling.csv, scaling section in report.md   when the sweep has several worker counts
  tensorboard/<job>/   TensorBoard event files of every job's training curve

A single run writes its own TensorBoard files (OUTPUT/tensorboard/) when it finishes.
"""

from __future__ import annotations

import json
import logging
import posixpath
from typing import Any

from emorec.config import parse_options
from emorec.errors import DataError, EmorecError
from emorec.io.paths import safe_name
from emorec.io.storage import RunStore, open_store
from emorec.report import scaling
from emorec.report.comm_model import DEFAULT_BANDWIDTH_GBS, CommModel
from emorec.report.plots import confusion_png, curves_png
from emorec.report.published import sources_note
from emorec.report.tables import result_rows, results_markdown, to_csv
from emorec.train.tensorboard import write_tensorboard

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Reading a run or sweep
# --------------------------------------------------------------------------------------------------

def _url(store: RunStore, rel: str) -> str:
    return f"{store.url.rstrip('/')}/{rel}" if rel else store.url


def _try_json(store: RunStore, rel: str, *, strict: bool = True):
    """The JSON at `rel`, or None where there is no such file. A file that is not JSON (or is JSON null) is an error
    naming it (`strict`, for the files a report is made of), or a warning and None."""
    try:
        data = store.read_json(rel)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as e:
        if strict:
            raise DataError(f"cannot be read ({type(e).__name__}: {e})", file=_url(store, rel)) from None
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if strict:
            raise DataError(f"not valid JSON ({e})", file=_url(store, rel)) from None
        log.warning("%s: not valid JSON (%s); skipped", _url(store, rel), e)
        return None
    if data is None and strict:
        raise DataError("holds JSON null, expected a JSON object or array", file=_url(store, rel))
    return data


# The keys a report reads from a metrics.json or a results.json row, and what each must be (null is allowed).
_STR_KEYS = ("name", "dataset", "method", "metric", "primary", "split", "status", "error")
_NUMBER_KEYS = ("value", "chance", "final_loss", "train_seconds", "wall_seconds", "samples_per_s", "tokens_per_s",
                "step_time_s", "step_time_mean_s", "time_to_first_step_s")
_INT_KEYS = ("n", "steps", "world_size", "workers", "trainable_params", "total_params", "param_bytes", "grad_bytes",
             "zero_stage", "micro_batch_size", "grad_accum")


def _kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad(where: str, key: str, expected: str, value) -> DataError:
    shown = json.dumps(value)[:60] if not isinstance(value, (dict, list)) else _kind(value)
    return DataError(f"key '{key}' must be {expected}, got {shown}", file=where)


def check_metrics(data, where: str, *, prefix: str = "") -> dict:
    """`data` as read from a metrics.json (or one job row of a results.json) if it has the shape a report reads,
    else a DataError naming the file `where` and the key."""
    if not isinstance(data, dict):
        what = f"key '{prefix.rstrip('.')}' must be" if prefix else "expected"
        raise DataError(f"{what} a JSON object of run metrics, got {_kind(data)}", file=where)
    for key in _STR_KEYS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise _bad(where, prefix + key, "a string", data[key])
    for key in _NUMBER_KEYS:
        if data.get(key) is not None and not _is_number(data[key]):
            raise _bad(where, prefix + key, "a number", data[key])
    for key in _INT_KEYS:
        v = data.get(key)
        if v is not None and not (_is_number(v) and float(v).is_integer() and v >= 0):
            raise _bad(where, prefix + key, "a whole number >= 0", v)
    name = data.get("name")
    if name is not None and (not name or "/" in name or "\\" in name or name in (".", "..")):
        raise _bad(where, prefix + "name", "a job name (one directory of the sweep)", name)
    values = data.get("values")
    if values is not None:
        if not isinstance(values, dict):
            raise _bad(where, prefix + "values", "an object of metric -> number", values)
        for k, v in values.items():
            if v is not None and not _is_number(v):
                raise _bad(where, f"{prefix}values.{k}", "a number", v)
    labels = data.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise _bad(where, prefix + "labels", "an array of label names", labels)
    cm = data.get("confusion_matrix")
    if cm is not None and labels is not None:
        n = len(labels or [])
        square = isinstance(cm, list) and len(cm) == n and all(
            isinstance(r, list) and len(r) == n and all(_is_number(x) for x in r) for r in cm)
        per_label = isinstance(cm, list) and len(cm) == n and all(
            isinstance(m, list) and len(m) == 2 and all(isinstance(r, list) and len(r) == 2
                                                        and all(_is_number(x) for x in r) for r in m) for m in cm)
        if not (square or per_label):
            raise DataError(f"key '{prefix}confusion_matrix' must be a {n} x {n} array of counts (one row per label "
                            f"in 'labels'), or {n} x 2 x 2 for a multi-label run", file=where)
    return data


def check_results(data, where: str) -> dict:
    """A sweep's results.json: {"jobs": [row, ...], ...}, each row shaped like a metrics.json."""
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object {{\"jobs\": [...], ...}}, got {_kind(data)}", file=where)
    jobs = data.get("jobs")
    if not isinstance(jobs, list):
        raise _bad(where, "jobs", "an array of job rows", jobs)
    for i, row in enumerate(jobs):
        check_metrics(row, where, prefix=f"jobs[{i}].")
    for key in ("makespan_s",):
        if data.get(key) is not None and not _is_number(data[key]):
            raise _bad(where, key, "a number", data[key])
    if data.get("max_concurrent") is not None and not (isinstance(data["max_concurrent"], int)
                                                       and not isinstance(data["max_concurrent"], bool)):
        raise _bad(where, "max_concurrent", "a whole number", data["max_concurrent"])
    return data


def _metrics(store: RunStore, rel: str):
    data = _try_json(store, rel)
    return None if data is None else check_metrics(data, _url(store, rel))


def load_results(store: RunStore) -> dict[str, Any]:
    """{"kind": "sweep"|"run", "jobs": [row, ...], "meta": {...}}; each row is the job's metrics.json
    (with the sweep's status/error) and "_dir", the job's directory relative to the store root."""
    sweep = _try_json(store, "results.json")
    if sweep is not None:
        check_results(sweep, _url(store, "results.json"))
        rows = []
        for row in sweep["jobs"]:
            name = row.get("name") or "?"
            metrics = _metrics(store, f"{name}/metrics.json") if row.get("status", "ok") == "ok" and name != "?" \
                else None
            rows.append({**row, **(metrics or {}), "status": row.get("status") or "ok", "_dir": name,
                         "model": _model_name(store, name)})
        meta = {k: v for k, v in sweep.items() if k != "jobs"}
        return {"kind": "sweep", "jobs": rows, "meta": meta}
    single = _metrics(store, "metrics.json")
    if single is not None:
        return {"kind": "run", "jobs": [{**single, "status": "ok", "_dir": "", "model": _model_name(store, "")}],
                "meta": {}}
    rows = []
    for name in store.listdir():
        metrics = _metrics(store, f"{name}/metrics.json")
        if metrics is not None:
            rows.append({**metrics, "status": "ok", "_dir": name, "model": _model_name(store, name)})
    if rows:
        return {"kind": "sweep", "jobs": rows, "meta": {"partial": True}}
    raise EmorecError(f"{store.url}: no results.json (sweep), metrics.json (run) or <job>/metrics.json found")


def _model_name(store: RunStore, job_dir: str) -> str | None:
    cfg = _try_json(store, posixpath.join(job_dir, "config.json") if job_dir else "config.json", strict=False)
    model = cfg.get("model") if isinstance(cfg, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) else None


def _curve(store: RunStore, row: dict) -> list[list[float]]:
    rel = posixpath.join(row["_dir"], "train_curve.json") if row["_dir"] else "train_curve.json"
    return _checked_curve(_try_json(store, rel), _url(store, rel))


def _checked_curve(curve, where: str) -> list[list[float]]:
    if curve is None:
        return []
    if not (isinstance(curve, list) and all(isinstance(p, list) and len(p) == 2 and all(_is_number(x) for x in p)
                                            for p in curve)):
        raise DataError("expected a training curve: an array of [step, loss] pairs", file=where)
    return [list(p) for p in curve]


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------

RESULT_COLUMNS = ("job", "dataset", "method", "model", "workers", "split", "metric", "value", "chance",
                  "published_best", "published_source", "chatglm2_lora_instructerc", "n", "steps", "samples_per_s",
                  "status", "error")


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# TensorBoard
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------

def build_report(run_url: str, out: str | None = None, *, storage_options: dict | None = None,
                 bandwidth_gbs: float | None = None, project_to: int = 64, tensorboard: bool = True) -> dict[str, Any]:
    """Write the report for RUN_URL into OUT (default RUN_URL/report); returns what was written."""

    store = open_store(run_url, storage_options)
    results = load_results(store)
    jobs = results["jobs"]
    out_url = out or f"{run_url.rstrip('/')}/report"
    dest = open_store(out_url, storage_options)
    written: dict[str, Any] = {"out": out_url, "confusion": [], "tensorboard": []}

    # Every file the report reads is read (and its shape checked) before anything is written.
    curves = {str(j.get("name")): _curve(store, j) for j in jobs if j.get("status", "ok") == "ok"}
    rows = result_rows(jobs)
    dest.write_bytes("results.csv", to_csv(rows, RESULT_COLUMNS))
    written["results_csv"] = dest.path("results.csv")

    confusion_links = []
    for job in jobs:
        png = confusion_png(job) if job.get("status", "ok") == "ok" else None
        if png:
            rel = f"confusion/{safe_name(str(job.get('name')))}.png"
            dest.write_bytes(rel, png)
            written["confusion"].append(rel)
            confusion_links.append((job.get("name"), rel))

    curves_image = curves_png(curves)
    if curves_image:
        dest.write_bytes("train_curves.png", curves_image)
        written["train_curves"] = "train_curves.png"

    if tensorboard:
        for job in jobs:
            name = str(job.get("name"))
            if curves.get(name):
                written["tensorboard"] += write_tensorboard(dest, curves[name], job, rel=f"tensorboard/{safe_name(name)}")

    model = CommModel(bandwidth_gbs or DEFAULT_BANDWIDTH_GBS)
    analysis = scaling.analyse([j for j in jobs], model=model, project_to=project_to)
    scaling_md = ""
    if analysis["groups"]:
        projections = {k: v["projections"] for k, v in analysis["groups"].items()}
        groups = scaling.scaling_groups(jobs)
        dest.write_bytes("scaling.png", scaling.scaling_plot(groups, projections, model))
        dest.write_bytes("scaling.csv", to_csv(scaling.csv_rows(analysis), SCALING_COLUMNS))
        dest.write_json("scaling.json", analysis)
        written.update(scaling_png="scaling.png", scaling_csv="scaling.csv")
        scaling_md = scaling.markdown(analysis)

    md = _markdown(run_url, results, rows, confusion_links, bool(curves_image), scaling_md, analysis, written)
    dest.write_bytes("report.md", md.encode("utf-8"))
    written["report_md"] = dest.path("report.md")
    return written


SCALING_COLUMNS = ("group", "kind", "zero_stage", "workers", "samples_per_s", "tokens_per_s", "step_time_s",
                   "time_to_first_step_s", "speedup", "efficiency", "comm_s", "bandwidth_gbs")


def _markdown(run_url, results, rows, confusion_links, has_curves, scaling_md, analysis, written) -> str:
    meta = results["meta"]
    jobs = results["jobs"]
    ok = sum(r["status"] == "ok" for r in rows)
    lines = [f"# emorec report: {run_url}", ""]
    if results["kind"] == "sweep":
        summary = f"{len(rows)} jobs, {ok} ok, {len(rows) - ok} failed"
        if isinstance(meta.get("makespan_s"), (int, float)):
            summary += f"; makespan {meta['makespan_s']:.1f} s, {meta.get('max_concurrent', '?')} at a time"
        if meta.get("partial"):
            summary += " (no results.json yet: the jobs that have finished)"
        lines += [summary, ""]
    lines += ["## Results", "", results_markdown(rows), "",
              "Chance is what guessing one label uniformly at random scores on the same split.", "", sources_note()]
    if any(str(j.get("model") or "").startswith("tiny") for j in jobs) \
            or any(r.get("n") is not None and int(r["n"]) < 200 for r in rows):
        lines += ["", "Runs on the tiny test model or on small evaluation sets (fixtures, `data.max_eval_samples`) are "
                      "not comparable with the published test-set numbers."]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Failures:", ""] + [f"- `{r['job']}`: {r.get('error') or 'failed'}" for r in failed]
    if has_curves:
        lines += ["", "## Training curves", "", "![training curves](train_curves.png)"]
    if written["tensorboard"]:
        lines += ["", f"TensorBoard: `tensorboard --logdir {written['out'].rstrip('/')}/tensorboard`"]
    if confusion_links:
        lines += ["", "## Confusion matrices", ""]
        lines += [f"- {name}: ![{name}]({rel})" for name, rel in confusion_links]
    if scaling_md:
        lines += ["", "## Scaling", "", "![scaling](scaling.png)", "",
                  "Speedup = throughput / throughput at the smallest worker count; efficiency = speedup / worker "
                  f"ratio. Projection assumption: {analysis['assumption']}.", "", scaling_md]
        concurrent = meta.get("max_concurrent")
        if isinstance(concurrent, int) and concurrent > 1:
            lines += ["", f"Warning: the sweep ran {concurrent} jobs at a time, so the timed jobs may have shared "
                          "machines; rerun with max_concurrent=1 for clean numbers."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

def cmd_report(args) -> int:
    written = build_report(args.run, args.out, storage_options=parse_options(args.storage_option, '--storage-option'),
                           bandwidth_gbs=args.bandwidth_gbs, project_to=args.project_to,
                           tensorboard=not args.no_tensorboard)
    print(f"report: {written['report_md']}")
    print(f"table:  {written['results_csv']}")
    for key in ("train_curves", "scaling_png", "scaling_csv"):
        if key in written:
            print(f"{key.replace('_', ' ')}: {written['out'].rstrip('/')}/{written[key]}")
    if written["confusion"]:
        print(f"confusion matrices: {len(written['confusion'])} under {written['out'].rstrip('/')}/confusion/")
    if written["tensorboard"]:
        print(f"tensorboard --logdir {written['out'].rstrip('/')}/tensorboard")
    return 0


def register(subparsers) -> None:
    r = subparsers.add_parser(
        "report", help="tables and plots from a sweep's or a run's output (markdown, CSV, PNG, TensorBoard)",
        description="Read a sweep output (OUTPUT/results.json) or one run (OUTPUT/metrics.json), local or on "
                    "object storage, and write report.md, results.csv with the best published number beside each "
                    "result, confusion-matrix PNGs, training curves (PNG and TensorBoard) and, for a scaling sweep "
                    "(grid ray.workers: [1, 2, 4, ...]), speedup/efficiency tables, a projection and scaling.png.")
    r.add_argument("run", metavar="RUN_URL", help="the sweep's or run's output (path, file://, s3://...)")
    r.add_argument("--out", help="where the report goes (default RUN_URL/report)")
    r.add_argument("--bandwidth-gbs", type=float, default=None,
                   help="per-GPU collective bandwidth assumed by the projection, GB/s (default "
                        "50: one 400 Gb/s InfiniBand NIC per GPU)")
    r.add_argument("--project-to", type=int, default=64, help="project scaling up to this many workers")
    r.add_argument("--storage-option", action="append", metavar="key=value",
                   help="fsspec option for RUN_URL and --out, e.g. endpoint_url=http://host:9000 (repeatable)")
    r.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard event files")
    r.set_defaults(func=cmd_report)
