"""Posterior predictive summaries and test metrics computed from posterior samples.

Every function takes S posterior draws stacked on dim 0 (from ``pyro.infer.Predictive``, a
guide sampled S times, or S MC-dropout passes) and summarises them per data point.

Regression (a Gaussian likelihood per draw, so the predictive is a mixture of S Gaussians)::

    loc, scale         (S, N)  per-draw predictive mean and noise std; scale may be any shape
                               that broadcasts to (S, N), e.g. (S, 1) for homoscedastic noise
    y                  (N,)    targets

==================================  ================================================
function                            returns
==================================  ================================================
``predictive_mean_std``             mean (N,), std (N,) of the Gaussian mixture
``predictive_interval``             lower, upper (N,): central interval of samples
``gaussian_mixture_log_likelihood`` (N,) log (1/S) sum_s N(y_n; loc_sn, scale_sn)
``rmse``                            float, root mean squared error of a point prediction
==================================  ================================================

Classification (``prob_samples`` (S, N, C): class probabilities of each draw; ``probs``
(N, C): one probability table, e.g. the posterior predictive ``mean_probabilities``)::

==================================  ================================================
``mean_probabilities``              (N, C) posterior predictive p(y | x) = mean_s p_s
``categorical_entropy``             (...) entropy in nats of each row of (..., C)
``predictive_entropy``              (N,) H[mean_s p_s], the total uncertainty
``expected_entropy``                (N,) mean_s H[p_s], the aleatoric part
``mutual_information``              (N,) their difference, the epistemic part (BALD)
``bald_decomposition``              all three at once
``classification_error``            float, fraction of argmax predictions that are wrong
``classification_log_likelihood``   (N,) log mean_s p_s(y_n)
``logits_log_likelihood``           the same from (S, N, C) logits, exact where
                                    probabilities underflow to 0 in float32
==================================  ================================================

All logarithms are natural (nats). The mutual information between the label and the
weights, I[y; w | x] = H[E_w p(y | x, w)] - E_w H[p(y | x, w)], is the BALD acquisition score
of Houlsby et al. 2011 ("Bayesian Active Learning for Classification and Preference
Learning"); Gal, Islam & Ghahramani 2017 use it with MC dropout.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from pyro_bdl.validation import (
    check_float_tensor,
    check_labels,
    check_level,
    check_probabilities,
    check_same_shape,
)

__all__ = [
    "BaldDecomposition",
    "bald_decomposition",
    "categorical_entropy",
    "classification_error",
    "classification_log_likelihood",
    "expected_entropy",
    "gaussian_mixture_log_likelihood",
    "logits_log_likelihood",
    "mean_probabilities",
    "mutual_information",
    "predictive_entropy",
    "predictive_interval",
    "predictive_mean_std",
    "rmse",
]


# ----------------------------------------------------------------------------- regression


def _check_loc_scale(loc: torch.Tensor, scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    loc = check_float_tensor("loc", loc, min_dim=1)
    if scale is None:
        return loc, None
    scale = check_float_tensor("scale", scale)
    try:
        shape = torch.broadcast_shapes(scale.shape, loc.shape)
    except RuntimeError as err:
        raise ValueError(
            f"scale of shape {tuple(scale.shape)} must broadcast to the shape of loc {tuple(loc.shape)}"
        ) from err
    if shape != loc.shape:
        raise ValueError(f"scale of shape {tuple(scale.shape)} must broadcast to the shape of loc {tuple(loc.shape)}")
    if float(scale.min()) <= 0.0:
        raise ValueError(f"scale must be positive, got a minimum of {float(scale.min())}")
    return loc, scale.expand_as(loc)


def predictive_mean_std(loc: torch.Tensor, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the posterior predictive (a mixture of S Gaussians).

    With per-draw means mu_s and noise scales sigma_s, the mixture has mean m = mean_s mu_s
    and variance mean_s (sigma_s^2 + mu_s^2) - m^2 = Var_s[mu_s] (epistemic) + mean_s sigma_s^2
    (aleatoric); the population variance over draws is used.

    Args:
        loc: (S, ...) per-draw predictive means; S >= 1 draws on dim 0.
        scale: per-draw noise standard deviations, broadcastable to ``loc``; ``None`` gives
            the spread of ``loc`` alone (e.g. for samples of y itself).

    Returns:
        ``(mean, std)``, each of shape ``loc.shape[1:]``.
    """
    loc, scale = _check_loc_scale(loc, scale)
    mean = loc.mean(0)
    variance = loc.var(0, correction=0)
    if scale is not None:
        variance = variance + scale.square().mean(0)
    return mean, variance.sqrt()


