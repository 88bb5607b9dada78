"""M2 figures (PNG): analogies (style fixed, class varied) and class-conditional samples."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pyro_bdl.figures.dlgm import sample_grid


def analogy_grid(
    originals: torch.Tensor, decoded: torch.Tensor, path: str | os.PathLike[str], *, side: int = 28
) -> Path:
    """One row per input: the input image, then its style decoded as each class.

    ``originals`` (n, side*side); ``decoded`` (n, K, side*side) from :func:`pyro_bdl.models.m2.analogies`.
    """
    if decoded.dim() != 3 or decoded.shape[0] != originals.shape[0]:
        raise ValueError(f"decoded must be (n, K, D) with n = {originals.shape[0]}, got {tuple(decoded.shape)}")
    rows = torch.cat([originals.unsqueeze(1).to(decoded.dtype), decoded], dim=1)  # (n, K + 1, D)
    return sample_grid(
        rows.flatten(0, 1),
        path,
        columns=rows.shape[1],
        side=side,
        title="analogies: input, then its style with each class 0..K-1",
    )


def class_samples_grid(samples: torch.Tensor, path: str | os.PathLike[str], *, side: int = 28) -> Path:
    """Class-conditional samples (n, K, side*side): one column per class, one row per style draw."""
    return sample_grid(
        samples.flatten(0, 1),
        path,
        columns=samples.shape[1],
        side=side,
        title="samples: one style per row, classes 0..K-1 across",
    )
