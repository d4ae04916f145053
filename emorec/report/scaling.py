"""Scaling sweeps: the same job at 1, 2, 4, ... workers, what each run measures, and what it means.

A sweep whose `grid` has `ray.workers: [1, 2, 4, ...]` is a scaling sweep. emorec scales *weakly*: every
worker keeps `micro_batch_size x grad_accum` samples per optimizer step, so the global batch grows with
the worker count (and so does the number of samples one step sees).

Each run measures itself (emorec.train.throughput) into metrics.json. This module groups the runs of a
scaling sweep, compares every run with the smallest worker count of its group (speedup, efficiency),
projects to larger counts with emorec.report.comm_model, and draws and tabulates the result.
"""

from __future__ import annotations

from typing import Any, Iterable

from emorec.report.comm_model import CommModel, _workers, default_projection_counts, dominance_note, project

# --------------------------------------------------------------------------------------------------
# Analysis: measured speedup and efficiency
# --------------------------------------------------------------------------------------------------

def group_key(row: dict) -> str | None:
    """Jobs of a scaling sweep that differ only in their worker count share a key: the `scaling_group` their sweep
    gave them (in metrics.json and results.json). Other jobs have none."""
    key = row.get("scaling_group")
    return str(key) if key else None


def scaling_groups(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """Finished runs with a throughput, grouped by job key; only groups with >= 2 worker counts
    (the first run of each worker count counts)."""
    groups: dict[str, dict[int, dict]] = {}
    for row in rows:
        key = group_key(row)
        if key is None or row.get("status", "ok") != "ok" or not row.get("samples_per_s"):
            continue
        groups.setdefault(key, {}).setdefault(_workers(row), row)
    return {k: [v[n] for n in sorted(v)] for k, v in groups.items() if len(v) >= 2}


def speedup_table(rows: Iterable[dict]) -> list[dict]:
    """Speedup and efficiency of each run against the smallest worker count of its group.

    speedup = throughput(N) / throughput(N0);  efficiency = speedup / (N / N0)   (1.0 = linear)."""
    rows = sorted(rows, key=_workers)
    base = rows[0]
    n0, thr0 = _workers(base), float(base["samples_per_s"])
    out = []
    for r in rows:
        n, thr = _workers(r), float(r["samples_per_s"])
        speedup = thr / thr0
        out.append({
            "job": r.get("name"), "workers": n, "samples_per_s": thr, "tokens_per_s": r.get("tokens_per_s"),
            "step_time_s": r.get("step_time_s"), "time_to_first_step_s": r.get("time_to_first_step_s"),
            "speedup": speedup, "efficiency": speedup / (n / n0), "base_workers": n0,
        })
    return out


# --------------------------------------------------------------------------------------------------
# Analysis: projection to larger worker counts
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------

def scaling_plot(groups: dict[str, list[dict]], projections: dict[str, dict[int, list[dict]]],
                 model: CommModel) -> bytes:
    """PNG: throughput vs workers (measured, linear ideal, projections per ZeRO stage) and efficiency."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_eff) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {2: "--", 3: ":"}
    for i, (key, rows) in enumerate(sorted(groups.items())):
        color = colors[i % len(colors)]
        table = speedup_table(rows)
        xs = [r["workers"] for r in table]
        ax.plot(xs, [r["samples_per_s"] for r in table], "o-", color=color, label=f"{key} measured")
        ax_eff.plot(xs, [r["efficiency"] for r in table], "o-", color=color, label=f"{key} measured")
        n0, thr0 = table[0]["workers"], table[0]["samples_per_s"]
        for stage, proj in sorted(projections.get(key, {}).items()):
            px = [p["workers"] for p in proj]
            ax.plot(px, [p["samples_per_s"] for p in proj], styles.get(stage, "-."), color=color, alpha=0.8,
                    label=f"{key} projected ZeRO-{stage}")
            ax_eff.plot(px, [p["efficiency"] for p in proj], styles.get(stage, "-."), color=color, alpha=0.8,
                        label=f"{key} projected ZeRO-{stage}")
        top = max([*xs, *[p["workers"] for proj in projections.get(key, {}).values() for p in proj]])
        ideal_x = [n0, top]
        ax.plot(ideal_x, [thr0, thr0 * top / n0], "-", color="grey", linewidth=0.8, alpha=0.6,
                label="linear" if i == 0 else None)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for a in (ax, ax_eff):
        a.set_xscale("log", base=2)
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("workers")
        a.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("samples/s")
    ax.set_title("throughput")
    ax_eff.set_ylabel("efficiency (speedup / workers ratio)")
    top_eff = max([1.0, *(line.get_ydata().max() for line in ax_eff.get_lines() if len(line.get_ydata()))])
    ax_eff.set_ylim(0, 1.1 * top_eff)
    ax_eff.set_title("scaling efficiency")
    ax_eff.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"projection: {model.describe()}", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Tables (markdown and CSV rows) for the report
# --------------------------------------------------------------------------------------------------

def analyse(rows: Iterable[dict], *, model: CommModel = CommModel(), project_to: int = 64) -> dict[str, Any]:
    """Everything the report shows about scaling: measured tables, projections for ZeRO-2 and ZeRO-3
    (and the run's own stage), and the dominance note, per group of jobs."""
    groups = scaling_groups(rows)
    out: dict[str, Any] = {"groups": {}, "assumption": model.describe(), "bandwidth_gbs": model.bandwidth_gbs}
    for key, group in groups.items():
        measured = speedup_table(group)
        base = group[0]
        counts = default_projection_counts([r["workers"] for r in measured], up_to=project_to)
        entry: dict[str, Any] = {"measured": measured, "projections": {}, "note": None}
        try:
            stages = sorted({2, 3, int(base.get("zero_stage", 2))})
            for stage in stages:
                entry["projections"][stage] = project(base, counts, model=model, stage=stage)
            entry["note"] = dominance_note(base, model, counts)
        except ValueError as e:
            entry["note"] = f"no projection: {e}"
        entry["own_stage"] = base.get("zero_stage")
        out["groups"][key] = entry
    return out


def markdown(analysis: dict[str, Any]) -> str:
    lines = []
    for key, entry in sorted(analysis["groups"].items()):
        lines += [f"### {key}", "", "Measured (weak scaling: each worker keeps its micro-batch x grad_accum per step):", "",
                  "| workers | samples/s | tokens/s | step time (s) | time to first step (s) | speedup | efficiency |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in entry["measured"]:
            lines.append(f"| {r['workers']} | {_f(r['samples_per_s'])} | {_f(r.get('tokens_per_s'))} | "
                         f"{_f(r.get('step_time_s'), 4)} | {_f(r.get('time_to_first_step_s'))} | "
                         f"{r['speedup']:.2f}x | {100 * r['efficiency']:.0f}% |")
        if entry["projections"]:
            lines += ["", f"Projected from {entry['measured'][0]['workers']} worker(s); assumption: {analysis['assumption']}."
                      f" The run's own stage is ZeRO-{entry.get('own_stage')}.", "",
                      "| ZeRO | workers | compute (s) | comm (s) | of which frozen-base gather (s) | GB/GPU/step | "
                      "samples/s | efficiency | comm > compute |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
            for stage, proj in sorted(entry["projections"].items()):
                for p in proj:
                    lines.append(f"| {stage} | {p['workers']} | {_f(p['compute_s'], 4)} | {_f(p['comm_s'], 4)} | "
                                 f"{_f(p['frozen_gather_s'], 4)} | {_f(p['comm_gb_per_step'], 4)} | {_f(p['samples_per_s'])} | "
                                 f"{100 * p['efficiency']:.0f}% | {'yes' if p['comm_dominates'] else ''} |")
        if entry.get("note"):
            lines += ["", entry["note"]]
        lines.append("")
    return "\n".join(lines)


def csv_rows(analysis: dict[str, Any]) -> list[dict]:
    rows = []
    for key, entry in sorted(analysis["groups"].items()):
        for r in entry["measured"]:
            rows.append({"group": key, "kind": "measured", "zero_stage": entry.get("own_stage"), "workers": r["workers"],
                         "samples_per_s": r["samples_per_s"], "tokens_per_s": r.get("tokens_per_s"),
                         "step_time_s": r.get("step_time_s"), "time_to_first_step_s": r.get("time_to_first_step_s"),
                         "speedup": r["speedup"], "efficiency": r["efficiency"], "comm_s": None,
                         "bandwidth_gbs": None})
        for stage, proj in sorted(entry["projections"].items()):
            for p in proj:
                rows.append({"group": key, "kind": "projected", "zero_stage": stage, "workers": p["workers"],
                             "samples_per_s": p["samples_per_s"], "tokens_per_s": None, "step_time_s": p["step_time_s"],
                             "time_to_first_step_s": None, "speedup": p["speedup"], "efficiency": p["efficiency"],
                             "comm_s": p["comm_s"], "bandwidth_gbs": p["bandwidth_gbs"]})
    return rows


def _f(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"
    return str(value)
