"""The report's pictures: a confusion matrix per job and every job's training curve (matplotlib, Agg)."""

from __future__ import annotations

import io


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return buf.getvalue()


def confusion_png(job: dict) -> bytes | None:
    """Rows are gold labels, columns predictions; colour is the row share, numbers are counts.
    Multi-label runs (GoEmotions) get one row per label: TN, FP, FN, TP."""
    cm, labels = job.get("confusion_matrix"), job.get("labels")
    if not cm or not labels:
        return None
    import numpy as np

    plt = _plt()
    m = np.asarray(cm, dtype=float)
    multilabel = m.ndim == 3
    if multilabel:  # (labels, 2, 2): [[TN, FP], [FN, TP]]
        m = m.reshape(len(labels), 4)
        cols, rows = ["TN", "FP", "FN", "TP"], labels
    else:
        cols, rows = labels, labels
    shares = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(cols) + 2.5), max(3.5, 0.38 * len(rows) + 2.0)
    fig, ax = plt.subplots(figsize=size)
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45 if not multilabel else 0, ha="right" if not multilabel else "center",
                  fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("outcome" if multilabel else "predicted")
    ax.set_ylabel("label" if multilabel else "gold")
    if m.size <= 40 * 40:
        for (i, k), v in np.ndenumerate(m):
            ax.text(k, i, f"{int(v)}", ha="center", va="center", fontsize=7,
                    color="white" if shares[i, k] > 0.6 else "black")
    value = job.get("value")
    title = f"{job.get('name', '')}: {job.get('primary', '')} = {100 * value:.1f}%" if isinstance(value, (int, float)) else job.get("name", "")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of row")
    fig.tight_layout()
    return _png(fig)


def curves_png(curves: dict[str, list[list[float]]]) -> bytes | None:
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, curve in sorted(curves.items()):
        ax.plot([p[0] for p in curve], [p[1] for p in curve], label=name, linewidth=1.2,
                marker="o" if len(curve) < 20 else None, markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("training curves")
    ax.grid(True, alpha=0.3)
    if len(curves) <= 14:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
