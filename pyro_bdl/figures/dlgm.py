"""DLGM figures (PNG): samples, 2-D latent space, missing-data imputation, ELBO curve.

Each function draws on its own :class:`matplotlib.figure.Figure` (no pyplot state, so it works
under any backend, ``Agg`` included), writes a PNG to ``path`` and returns the path. Images are
rows of ``side * side`` pixels (28 for MNIST) in [0, 1].
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

UNOBSERVED_RGB = (0.8, 0.1, 0.1)
"""Colour of the unobserved pixels in :func:`imputation_panels`."""


def _as_images(images: torch.Tensor | np.ndarray, side: int, arg: str) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim == 2 and array.shape[1] == side * side:
        array = array.reshape(-1, side, side)
    if array.ndim != 3 or array.shape[1:] != (side, side):
        raise ValueError(f"{arg} must be (n, {side * side}) or (n, {side}, {side}), got {tuple(array.shape)}")
    return array.astype(np.float32)


def _tile(images: np.ndarray, columns: int) -> np.ndarray:
    """Tile (n, h, w) images into one (rows * (h + 1) - 1, columns * (w + 1) - 1) array, 1-pixel gaps."""
    n, h, w = images.shape
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan, dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image
    return canvas


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def sample_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    columns: int = 10,
    side: int = 28,
    title: str = "samples",
) -> Path:
    """A grid of images, e.g. ``E[x | z]`` for ``z`` from the prior. ``images``: (n, side*side) or (n, side, side)."""
    array = _as_images(images, side, "images")
    canvas = _tile(array, min(columns, len(array)))
    fig = Figure(figsize=(canvas.shape[1] / 28, canvas.shape[0] / 28 + 0.4))
    ax = fig.add_subplot()
    cmap = _gray_with_gaps()
    ax.imshow(canvas, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title)
    return _save(fig, path)


def latent_scatter(
    z: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "posterior means in latent space",
    axis_labels: Sequence[str] = ("z[0]", "z[1]"),
) -> Path:
    """Scatter of 2-D latent codes ``z`` (n, 2) coloured by integer ``labels`` (n,)."""
    z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"z must be (n, 2), got {tuple(z.shape)}")
    if labels.shape != (z.shape[0],):
        raise ValueError(f"labels must be ({z.shape[0]},), got {tuple(labels.shape)}")
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    return _save(fig, path)


def imputation_panels(
    original: torch.Tensor | np.ndarray,
    obs_mask: torch.Tensor | np.ndarray,
    imputed: torch.Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    side: int = 28,
    title: str = "imputation",
) -> Path:
    """Three rows: original images, the observed pixels (unobserved in red), the imputed images.

    ``original``, ``imputed``: (n, side*side) or (n, side, side) in [0, 1]; ``obs_mask`` the same
    shape, True where observed.
    """
    original = _as_images(original, side, "original")
    imputed = _as_images(imputed, side, "imputed")
    mask = _as_images(obs_mask, side, "obs_mask") > 0.5
    if not original.shape == mask.shape == imputed.shape:
        raise ValueError(
            f"original, obs_mask and imputed must have one shape, got {original.shape}, {mask.shape}, {imputed.shape}"
        )
    n = len(original)
    observed = _ink_rgb(original, n)
    observed[_tile(np.where(mask, 0.0, 1.0), n) == 1.0] = UNOBSERVED_RGB  # the NaN gaps compare False
    gap = np.ones((2, observed.shape[1], 3))
    canvas = np.concatenate([_ink_rgb(original, n), gap, observed, gap, _ink_rgb(imputed, n)], axis=0)
    fig = Figure(figsize=(max(n, 3) * 0.6 + 0.8, 3 * 0.6 + 0.6))
    ax = fig.add_subplot()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([side / 2 + i * (side + 2) for i in range(3)], ["original", "observed", "imputed"], fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def elbo_curve(history: Sequence[dict], path: str | os.PathLike[str], *, title: str = "ELBO per datum") -> Path:
    """Train and validation ELBO (nats per datum) against epoch, from ``FitResult.history``."""
    if not history:
        raise ValueError("history must hold at least one epoch")
    epochs = [entry["epoch"] for entry in history]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(epochs, [entry["train_elbo"] for entry in history], label="train (running mean)")
    validation = [(e["epoch"], e["validation_elbo"]) for e in history if e.get("validation_elbo") is not None]
    if validation:
        ax.plot(*zip(*validation, strict=True), label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per datum)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _ink_rgb(images: np.ndarray, columns: int) -> np.ndarray:
    """Tiled (n, h, w) intensities as an RGB array, ink dark on white, gaps white."""
    gray = np.nan_to_num(1.0 - np.clip(_tile(images, columns), 0.0, 1.0), nan=1.0)
    return np.repeat(gray[..., None], 3, axis=-1)


def _gray_with_gaps():
    from matplotlib import colormaps

    return colormaps["gray_r"].with_extremes(bad="white")
