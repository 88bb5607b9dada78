"""RBM figures (PNG): receptive fields (filters) and Gibbs samples."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pyro_bdl.figures.dlgm import sample_grid
from pyro_bdl.models.rbm import RBM, bernoulli
from pyro_bdl.validation import check_int


def filter_grid(rbm: RBM, path: str | os.PathLike[str], *, count: int = 100, side: int = 28,
                columns: int = 10) -> Path:  # fmt: skip
    """The first ``count`` hidden units' weights ``W[:, j]`` (D = side * side) as images, each scaled to
    [0, 1] by its own largest magnitude (0.5 is zero weight)."""
    return fields_grid(rbm.weight.detach(), path, count=count, side=side, columns=columns,
                       title="filters: W[:, j] (grey is 0)")  # fmt: skip


def fields_grid(fields: torch.Tensor, path: str | os.PathLike[str], *, count: int = 100, side: int = 28,
                columns: int = 10, title: str = "receptive fields (grey is 0)") -> Path:  # fmt: skip
    """The first ``count`` columns of ``fields`` (side * side, H) as images, each scaled by its own
    largest magnitude to [0, 1] (0.5 is zero)."""
    check_int("count", count)
    fields = fields.detach()[:, :count].T  # (count, D)
    scaled = 0.5 + 0.5 * fields / fields.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    return sample_grid(scaled, path, columns=columns, side=side, title=title)


def gibbs_samples_grid(rbm: RBM, path: str | os.PathLike[str], *, num_chains: int = 10, rows: int = 10,
                       steps_between: int = 1000, side: int = 28) -> Path:  # fmt: skip
    """``rows`` snapshots of ``num_chains`` Gibbs chains, ``steps_between`` sweeps apart (one chain per
    column); shows ``E[v | h]`` of each snapshot's last sweep."""
    check_int("rows", rows)
    check_int("steps_between", steps_between)
    v = rbm.sample(num_chains, steps_between)
    snapshots = []
    for _ in range(rows):
        snapshots.append(rbm.visible_mean(bernoulli(rbm.hidden_probs(v))).detach())
        v = rbm.gibbs(v, steps_between)
    images = torch.cat(snapshots)
    return sample_grid(images, path, columns=num_chains, side=side,
                       title=f"Gibbs samples, {steps_between} sweeps between rows")  # fmt: skip


__all__ = ["fields_grid", "filter_grid", "gibbs_samples_grid"]