def predictive_interval(samples: torch.Tensor, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Central interval holding ``level`` of the sample mass, per data point.

    Args:
        samples: (S, ...) draws from the posterior predictive (e.g. y itself, noise included).
        level: the probability inside the interval, in (0, 1); the bounds are the
            (1 - level) / 2 and (1 + level) / 2 sample quantiles (linear interpolation).

    Returns:
        ``(lower, upper)``, each of shape ``samples.shape[1:]``.
    """
    samples = check_float_tensor("samples", samples, min_dim=1)
    level = check_level(level)
    tail = (1.0 - level) / 2.0
    quantiles = torch.tensor([tail, 1.0 - tail], dtype=samples.dtype, device=samples.device)
    bounds = torch.quantile(samples, quantiles, dim=0)
    return bounds[0], bounds[1]


def gaussian_mixture_log_likelihood(y: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Test log-likelihood log (1/S) sum_s N(y; loc_s, scale_s) per data point, in nats.

    This is the posterior predictive density estimated with S posterior draws, the number
    reported as "test log-likelihood" on the UCI benchmarks (Hernandez-Lobato & Adams 2015;
    Gal & Ghahramani 2016). It is computed stably with ``logsumexp``. All three arguments
    must be in the same units: to report in the original units of a target normalised as
    (y - m) / s, pass ``loc * s + m`` and ``scale * s`` with the original ``y`` (equivalently,
    subtract log s from the normalised-unit value).

    Args:
        y: (...) targets, e.g. (N,).
        loc: (S, ...) per-draw predictive means, e.g. (S, N).
        scale: per-draw noise standard deviations, positive, broadcastable to ``loc``.

    Returns:
        (...) the log predictive density of each target.
    """
    loc, scale = _check_loc_scale(loc, scale)
    y = check_float_tensor("y", y)
    if y.shape != loc.shape[1:]:
        raise ValueError(f"y must have shape {tuple(loc.shape[1:])} (loc without its sample dim), got {tuple(y.shape)}")
    log_density = torch.distributions.Normal(loc, scale).log_prob(y)
    return torch.logsumexp(log_density, dim=0) - math.log(loc.shape[0])


def rmse(y: torch.Tensor, prediction: torch.Tensor) -> float:
    """Root mean squared error sqrt(mean_n (y_n - prediction_n)^2) of a point prediction.

    Args:
        y: (...) targets.
        prediction: the same shape, e.g. the predictive mean from :func:`predictive_mean_std`.
    """
    y = check_float_tensor("y", y)
    prediction = check_float_tensor("prediction", prediction)
    check_same_shape("prediction", prediction, "y", y)
    return float((y - prediction).square().mean().sqrt())


# ------------------------------------------------------------------------- classification


class BaldDecomposition(NamedTuple):
    """Total = aleatoric + epistemic predictive uncertainty, each (N,) in nats."""

    predictive_entropy: torch.Tensor
    """H[mean_s p_s]: the total uncertainty of the posterior predictive."""
    expected_entropy: torch.Tensor
    """mean_s H[p_s]: the uncertainty each posterior draw keeps (aleatoric)."""
    mutual_information: torch.Tensor
    """I[y; w | x], their difference: the disagreement between draws (epistemic, BALD)."""


def mean_probabilities(prob_samples: torch.Tensor) -> torch.Tensor:
    """The posterior predictive class probabilities mean_s p_s, (S, N, C) -> (N, C)."""
    return check_probabilities("prob_samples", prob_samples, dim=3).mean(0)


def categorical_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy -sum_c p_c log p_c of each row, in nats, with 0 log 0 = 0; (..., C) -> (...)."""
    return _entropy(check_probabilities("probs", probs))


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(probs, probs).sum(-1)


def predictive_entropy(prob_samples: torch.Tensor) -> torch.Tensor:
    """H[mean_s p_s], the entropy of the posterior predictive; (S, N, C) -> (N,)."""
    return _entropy(mean_probabilities(prob_samples))


def expected_entropy(prob_samples: torch.Tensor) -> torch.Tensor:
    """mean_s H[p_s], the expected entropy under the posterior; (S, N, C) -> (N,)."""
    return _entropy(check_probabilities("prob_samples", prob_samples, dim=3)).mean(0)


def mutual_information(prob_samples: torch.Tensor) -> torch.Tensor:
    """BALD score I[y; w | x] = H[mean_s p_s] - mean_s H[p_s] >= 0; (S, N, C) -> (N,)."""
    return bald_decomposition(prob_samples).mutual_information


def bald_decomposition(prob_samples: torch.Tensor) -> BaldDecomposition:
    """Split the predictive entropy into its aleatoric and epistemic parts.

    Args:
        prob_samples: (S, N, C) class probabilities of S posterior draws.

    Returns:
        :class:`BaldDecomposition` of three (N,) tensors in nats. The mutual information is
        clamped at 0 from below only to remove float rounding (it is non-negative by Jensen's
        inequality).
    """
    probs = check_probabilities("prob_samples", prob_samples, dim=3)
    total = _entropy(probs.mean(0))
    aleatoric = _entropy(probs).mean(0)
    return BaldDecomposition(total, aleatoric, (total - aleatoric).clamp_min(0.0))


def classification_error(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of data points whose most probable class is not the label.

    Args:
        probs: (N, C) class probabilities (e.g. :func:`mean_probabilities`). Ties go to the
            lowest class index (``argmax``).
        labels: (N,) integer labels in [0, C).
    """
    probs = check_probabilities("probs", probs, dim=2)
    labels = check_labels("labels", labels, num_data=probs.shape[0], num_classes=probs.shape[1])
    return float((probs.argmax(-1) != labels).double().mean())


def classification_log_likelihood(prob_samples: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Test log-likelihood log mean_s p_s(y_n | x_n) per data point, in nats.

    Computed as ``logsumexp_s log p_s(y_n) - log S``; a label to which every draw gives
    probability 0 scores -inf (reported, not hidden).

    Args:
        prob_samples: (S, N, C) class probabilities of S posterior draws.
        labels: (N,) integer labels in [0, C).

    Returns:
        (N,) log predictive probabilities of the labels.
    """
    probs = check_probabilities("prob_samples", prob_samples, dim=3)
    labels = check_labels("labels", labels, num_data=probs.shape[1], num_classes=probs.shape[2])
    picked = probs.gather(-1, labels.expand(probs.shape[0], -1).unsqueeze(-1)).squeeze(-1)  # (S, N)
    return torch.logsumexp(picked.log(), dim=0) - math.log(probs.shape[0])


def logits_log_likelihood(logit_samples: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Test log-likelihood log mean_s softmax(logits_s)(y_n) per data point, computed in log space.

    The same quantity as :func:`classification_log_likelihood` of ``logit_samples.softmax(-1)``,
    but through ``log_softmax`` and ``logsumexp``, so a confidently wrong draw whose
    probability of the label underflows to 0 in float32 still gives a finite score.

    Args:
        logit_samples: (S, N, C) unnormalised class log-probabilities of S posterior draws.
        labels: (N,) integer labels in [0, C).

    Returns:
        (N,) log predictive probabilities of the labels.
    """
    logits = check_float_tensor("logit_samples", logit_samples, dim=3)
    if logits.shape[-1] < 2:
        raise ValueError(f"logit_samples must hold at least 2 classes on its last axis, got {tuple(logits.shape)}")
    labels = check_labels("labels", labels, num_data=logits.shape[1], num_classes=logits.shape[2])
    log_probs = logits.log_softmax(-1)
    picked = log_probs.gather(-1, labels.expand(logits.shape[0], -1).unsqueeze(-1)).squeeze(-1)  # (S, N)
    return torch.logsumexp(picked, dim=0) - math.log(logits.shape[0])
