"""EmoryNLP from its native release: three JSON files of episodes and scenes; a dialogue is a scene."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from fsspec import AbstractFileSystem

from emorec.data import DuplicateKey, fixed_split_files, read_text, unique_object
from emorec.data.schema import DatasetSpec, Example, LoadedDataset, RowPolicy, Turn
from emorec.errors import DataError

_LABELS = ("Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared")
SPEC = DatasetSpec(
    name="emorynlp",
    labels=_LABELS,
    verbalisers={label: label.lower() for label in _LABELS},
    metric="weighted_f1",
    dialogue=True,
    neutral="Neutral",
)
FILES = {
    "train": "emotion-detection-trn.json",
    "validation": "emotion-detection-dev.json",
    "test": "emotion-detection-tst.json",
}
_KEYS = {"utterance_id": str, "speakers": list, "transcript": str, "emotion": str}


def load(path: str, *, on_bad_row: str = "error", seed: int = 0, **options) -> LoadedDataset:
    fs, files = fixed_split_files("emorynlp", path, FILES, options)
    skipped: Counter = Counter()
    policy = RowPolicy(on_bad_row, skipped)
    splits = {split: _read_split(fs, file, policy) for split, file in files.items()}
    return LoadedDataset(SPEC, splits, skipped)


def _read_split(fs: AbstractFileSystem, file: str, policy: RowPolicy) -> list[Example]:
    text = read_text(file, fs)
    try:
        data = json.loads(text, object_pairs_hook=unique_object)
    except json.JSONDecodeError as error:
        raise DataError(f"invalid JSON: {error.msg} (column {error.colno})", file=file, line=error.lineno) from None
    except DuplicateKey as error:
        raise DataError(f"key {error.key!r} appears twice in one JSON object; a JSON reader would keep only the "
                        "last one and drop the other silently: give it once", file=file) from None
    episodes = data.get("episodes") if isinstance(data, dict) else None
    if not isinstance(episodes, list):
        raise DataError('expected a top-level object {"episodes": [...]}', file=file)

    examples: list[Example] = []
    seen: set[str] = set()
    for episode in episodes:
        for scene in _children(episode, "scenes", "episode", "episode_id", policy, file):
            context: list[Turn] = []
            for utterance in _children(scene, "utterances", "scene", "scene_id", policy, file):
                turn = _read_utterance(utterance, scene, seen, policy, file)
                if turn is None:
                    continue
                utterance_id, speaker, text, label = turn
                if label is not None:
                    examples.append(Example(utterance_id, text, (label,), speaker, tuple(context)))
                context.append(Turn(speaker, text))
    return examples


def _children(parent: Any, key: str, kind: str, id_key: str, policy: RowPolicy, file: str) -> list:
    children = parent.get(key) if isinstance(parent, dict) else None
    if isinstance(children, list):
        return children
    name = parent.get(id_key, "?") if isinstance(parent, dict) else "?"
    policy.bad(f"malformed {kind}", f"{kind} {name} has no {key!r} list", file=file, line=None)
    return []


def _read_utterance(
    utterance: Any, scene: dict, seen: set[str], policy: RowPolicy, file: str
) -> tuple[str, str | None, str, str | None] | None:
    """(id, speaker, text, label or None for an unknown emotion), or None when it is no usable turn."""
    where = f"an utterance of scene {scene.get('scene_id', '?')}"
    if isinstance(utterance, dict) and isinstance(utterance.get("utterance_id"), str):
        where = f"utterance {utterance['utterance_id']}"
    for key, kind in _KEYS.items():
        if not isinstance(utterance, dict) or not isinstance(utterance.get(key), kind):
            policy.bad(
                "malformed utterance",
                f"{where} has no {kind.__name__} {key!r}; expected keys {', '.join(_KEYS)}",
                file=file, line=None,
            )
            return None
    utterance_id = utterance["utterance_id"]
    if utterance_id in seen:
        policy.bad("duplicate id", f"{where} appears twice", file=file, line=None)
        return None
    seen.add(utterance_id)
    text = utterance["transcript"].strip()
    if not text:
        policy.bad("empty transcript", f"{where} has an empty transcript", file=file, line=None)
        return None
    speaker = " & ".join(str(name) for name in utterance["speakers"]) or None
    emotion = utterance["emotion"]
    if emotion not in SPEC.labels:
        policy.bad(
            "unknown emotion", f"{where}: emotion {emotion!r} is not one of {', '.join(SPEC.labels)}",
            file=file, line=None,
        )
        return utterance_id, speaker, text, None
    return utterance_id, speaker, text, emotion
