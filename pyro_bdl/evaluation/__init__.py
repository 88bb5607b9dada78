"""Evaluating predictive distributions from posterior samples.

* :mod:`~pyro_bdl.evaluation.predictive`: predictive mean, standard deviation and intervals;
  the Gaussian-mixture test log-likelihood and RMSE (regression); predictive probabilities,
  entropy, mutual information (BALD), test error and log-likelihood (classification).
* :mod:`~pyro_bdl.evaluation.calibration`: expected calibration error and reliability bins
  (classification), interval coverage (regression).
* :mod:`~pyro_bdl.evaluation.ood`: the AUROC of an uncertainty score for telling
  out-of-distribution inputs apart.
"""

from pyro_bdl.evaluation.calibration import (
    ReliabilityBins,
    expected_calibration_error,
    interval_coverage,
    reliability_bins,
)
from pyro_bdl.evaluation.ood import auroc
from pyro_bdl.evaluation.predictive import (
    BaldDecomposition,
    bald_decomposition,
    categorical_entropy,
    classification_error,
    classification_log_likelihood,
    expected_entropy,
    gaussian_mixture_log_likelihood,
    logits_log_likelihood,
    mean_probabilities,
    mutual_information,
    predictive_entropy,
    predictive_interval,
    predictive_mean_std,
    rmse,
)
from pyro_bdl.evaluation.summary import classification_scores

__all__ = [
    "BaldDecomposition",
    "ReliabilityBins",
    "auroc",
    "bald_decomposition",
    "categorical_entropy",
    "classification_error",
    "classification_log_likelihood",
    "classification_scores",
    "expected_calibration_error",
    "expected_entropy",
    "gaussian_mixture_log_likelihood",
    "interval_coverage",
    "logits_log_likelihood",
    "mean_probabilities",
    "mutual_information",
    "predictive_entropy",
    "predictive_interval",
    "predictive_mean_std",
    "reliability_bins",
    "rmse",
]
