"""Inference utilities: the trace toolkit, fitting models by minibatch SVI and scoring them.

* :mod:`~pyro_bdl.inference.traces`: :class:`TraceLayout` (where every site sits relative to
  the data plate) and the helpers that reduce traced log densities to (particles, data).
* :mod:`~pyro_bdl.inference.scoring`: per-datum and joint log importance weights, the
  importance-weighted log-likelihood and the per-datum ELBO of a (model, guide) pair.
* :mod:`~pyro_bdl.inference.fit`: :func:`fit`, minibatch SVI with validation,
  :class:`EarlyStopping` and resumable checkpoints (:class:`FitState`).
* :mod:`~pyro_bdl.inference.minibatch`: scale the sites of the data plate by N / B.
* :mod:`~pyro_bdl.inference.distributed`: :class:`ELBOLoss` (the ELBO as an ``nn.Module``) and
  :func:`fit_module`, minibatch SVI with a torch optimizer, data parallel under ``torchrun``.
* :mod:`~pyro_bdl.inference.contrastive_divergence`: :class:`ContrastiveDivergence`, the CD-k /
  PCD loss of models with RBM factors; :mod:`~pyro_bdl.inference.ais`: AIS for an RBM's log Z.
* :mod:`~pyro_bdl.inference.control_variates`: :class:`NormalisedTraceGraph_ELBO`,
  ``TraceGraph_ELBO`` with NVIL's variance normalisation of score-function learning signals.
* :mod:`~pyro_bdl.inference.mixture_elbo`: :class:`MixtureLikelihood_ELBO`, the ELBO with each
  datum's likelihood averaged over the particles (the PAC^m bound of Bayesian ensembles).
"""

from __future__ import annotations

from pyro_bdl.inference.ais import AISResult, ais_log_partition, ais_schedule, base_rate_bias
from pyro_bdl.inference.contrastive_divergence import ContrastiveDivergence
from pyro_bdl.inference.control_variates import NormalisedTraceGraph_ELBO, SignalNormaliser
from pyro_bdl.inference.distributed import (
    ELBOLoss,
    Launch,
    close_process_group,
    fit_module,
    init_from_env,
    svi_step,
)
from pyro_bdl.inference.fit import CHECKPOINT_FORMAT, EarlyStopping, FitResult, FitState, fit
from pyro_bdl.inference.minibatch import DataPlateScaleMessenger, scale_data_plate
from pyro_bdl.inference.mixture_elbo import MixtureLikelihood_ELBO
from pyro_bdl.inference.natural_gradient import SignBernoulliNaturalGradient, natural_gradient_optim
from pyro_bdl.inference.scoring import (
    elbo_per_datum,
    importance_log_likelihood,
    joint_log_importance_weights,
    log_importance_weights,
)
from pyro_bdl.inference.traces import PARTICLE_PLATE, SiteInfo, TraceLayout, trace_layout

__all__ = [
    "CHECKPOINT_FORMAT",
    "PARTICLE_PLATE",
    "AISResult",
    "ContrastiveDivergence",
    "DataPlateScaleMessenger",
    "ELBOLoss",
    "EarlyStopping",
    "FitResult",
    "FitState",
    "Launch",
    "MixtureLikelihood_ELBO",
    "NormalisedTraceGraph_ELBO",
    "SignBernoulliNaturalGradient",
    "SignalNormaliser",
    "SiteInfo",
    "TraceLayout",
    "ais_log_partition",
    "ais_schedule",
    "base_rate_bias",
    "close_process_group",
    "elbo_per_datum",
    "fit",
    "fit_module",
    "importance_log_likelihood",
    "init_from_env",
    "joint_log_importance_weights",
    "log_importance_weights",
    "natural_gradient_optim",
    "scale_data_plate",
    "svi_step",
    "trace_layout",
]
