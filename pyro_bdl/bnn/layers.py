"""Moved to :mod:`pyro_bdl.layers.bayesian`; these names stay importable from here."""

from pyro_bdl.layers.bayesian import (
    BAYESIAN_TWINS,
    BayesianConv1d,
    BayesianConv2d,
    BayesianConv3d,
    BayesianLayer,
    BayesianLinear,
    bayesian_layers,
)

__all__ = [
    "BAYESIAN_TWINS",
    "BayesianConv1d",
    "BayesianConv2d",
    "BayesianConv3d",
    "BayesianLayer",
    "BayesianLinear",
    "bayesian_layers",
]
