"""Observation models (GLM likelihoods): a natural parameter ``eta`` -> a Pyro distribution.

:mod:`~pyro_bdl.observation.glm` holds the table of models and the functional API,
:mod:`~pyro_bdl.observation.module` the :class:`ObservationModel` that owns the observed
site and its plate, and :mod:`~pyro_bdl.observation.tobit` the censored Gaussian.
"""

from pyro_bdl.observation.glm import (
    OBSERVATION_MODELS,
    ObservationSpec,
    ParamSpec,
    get_observation_model,
    mean_function,
    observation_distribution,
)
from pyro_bdl.observation.module import ObservationModel
from pyro_bdl.observation.tobit import Tobit

__all__ = [
    "OBSERVATION_MODELS",
    "ObservationModel",
    "ObservationSpec",
    "ParamSpec",
    "Tobit",
    "get_observation_model",
    "mean_function",
    "observation_distribution",
]
