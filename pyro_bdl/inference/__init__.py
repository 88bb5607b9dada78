"""Inference utilities: fitting models by minibatch SVI and scoring them.

* :mod:`~pyro_bdl.inference.scoring`: per-datum and joint log importance weights, the
  importance-weighted log-likelihood and the per-datum ELBO of a (model, guide) pair.
* :mod:`~pyro_bdl.inference.fit`: :func:`fit`, minibatch SVI with validation, early
  stopping and resumable checkpoints.
* :mod:`~pyro_bdl.inference.minibatch`: scale the sites of the data plate by N / B.
"""

from __future__ import annotations

from pyro_bdl.inference.fit import CHECKPOINT_FORMAT, FitResult, fit
from pyro_bdl.inference.minibatch import DataPlateScaleMessenger, scale_data_plate
from pyro_bdl.inference.scoring import (
    PARTICLE_PLATE,
    TraceLayout,
    elbo_per_datum,
    importance_log_likelihood,
    joint_log_importance_weights,
    log_importance_weights,
    trace_layout,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "PARTICLE_PLATE",
    "DataPlateScaleMessenger",
    "FitResult",
    "TraceLayout",
    "elbo_per_datum",
    "fit",
    "importance_log_likelihood",
    "joint_log_importance_weights",
    "log_importance_weights",
    "scale_data_plate",
    "trace_layout",
]
