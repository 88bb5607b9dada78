"""Bayesian exponential-family PCA (Mohamed, Heller & Ghahramani 2008).

Low-rank structure in the natural parameters of any observation model of the GLM table.
Generative process, for a (data, features) table y::

    loadings ~ Normal(0, prior_scale)      (rank, features)
    offset   ~ Normal(0, prior_scale)      (features,)
    for n in data:
        z_n ~ Normal(0, I)                 (rank,)
        for d in features:
            eta_nd = z_n . loadings[:, d] + offset[d]
            y_nd ~ p(y | eta_nd)           (see pyro_bdl.observation)

Sites: ``loadings``, ``offset``, ``z`` (plate ``rows`` over data, dim -2) and ``obs``
(plates ``obs_plate_0`` over data, dim -2, and ``obs_plate_1`` over features, dim -1). The
rows are not subsampled, so the two row plates always agree. With ``obs_mask`` missing
entries are masked out of the likelihood entry by entry (``ObservationModel.observe_entries``;
their values in ``y`` are ignored, NaN allowed), so the model fits tables with holes; the
posterior predictive (``Predictive`` with ``num_data``, or the guide's ``z`` pushed through the
loadings) fills them.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample

from pyro_bdl.observation import ObservationModel

DATA_PLATE = "rows"


class BXPCAModel(PyroModule):
    """BXPCA with ``rank`` latent dimensions (see the module docstring).

    Args:
        features: number of columns D.
        rank: number of latent dimensions K.
        observation: a name from :data:`pyro_bdl.observation.OBSERVATION_MODELS`
            (not ``categorical``: one natural parameter per entry).
        prior_scale: standard deviation of the priors on loadings and offset.
        **observation_params: initial likelihood parameters (``scale``, ...).

    Shapes: ``y`` (data, features); ``obs_mask`` (data, features) boolean; returns the
    sampled or observed table (data, features).
    """

    def __init__(self, features: int, rank: int, observation: str = "bernoulli_logit", prior_scale: float = 1.0,
                 **observation_params) -> None:  # fmt: skip
        super().__init__()
        if observation == "categorical":
            raise ValueError(
                "BXPCA needs one natural parameter per entry, which observation='categorical' lacks; use ordinal_logit"
            )
        if rank < 1 or features < 1:
            raise ValueError(f"rank and features must be positive, got rank={rank}, features={features}")
        self.features, self.rank = features, rank
        self.loadings = PyroSample(dist.Normal(0.0, prior_scale).expand([rank, features]).to_event(2))
        self.offset = PyroSample(dist.Normal(0.0, prior_scale).expand([features]).to_event(1))
        self.likelihood = ObservationModel(observation, plate_ndim=2, **observation_params)

    def forward(self, y: torch.Tensor | None = None, obs_mask: torch.Tensor | None = None, num_data: int | None = None):
        if y is not None and (y.dim() != 2 or y.shape[1] != self.features):
            raise ValueError(f"y must be (data, {self.features}), got {tuple(y.shape)}")
        if y is None and num_data is None:
            raise ValueError("give y to condition on, or num_data to sample that many rows")
        rows = y.shape[0] if y is not None else num_data
        loadings, offset = self.loadings, self.offset
        with pyro.plate(DATA_PLATE, rows, dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1, self.rank]).to_event(1))  # (rows, 1, rank)
        eta = (z @ loadings).squeeze(-2) + offset  # (rows, features)
        if obs_mask is None:
            return self.likelihood(eta, obs=y)
        if obs_mask.shape != y.shape:
            raise ValueError(f"obs_mask must have the shape of y {tuple(y.shape)}, got {tuple(obs_mask.shape)}")
        return self.likelihood.observe_entries(eta, y, obs_mask)
