"""Checkpoints that survive interruption: atomic writes, safe loads.

A checkpoint is a dict of tensors, numbers, strings and nested dicts/lists of those (model,
optimizer and scheduler ``state_dict``s, the epoch, metrics history). It is written to a
temporary file in the same folder and renamed over the old one, so a crash mid-write never
leaves a corrupt checkpoint. It is read back with ``torch.load(weights_only=True)``, so no
pickled code runs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a checkpoint dict (got {type(state).__name__})")
    return state
