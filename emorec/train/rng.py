"""Save and restore every RNG a training step touches, without pickle (safetensors + JSON)."""

from __future__ import annotations

import json
import random

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def save_rng(path: str) -> None:
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    tensors = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
    }
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    meta = {
        "python_version": str(py_version),
        "python_gauss": json.dumps(py_gauss),
        "numpy_pos": str(np_state[2]),
        "numpy_has_gauss": str(np_state[3]),
        "numpy_gauss": repr(float(np_state[4])),
    }
    save_file(tensors, path, metadata=meta)


def load_rng(path: str) -> None:
    from safetensors import safe_open

    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    random.setstate((int(meta["python_version"]), tuple(tensors["python"].tolist()), json.loads(meta["python_gauss"])))
    np.random.set_state(
        ("MT19937", tensors["numpy_keys"].numpy().astype(np.uint32), int(meta["numpy_pos"]),
         int(meta["numpy_has_gauss"]), float(meta["numpy_gauss"]))
    )
