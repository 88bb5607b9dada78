"""DRAW figure (PNG): the canvas sequence ``E[x | c_t]``, t = 1..T, one digit per row (the seed's DRAW figure).

Draws on its own :class:`matplotlib.figure.Figure` (no pyplot state), writes a PNG and returns the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_bdl.figures.dlgm import _gray_with_gaps, _save, _tile


def canvas_sequence(
    canvases: torch.Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    image_size: tuple[int, int] = (28, 28),
    title: str = "DRAW canvas sigmoid(c_t), t = 1..T",
) -> Path:
    """Tile ``canvases`` ``(T, n, rows * columns)`` in [0, 1] as n rows (digits) of T columns (glimpses)."""
    array = canvases.detach().cpu().numpy() if isinstance(canvases, torch.Tensor) else np.asarray(canvases)
    rows, cols = image_size
    if array.ndim != 3 or array.shape[2] != rows * cols or min(array.shape[:2]) < 1:
        raise ValueError(f"canvases must be (T, n, {rows * cols}) with T, n >= 1, got {tuple(array.shape)}")
    steps, n = array.shape[:2]
    images = array.transpose(1, 0, 2).reshape(n * steps, rows, cols).astype(np.float32)
    canvas = _tile(images, steps)
    fig = Figure(figsize=(max(canvas.shape[1] / 28, 2.5), canvas.shape[0] / 28 + 0.5))
    ax = fig.add_subplot()
    ax.imshow(canvas, cmap=_gray_with_gaps(), vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([(t + 0.5) * (cols + 1) - 1 for t in range(steps)], [str(t + 1) for t in range(steps)], fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("glimpse t")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
