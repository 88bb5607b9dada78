"""One call for the usual held-out scores of a Bayesian classifier's posterior draws."""

from __future__ import annotations

import torch

from pyro_bdl.evaluation.calibration import expected_calibration_error
from pyro_bdl.evaluation.predictive import (
    bald_decomposition,
    classification_error,
    logits_log_likelihood,
    mean_probabilities,
)


def classification_scores(logit_samples: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    """Error, log-likelihood, ECE and predictive entropy on right and wrong answers.

    The predictive is the mean of the S draws' probabilities, ``p(y | x) = mean_s softmax(logits_s)``.

    Args:
        logit_samples: (S, N, C) logits of S posterior draws (S = 1 for a point estimate).
        labels: (N,) integer labels in [0, C).

    Returns:
        ``error``, ``log_likelihood`` (mean over the N points, nats), ``ece``, and
        ``entropy_correct`` / ``entropy_wrong``: the mean predictive entropy where the predictive's
        argmax is right / wrong (None when there is no such point).
    """
    prob_samples = logit_samples.softmax(-1)
    probs = mean_probabilities(prob_samples)
    correct = probs.argmax(-1) == labels
    entropy = bald_decomposition(prob_samples).predictive_entropy
    return {
        "error": classification_error(probs, labels),
        "log_likelihood": float(logits_log_likelihood(logit_samples, labels).mean()),
        "ece": expected_calibration_error(probs, labels),
        "entropy_correct": float(entropy[correct].mean()) if correct.any() else None,
        "entropy_wrong": float(entropy[~correct].mean()) if (~correct).any() else None,
    }
