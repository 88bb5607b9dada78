"""Posterior diagnostics with ArviZ: InferenceData from MCMC runs and SVI guides, PSIS k-hat.

* :func:`to_inference_data`: an MCMC run or any guide to ``arviz.InferenceData`` with
  posterior, pointwise log-likelihood, posterior predictive and observed data, ready for
  ``az.summary``, ``az.loo``, ``az.compare`` and the plots.
* :func:`psis_diagnostic` / :func:`psis_khat`: Pareto k-hat of a guide's importance
  weights (Yao et al. 2018), per data point for amortised guides, joint otherwise.

ArviZ is imported only inside this package, and only when a function needs it.
"""

from __future__ import annotations

from pyro_bdl.diagnostics.inference_data import SingleChainWarning, pointwise_log_likelihood, to_inference_data
from pyro_bdl.diagnostics.model_sites import ModelSites, SiteInfo, inspect_model
from pyro_bdl.diagnostics.psis import MIN_SAMPLES, PSISDiagnostic, psis_diagnostic, psis_khat

__all__ = [
    "MIN_SAMPLES",
    "ModelSites",
    "PSISDiagnostic",
    "SingleChainWarning",
    "SiteInfo",
    "inspect_model",
    "pointwise_log_likelihood",
    "psis_diagnostic",
    "psis_khat",
    "to_inference_data",
]
