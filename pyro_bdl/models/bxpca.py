"""Bayesian exponential-family PCA (Mohamed, Heller & Ghahramani 2008).

Low-rank structure in the natural parameters of any observation model of the GLM table.
Generative process, for a (data, features) table x::

    loadings ~ Normal(0, prior_scale)      (rank, features)
    offset   ~ Normal(0, prior_scale)      (features,)
    for n in data:                         plate "data", dim -2
        z_n ~ Normal(0, I)                 (rank,)
        for d in features:                 plate "features", dim -1
            eta_nd = z_n . loadings[:, d] + offset[d]
            x_nd ~ p(x | eta_nd)           (see pyro_bdl.observation)

Sites: ``loadings``, ``offset`` (global), ``z`` and ``obs`` (both in the data plate
``"data"`` at dim -2, :mod:`pyro_bdl.conventions`; ``obs`` also in ``"features"`` at dim -1),
so ``pyro_bdl.inference.fit`` scales every per-row term by ``N / B`` when it minibatches.
``z`` has shape ``(*outer, data, 1, rank)``: the trailing 1 is the features dim it does not
depend on. With ``obs_mask`` missing entries are masked out of the likelihood entry by entry
(``ObservationModel.observe_entries``; their values in ``x`` are ignored, NaN allowed), so the
model fits tables with holes; the posterior predictive (``Predictive`` with ``num_data``, or the
guide's ``z`` pushed through the loadings) fills them.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample

from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.observation import ObservationModel
from pyro_bdl.validation import check_int, check_model_rows, check_positive

FEATURE_PLATE = "features"
"""Name of BXPCA's plate over the columns (dim -1, inside the data plate)."""


class BXPCAModel(PyroModule):
    """BXPCA with ``rank`` latent dimensions (see the module docstring).

    Args:
        data_dim: number of columns D.
        rank: number of latent dimensions K.
        observation: a name from :data:`pyro_bdl.observation.OBSERVATION_MODELS`
            (not ``categorical``: one natural parameter per entry).
        prior_scale: standard deviation of the priors on loadings and offset.
        num_classes: K for ``ordinal_logit`` without given ``cutpoints``.
        learn_params: learn the likelihood's parameters as point estimates (else fixed).
        observation_params: initial (or fixed) likelihood parameters (``{"scale": 0.5}``, ...).

    Call as ``model(x, *, obs_mask=None)`` with ``x`` (data, features) to condition, or
    ``model(None, num_data=N)`` to sample; ``obs_mask`` (data, features) boolean. Returns the
    sampled or observed table (data, features).
    """

    def __init__(
        self,
        data_dim: int,
        rank: int,
        observation: str = "bernoulli_logit",
        prior_scale: float = 1.0,
        *,
        num_classes: int | None = None,
        learn_params: bool = True,
        observation_params: dict | None = None,
    ) -> None:
        super().__init__()
        if observation == "categorical":
            raise ValueError(
                "BXPCA needs one natural parameter per entry, which observation='categorical' lacks; use ordinal_logit"
            )
        self.data_dim, self.rank = check_int("data_dim", data_dim), check_int("rank", rank)
        check_positive("prior_scale", prior_scale)
        self.loadings = PyroSample(dist.Normal(0.0, prior_scale).expand([rank, data_dim]).to_event(2))
        self.offset = PyroSample(dist.Normal(0.0, prior_scale).expand([data_dim]).to_event(1))
        self.likelihood = ObservationModel(
            observation,
            plates=(FEATURE_PLATE,),
            learn_params=learn_params,
            num_classes=num_classes,
            **(observation_params or {}),
        )

    def forward(
        self,
        x: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        rows, x = check_model_rows(x, num_data, obs_mask, self.data_dim)
        loadings, offset = self.loadings, self.offset
        with pyro.plate(DATA_PLATE, rows, dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([rows, 1, self.rank]).to_event(1))  # (rows, 1, rank)
            eta = (z @ loadings).squeeze(-2) + offset  # (*outer, rows, features)
            if obs_mask is None:
                return self.likelihood(eta, obs=x, site_name=OBS_SITE)
            return self.likelihood.observe_entries(eta, x, obs_mask, site_name=OBS_SITE)
