"""Semi-supervised label splits: a class-balanced labelled subset, the rest marked unlabelled.

The protocol of Kingma et al. 2014 for MNIST: ``N`` labelled rows drawn from the training set,
``N / K`` from each class, by a seed; every other training row keeps its image and loses its
label. Unlabelled rows carry the label ``-1`` (scikit-learn's convention), which
:class:`pyro_bdl.models.M2` reads as "enumerate this label".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyro_bdl.validation import check_int

UNLABELLED = -1

__all__ = ["UNLABELLED", "balanced_labelled_subset", "hide_labels", "select_classes"]


def balanced_labelled_subset(labels: torch.Tensor, num_labelled: int, num_classes: int, *, seed: int) -> torch.Tensor:
    """Indices (num_labelled,) of a class-balanced random subset of ``labels`` (data,).

    ``num_labelled`` must be a multiple of ``num_classes`` and each class must have enough rows.
    The same ``seed`` always gives the same subset; indices are sorted.
    """
    check_int("num_labelled", num_labelled, num_classes)
    if num_labelled % num_classes:
        raise ValueError(f"num_labelled must be a multiple of num_classes={num_classes}, got {num_labelled}")
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-D integer tensor, got dtype {labels.dtype}, shape {tuple(labels.shape)}")
    generator = torch.Generator().manual_seed(seed)
    per_class = num_labelled // num_classes
    chosen = []
    for k in range(num_classes):
        rows = torch.nonzero(labels == k).squeeze(-1)
        if len(rows) < per_class:
            raise ValueError(f"class {k} has {len(rows)} rows, fewer than the {per_class} labelled rows asked for")
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def hide_labels(labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A copy of ``labels`` (data,) with every row not in ``keep`` set to :data:`UNLABELLED`."""
    partial = torch.full_like(labels, UNLABELLED)
    partial[keep] = labels[keep]
    return partial


def select_classes(labels: torch.Tensor, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``labels`` (data,) whose class is in ``classes``, relabelled ``0 .. len(classes) - 1``.

    Returns ``(rows, relabelled)``: the indices (n,) of those rows in increasing order, and their new
    labels (n,) int64, class ``classes[j]`` becoming ``j``. For a smaller task on a subset of the
    classes, e.g. digits 3, 5 and 8 of MNIST as a 3-class problem: ``x[rows]`` with ``relabelled``.
    """
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got dtype {labels.dtype}, shape {tuple(labels.shape)}")
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty sequence of distinct class indices, got {classes}")
    for k in classes:
        check_int("classes", k, 0)
    rows = torch.nonzero(torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))).squeeze(-1)
    relabelled = torch.empty(len(rows), dtype=torch.long)
    for j, k in enumerate(classes):
        relabelled[labels[rows] == k] = j
    return rows, relabelled
