"""Label counts per split, as a dict and as a text table (what `emorec data inspect` shows)."""

from __future__ import annotations

from collections import Counter

from emorec.data.schema import SPLITS, LoadedDataset


def counts(ds: LoadedDataset) -> dict:
    """Utterances and per-label counts per split; a multi-label utterance counts under each of its labels.

    Every spec label is listed (zeros included, spec order) so tables from different runs line up.
    """
    splits = {}
    for split in SPLITS:
        examples = ds.splits.get(split, [])
        tally = Counter(label for ex in examples for label in ex.labels)
        splits[split] = {"n": len(examples), "labels": {label: tally[label] for label in ds.spec.labels}}
    return {"dataset": ds.spec.name, "splits": splits, "skipped": dict(sorted(ds.skipped.items()))}


def table(c: dict) -> str:
    splits = list(c["splits"])
    rows = [[c["dataset"], *splits]]
    labels = list(c["splits"][splits[0]]["labels"]) if splits else []
    rows += [[label, *(str(c["splits"][s]["labels"].get(label, 0)) for s in splits)] for label in labels]
    rows.append(["n (utterances)", *(str(c["splits"][s]["n"]) for s in splits)])
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join([r[0].ljust(width[0]), *(v.rjust(w) for v, w in zip(r[1:], width[1:]))]).rstrip() for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in width))
    lines.insert(len(lines) - 1, lines[1])
    skipped = c.get("skipped") or {}
    lines.append("skipped rows: " + (", ".join(f"{r} {k}" for r, k in skipped.items()) if skipped else "none"))
    return "\n".join(lines)
