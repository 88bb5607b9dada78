"""Posterior diagnostics with ArviZ: InferenceData from MCMC runs and SVI guides, PSIS k-hat.

* :func:`to_inference_data`: an MCMC run or any guide to ``arviz.InferenceData`` with
  posterior, pointwise log-likelihood (conditional, or importance-weighted marginal for
  models with local latents), posterior predictive and observed data, ready for
  ``az.summary``, ``az.loo``, ``az.compare`` and the plots.
* :func:`pointwise_log_likelihood` / :func:`inspect_model`: replay a model on posterior draws.
* :func:`importance_khat` / :func:`psis_khat`: Pareto k-hat of a guide's importance
  weights (Yao et al. 2018), per data point for amortised guides, joint otherwise. (Pyro's
  own ``pyro.infer.importance.psis_diagnostic`` returns one float from a single joint fit.)

ArviZ (0.20 to 0.23; see ``pyproject.toml``) is imported only inside this package, and only
when a function needs it.
"""

from __future__ import annotations

from pyro_bdl.diagnostics.inference_data import (
    LOG_LIKELIHOOD_CHOICES,
    LocalLatentWarning,
    SingleChainWarning,
    to_inference_data,
)
from pyro_bdl.diagnostics.psis import MIN_SAMPLES, PSISDiagnostic, importance_khat, psis_khat
from pyro_bdl.diagnostics.replay import inspect_model, pointwise_log_likelihood

__all__ = [
    "LOG_LIKELIHOOD_CHOICES",
    "MIN_SAMPLES",
    "LocalLatentWarning",
    "PSISDiagnostic",
    "SingleChainWarning",
    "importance_khat",
    "inspect_model",
    "pointwise_log_likelihood",
    "psis_khat",
    "to_inference_data",
]
