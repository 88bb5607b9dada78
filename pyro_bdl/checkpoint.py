"""Checkpoints that survive interruption: atomic writes, safe loads, every RNG captured.

A checkpoint is a dict of tensors, numbers, strings and nested dicts/lists of those (model,
optimizer and scheduler ``state_dict``s, the epoch, metrics history). It is written to a
temporary file in the same folder and renamed over the old one
(:func:`triton_kernels.files.atomic_write`), so a crash mid-write never leaves a corrupt
checkpoint, and temporaries a killed run left behind are removed by the next save. It is read
back with ``torch.load(weights_only=True)``, so no pickled code runs.

Exact resume needs every random stream the run draws from: :func:`rng_state` captures torch's
global generator (dropout, ``torch.randn``), the CUDA generators, numpy's and Python's global
ones; :func:`set_rng_state` restores them. A resumed run then replays the same draws as an
uninterrupted one (at a fixed thread count).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from triton_kernels.files import atomic_write, remove_stale_temporaries

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, first removing temporaries of killed earlier writes."""
    remove_stale_temporaries(path)
    atomic_write(path, lambda temporary: torch.save(state, temporary))


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a checkpoint dict (got {type(state).__name__})")
    return state


def rng_state() -> dict[str, Any]:
    """The global random streams a training run draws from, as checkpoint-safe values.

    Keys: ``torch`` (uint8 tensor), ``cuda`` (list of uint8 tensors, empty without CUDA),
    ``numpy`` (the legacy ``np.random`` state as a dict), ``python`` (``random.getstate()`` as
    nested lists). Everything loads with ``weights_only=True``.
    """
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached"]))  # fmt: skip
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))
