"""Bayesian generalised linear model: one linear layer and an observation model of the GLM table.

Generative process, for inputs x_n (in_features,)::

    w ~ Normal(0, prior_scale)      (in_features,)   or (in_features, K) for categorical
    b ~ Normal(0, prior_scale)      ()               or (K,)
    for n in data:  eta_n = x_n . w + b,   y_n ~ p(y | eta_n)   (see pyro_bdl.observation)

Sites: ``weight``, ``bias`` (global), ``obs`` (plate ``"data"`` over the rows of ``x``, dim -1;
see :mod:`pyro_bdl.conventions`). Fit with any Pyro guide, e.g. ``AutoMultivariateNormal(model)``:
with a Gaussian likelihood of known scale the posterior is Gaussian and such a guide can be exact.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample

from pyro_bdl.observation import ObservationModel
from pyro_bdl.validation import check_float_tensor, check_int, check_positive


class GLMModel(PyroModule):
    """Bayesian GLM ``y ~ p(y | x . w + b)``.

    Args:
        in_features: input size.
        observation: a name from :data:`pyro_bdl.observation.OBSERVATION_MODELS`.
        num_classes: K for ``categorical`` (eta is (data, K)); otherwise leave ``None``.
        prior_scale: standard deviation of the Gaussian priors on weight and bias.
        learn_params: learn the likelihood's parameters (e.g. the Gaussian ``scale``) as point
            estimates; ``False`` keeps them fixed at ``observation_params``.
        observation_params: initial or fixed likelihood parameters (``{"scale": 0.5}``, ...).

    Call as ``model(x, y=None, *, obs_mask=None)``: ``x`` (data, in_features); ``y`` (data,),
    ``None`` to sample; ``obs_mask`` (data,) boolean, False where ``y`` is missing (imputed by
    the latent site ``"obs_unobserved"``). Returns the value at ``"obs"``, (data,).
    """

    def __init__(
        self,
        in_features: int,
        observation: str = "gaussian",
        num_classes: int | None = None,
        prior_scale: float = 1.0,
        *,
        learn_params: bool = True,
        observation_params: dict | None = None,
    ) -> None:
        super().__init__()
        check_int("in_features", in_features)
        if observation == "categorical" and not num_classes:
            raise ValueError("observation='categorical' needs num_classes (the number of categories K)")
        if observation != "categorical" and num_classes is not None:
            raise ValueError(f"num_classes applies to observation='categorical' only, got {observation!r}")
        check_positive("prior_scale", prior_scale)
        self.in_features = in_features
        outputs = [check_int("num_classes", num_classes, 2)] if num_classes else []
        self.weight = PyroSample(
            dist.Normal(0.0, prior_scale).expand([in_features, *outputs]).to_event(1 + len(outputs))
        )
        self.bias = PyroSample(dist.Normal(0.0, prior_scale).expand(outputs).to_event(len(outputs)))
        self.likelihood = ObservationModel(observation, learn_params=learn_params, **(observation_params or {}))

    def linear_predictor(self, x: torch.Tensor) -> torch.Tensor:
        """eta = x . w + b: (data,) or (data, K)."""
        check_float_tensor("x", x, dim=2)
        if x.shape[1] != self.in_features:
            raise ValueError(f"x must be (data, {self.in_features}), got {tuple(x.shape)}")
        return x @ self.weight + self.bias

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        if num_data is not None and num_data != x.shape[0]:
            raise ValueError(f"num_data must equal the rows of x ({x.shape[0]}) or be None, got {num_data!r}")
        return self.likelihood(self.linear_predictor(x), obs=y, obs_mask=obs_mask)
