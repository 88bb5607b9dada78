"""BNN models: regression (fixed, homoscedastic or heteroscedastic noise), classification, MC dropout.

Generative process, for a network ``f_W`` whose weights ``W`` carry priors (Bayesian layers)::

    W ~ p(W)                                      global latent sites "<path>.weight", "<path>.bias"
    regression:      tau ~ Gamma(a, b)            "noise_precision" (homoscedastic only)
                     for n in data: y_n ~ N(f_W(x_n)[0], sigma_n^2)
                       sigma_n = noise (fixed) | tau^-1/2 (homoscedastic)
                               | softplus(f_W(x_n)[1]) + min_scale (heteroscedastic)
    classification:  for n in data: y_n ~ Categorical(logits = f_W(x_n))

Sites (:mod:`pyro_bdl.conventions`): the weights, ``"noise_precision"``, the observed ``"obs"`` inside plate ``"data"``
(dim -1, size N = rows of ``x``), and ``pyro.deterministic`` sites in the same plate with the
predictive parameters: ``"loc"`` and ``"noise_scale"`` (regression), ``"logits"``
(classification). Likelihoods come from :mod:`pyro_bdl.observation` (``gaussian``,
``categorical``). The Gamma(6, 6) prior on the noise precision follows Hernandez-Lobato &
Adams 2015 ("Probabilistic backpropagation"), made for standardised targets.

Shapes: ``x`` ``(N, *features)`` (``(N, in_features)`` for an MLP, ``(N, C, H, W)`` for a
conv net); ``y`` ``(N,)`` (float targets, or int64 labels in ``[0, K)``). The network maps
``x`` to ``(*S, N, outputs)``, ``S`` the sample dims of its weights: ``outputs`` is 1 for
fixed or homoscedastic noise, 2 (mean, unconstrained scale) for heteroscedastic noise, K
for classification. Minibatch training: ``pyro_bdl.inference.fit`` scales the sites of the
``"data"`` plate by ``N_total / B`` (priors and guides of the weights keep weight 1); the
models themselves always score the rows they are given.

MC dropout (Gal & Ghahramani 2016, "Dropout as a Bayesian approximation"):
:class:`MCDropoutRegressor` / :class:`MCDropoutClassifier` put Gaussian priors on every
layer of a network with dropout and keep dropout on in ``eval`` mode. Fitting them with
:class:`~pyro_bdl.bnn.guides.MAPGuide` is training with dropout and weight decay;
``Predictive(model, guide=MAPGuide, ...)`` then samples dropout masks, the same prediction
code as for a BNN.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from pyro_bdl.bnn.convert import bayesianize
from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.layers.bayesian import BayesianLayer
from pyro_bdl.layers.priors import GaussianPrior
from pyro_bdl.observation import observation_distribution
from pyro_bdl.validation import check_float_tensor, check_int, check_labels, check_positive

NOISE_PRECISION_SITE = "noise_precision"
NOISE_OPTIONS = ("homoscedastic", "heteroscedastic")
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _check_net(net: nn.Module) -> None:
    if not isinstance(net, PyroModule):
        raise TypeError(
            f"net must be a PyroModule (e.g. bayesianize(net) or a network of Bayesian layers), got "
            f"{type(net).__name__}: a plain nn.Module's parameters are not seen by Pyro"
        )


def _check_call(x: torch.Tensor, num_data: int | None) -> int:
    """The rows N of ``x`` ``(N, *features)``, checked against ``num_data``."""
    check_float_tensor("x", x, min_dim=2)
    if num_data is not None and num_data != x.shape[0]:
        raise ValueError(f"num_data must equal the rows of x ({x.shape[0]}) or be None, got {num_data!r}")
    return x.shape[0]


def _check_mask(obs_mask: torch.Tensor | None, y: torch.Tensor | None, num_data: int) -> torch.Tensor | None:
    if obs_mask is None:
        return None
    if y is None:
        raise ValueError("obs_mask needs y: it marks which targets of y are observed; got y=None")
    if not isinstance(obs_mask, torch.Tensor) or obs_mask.dtype != torch.bool or obs_mask.shape != (num_data,):
        got = getattr(obs_mask, "shape", obs_mask)
        raise ValueError(f"obs_mask must be a bool tensor of shape ({num_data},), got {got!r}")
    return obs_mask


def _check_output(out: torch.Tensor, num_data: int, outputs: int | None, what: str) -> None:
    if out.dim() < 2 or out.shape[-2] != num_data or (outputs is not None and out.shape[-1] != outputs):
        expected = f"(..., {num_data}, {outputs if outputs is not None else 'K'})"
        raise ValueError(f"the network must map x to {expected} for {what}, got {tuple(out.shape)}")


class BNNRegressor(PyroModule):
    """Regression ``y ~ N(f_W(x)[0], sigma^2)`` (module docstring).

    Args:
        net: the network, a ``PyroModule`` (``bayesianize(...)`` or Bayesian layers).
        noise: ``"homoscedastic"`` (latent precision ``tau ~ Gamma(a, b)``, site
            ``"noise_precision"``), ``"heteroscedastic"`` (the network's second output is the
            scale, through softplus) or a positive float, the fixed noise standard deviation.
        noise_precision_prior: ``(a, b)``, shape and rate of the Gamma prior on ``tau``.
        min_scale: added to the softplus scale of heteroscedastic noise, keeps it positive.
    """

    def __init__(self, net: nn.Module, noise: str | float = "homoscedastic", *,
                 noise_precision_prior: tuple[float, float] = (6.0, 6.0), min_scale: float = 1e-6) -> None:  # fmt: skip
        super().__init__()
        _check_net(net)
        fixed = not isinstance(noise, str | bool) and isinstance(noise, int | float) and 0 < noise < float("inf")
        if noise not in NOISE_OPTIONS and not fixed:
            raise ValueError(f"noise must be one of {NOISE_OPTIONS} or a positive float, got {noise!r}")
        a, b = (check_positive("noise_precision_prior", v) for v in noise_precision_prior)
        if not min_scale >= 0:
            raise ValueError(f"min_scale must be non-negative, got {min_scale}")
        self.net = net
        self.noise = noise
        self.noise_precision_prior = (a, b)
        self.min_scale = float(min_scale)

    @property
    def num_outputs(self) -> int:
        """Outputs the network must have: 2 for heteroscedastic noise, else 1."""
        return 2 if self.noise == "heteroscedastic" else 1

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        """Sample (``y=None``) or observe ``y`` ``(N,)``; returns the value at ``"obs"``, ``(*S, N)``.

        ``obs_mask`` (N,) boolean marks missing targets False (Pyro imputes them at the latent
        site ``"obs_unobserved"``; their values are ignored); ``num_data`` must be ``None`` or N.
        """
        num_data = _check_call(x, num_data)
        if y is not None:
            if obs_mask is None:
                check_float_tensor("y", y, dim=1)  # finite: NaN only where obs_mask marks y missing
            elif not isinstance(y, torch.Tensor) or not y.is_floating_point():
                raise TypeError(f"y must be a floating tensor, got {type(y).__name__} {getattr(y, 'dtype', '')}")
            if y.shape != (num_data,):
                raise ValueError(f"y must have shape ({num_data},) (one target per row of x), got {tuple(y.shape)}")
        out = self.net(x)
        _check_output(out, num_data, self.num_outputs, f"noise={self.noise!r}")
        loc = out[..., 0]
        if self.noise == "heteroscedastic":
            scale = F.softplus(out[..., 1]) + self.min_scale
        elif self.noise == "homoscedastic":
            prior = dist.Gamma(*(loc.new_tensor(v) for v in self.noise_precision_prior))
            precision = pyro.sample(NOISE_PRECISION_SITE, prior)  # () or (*S, 1): outside the data plate
            scale = precision.rsqrt().expand_as(loc)
        else:
            scale = loc.new_tensor(float(self.noise)).expand_as(loc)
        with pyro.plate(DATA_PLATE, num_data, dim=-1):
            pyro.deterministic("loc", loc)
            pyro.deterministic("noise_scale", scale)
            fn = observation_distribution("gaussian", loc, scale=scale)
            return pyro.sample(OBS_SITE, fn, obs=y, obs_mask=_check_mask(obs_mask, y, num_data))


class BNNClassifier(PyroModule):
    """Classification ``y ~ Categorical(logits = f_W(x))`` (module docstring).

    Args:
        net: the network, a ``PyroModule``, mapping ``x`` to ``(*S, N, K)`` logits.
        num_classes: K, checked against the network's output when given.
    """

    def __init__(self, net: nn.Module, num_classes: int | None = None) -> None:
        super().__init__()
        _check_net(net)
        check_int("num_classes", num_classes, 2, allow_none=True)
        self.net = net
        self.num_classes = num_classes

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        obs_mask: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        """Sample (``y=None``) or observe labels ``y`` ``(N,)`` int64; returns the value at ``"obs"``, ``(*S, N)``.

        ``obs_mask`` and ``num_data`` as for :meth:`BNNRegressor.forward` (masked labels must
        still be valid class indices, e.g. 0).
        """
        num_data = _check_call(x, num_data)
        logits = self.net(x)
        _check_output(logits, num_data, self.num_classes, "classification")
        if y is not None:
            if isinstance(y, torch.Tensor) and y.dtype != torch.long:
                raise TypeError(f"y must be an int64 tensor of labels, got dtype {y.dtype}")
            check_labels("y", y, num_data=num_data, num_classes=logits.shape[-1])
        with pyro.plate(DATA_PLATE, num_data, dim=-1):
            pyro.deterministic("logits", logits, event_dim=1)
            fn = observation_distribution("categorical", logits)
            return pyro.sample(OBS_SITE, fn, obs=y, obs_mask=_check_mask(obs_mask, y, num_data))


def _bayesian_dropout_net(net: nn.Module, prior_scale: float) -> PyroModule:
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if not any(isinstance(m, _DROPOUT) for m in net.modules()):
        raise ValueError("MC dropout needs a network with dropout layers (nn.Dropout, ...); net has none")
    if any(isinstance(m, BayesianLayer) for m in net.modules()):
        raise ValueError("MC dropout expects an ordinary torch network; it adds the Gaussian priors itself")
    return bayesianize(net, prior=GaussianPrior(prior_scale), which="all")


class _AlwaysDropout:
    """Keeps dropout on in ``eval`` mode: predictions sample dropout masks (MC dropout)."""

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.modules():
            if isinstance(module, _DROPOUT):
                module.train(True)
        return self


class MCDropoutRegressor(_AlwaysDropout, BNNRegressor):
    """MC dropout regression: ``BNNRegressor`` over ``net`` with ``N(0, prior_scale^2)`` priors, dropout always on.

    Args:
        net: an ordinary torch network containing dropout layers (it is copied, not modified).
        noise: as for :class:`BNNRegressor`.
        prior_scale: the Gaussian prior's standard deviation; the MAP objective's weight decay
            is ``1 / (2 prior_scale^2)`` per weight on the summed negative log-likelihood.
        **kwargs: passed to :class:`BNNRegressor`.
    """

    def __init__(self, net: nn.Module, noise: str | float = "homoscedastic", *, prior_scale: float = 1.0,
                 **kwargs) -> None:  # fmt: skip
        super().__init__(_bayesian_dropout_net(net, prior_scale), noise, **kwargs)
        self.train(self.training)


class MCDropoutClassifier(_AlwaysDropout, BNNClassifier):
    """MC dropout classification; ``prior_scale`` as in :class:`MCDropoutRegressor`, ``num_classes`` as in
    :class:`BNNClassifier`."""

    def __init__(self, net: nn.Module, num_classes: int | None = None, *, prior_scale: float = 1.0) -> None:
        super().__init__(_bayesian_dropout_net(net, prior_scale), num_classes)
        self.train(self.training)
