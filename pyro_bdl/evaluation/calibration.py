"""Calibration: do predicted probabilities and intervals mean what they say?

* Classification: expected calibration error (ECE) with equal-width confidence bins
  (Naeini, Cooper & Hauskrecht 2015; Guo, Pleiss, Sun & Weinberger 2017). The confidence of
  a prediction is its largest class probability; bin b holds the predictions with
  confidence in ((b - 1) / B, b / B] (the first bin also takes confidence 0), and

      ECE = sum_b (n_b / N) |accuracy_b - confidence_b|

  where accuracy_b is the fraction of correct argmax predictions in the bin and
  confidence_b their mean confidence. :func:`reliability_bins` returns the per-bin numbers
  that a reliability diagram (:mod:`pyro_bdl.figures.calibration`) draws.
* Regression: the empirical coverage of predictive intervals, the fraction of targets that
  fall inside them; a calibrated 95% interval covers about 95% of held-out targets.

Shapes: ``probs`` (N, C) class probabilities, ``labels`` (N,) integers; ``y``, ``lower``,
``upper`` (...) of one shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyro_bdl.validation import check_float_tensor, check_labels, check_probabilities, check_same_shape

__all__ = ["ReliabilityBins", "expected_calibration_error", "interval_coverage", "reliability_bins"]

DEFAULT_NUM_BINS = 15
"""The bin count of Guo et al. 2017."""


@dataclass(frozen=True, eq=False)
class ReliabilityBins:
    """Per-bin calibration statistics over B equal-width confidence bins on [0, 1].

    Attributes:
        edges: (B + 1,) float64 bin edges 0, 1/B, ..., 1.
        counts: (B,) int64 number of predictions per bin.
        accuracy: (B,) float64 fraction correct per bin, NaN for an empty bin.
        confidence: (B,) float64 mean confidence per bin, NaN for an empty bin.
    """

    edges: torch.Tensor
    counts: torch.Tensor
    accuracy: torch.Tensor
    confidence: torch.Tensor

    @property
    def num_bins(self) -> int:
        return self.counts.shape[0]

    @property
    def expected_calibration_error(self) -> float:
        """sum_b (n_b / N) |accuracy_b - confidence_b| over the non-empty bins."""
        filled = self.counts > 0
        weights = self.counts[filled].double() / self.counts.sum()
        return float((weights * (self.accuracy[filled] - self.confidence[filled]).abs()).sum())


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, num_bins: int = DEFAULT_NUM_BINS) -> ReliabilityBins:
    """Bin predictions by confidence (max class probability) and compare with accuracy.

    Args:
        probs: (N, C) class probabilities, e.g. the posterior predictive mean.
        labels: (N,) integer labels in [0, C).
        num_bins: B, the number of equal-width bins on [0, 1] (a positive int).

    Returns:
        :class:`ReliabilityBins`; see the module docstring for the bin convention.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int):
        raise TypeError(f"num_bins must be a positive int, got {type(num_bins).__name__} {num_bins!r}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins}")
    probs = check_probabilities("probs", probs, dim=2)
    labels = check_labels("labels", labels, num_data=probs.shape[0], num_classes=probs.shape[1])
    confidence, predicted = probs.double().max(-1)
    correct = (predicted == labels).double()
    # bin b covers ((b - 1) / B, b / B]: ceil(conf * B) - 1, with confidence 0 sent to bin 0.
    index = (torch.ceil(confidence * num_bins).long() - 1).clamp(0, num_bins - 1)
    counts = torch.bincount(index, minlength=num_bins)
    sum_correct = torch.bincount(index, weights=correct, minlength=num_bins)
    sum_confidence = torch.bincount(index, weights=confidence, minlength=num_bins)
    denominator = counts.double()
    nan = torch.full_like(denominator, float("nan"))
    return ReliabilityBins(
        edges=torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64),
        counts=counts,
        accuracy=torch.where(counts > 0, sum_correct / denominator.clamp_min(1.0), nan),
        confidence=torch.where(counts > 0, sum_confidence / denominator.clamp_min(1.0), nan),
    )


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, num_bins: int = DEFAULT_NUM_BINS) -> float:
    """ECE with ``num_bins`` equal-width confidence bins (see the module docstring).

    Args:
        probs: (N, C) class probabilities.
        labels: (N,) integer labels in [0, C).
        num_bins: the number of bins B.

    Returns:
        The ECE, a float in [0, 1].
    """
    return reliability_bins(probs, labels, num_bins).expected_calibration_error


def interval_coverage(y: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> float:
    """Fraction of targets inside their predictive interval, ``lower <= y <= upper``.

    Args:
        y: (...) targets.
        lower: lower bounds, the shape of ``y`` (e.g. from
            :func:`pyro_bdl.evaluation.predictive_interval`).
        upper: upper bounds, the shape of ``y``, with ``upper >= lower`` everywhere.
    """
    y = check_float_tensor("y", y)
    lower = check_float_tensor("lower", lower)
    upper = check_float_tensor("upper", upper)
    check_same_shape("lower", lower, "y", y)
    check_same_shape("upper", upper, "y", y)
    if bool((upper < lower).any()):
        raise ValueError("upper must be >= lower everywhere, got an interval with upper < lower")
    return float(((lower <= y) & (y <= upper)).double().mean())
