"""Telling out-of-distribution inputs apart by a score: the AUROC.

``auroc(in_scores, out_scores)`` is the probability that a random out-of-distribution input
scores higher than a random in-distribution one, ties counting 1/2 (the Mann-Whitney U
statistic over ``n_in * n_out``): 1 separates perfectly, 0.5 is chance. Scores are "how
unusual": the predictive entropy, the mutual information (BALD), or ``1 - max softmax``
(Hendrycks & Gimpel 2017's baseline).
"""

from __future__ import annotations

import torch

from pyro_bdl.validation import check_float_tensor

__all__ = ["auroc"]


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """P(score_out > score_in) + P(score_out = score_in) / 2, from ranks; in_scores (N_in,), out_scores (N_out,)."""
    inside = check_float_tensor("in_scores", in_scores, dim=1).double()
    outside = check_float_tensor("out_scores", out_scores, dim=1).double()
    if inside.numel() == 0 or outside.numel() == 0:
        raise ValueError(f"in_scores and out_scores must be non-empty, got {inside.numel()} and {outside.numel()}")
    values = torch.cat([inside, outside])
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, values.numel() + 1, dtype=values.dtype)
    unique, inverse = values.unique(return_inverse=True)  # average the ranks of ties
    sums = torch.zeros_like(unique).index_add_(0, inverse, ranks)
    counts = torch.zeros_like(unique).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (sums / counts)[inverse]
    n_in, n_out = inside.numel(), outside.numel()
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2
    return float(u / (n_in * n_out))
