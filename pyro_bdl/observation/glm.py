"""Generalised linear observation models: a natural parameter ``eta`` -> a Pyro distribution.

The rows of the "Generalised Linear Regression" table, each under one name:

=====================  =============  ==================  ===============================  ==============
name                   target         link g(mu) = eta    distribution, mean g^-1(eta)     parameters
=====================  =============  ==================  ===============================  ==============
``gaussian``           real           identity            Normal(eta, scale), eta          ``scale``
``bernoulli_logit``    binary {0,1}   logit               Bernoulli, sigmoid(eta)          -
``bernoulli_probit``   binary {0,1}   probit              Bernoulli, Phi(eta)              -
``bernoulli_cloglog``  binary {0,1}   log(-log(1 - mu))   Bernoulli, 1 - exp(-exp(eta))    -
``categorical``        {0..K-1}       multinomial logit   Categorical, softmax(eta)        -
``poisson_log``        counts         log                 Poisson, exp(eta)                -
``poisson_sqrt``       counts         sqrt                Poisson, eta^2                   -
``gamma_reciprocal``   positive       reciprocal          Gamma(a, a * eta), 1 / eta       ``concentration``
``tobit``              non-negative   ReLU (censoring)    Tobit(eta, scale), see below     ``scale``
``ordinal_logit``      {0..K-1}       cumulative logit    OrderedLogistic(eta, cutpoints)  ``cutpoints``
=====================  =============  ==================  ===============================  ==============

Shapes (shared by every function and class of this package):

* ``eta``: ``(*batch)``, the distribution's batch shape; for ``categorical``
  ``(*batch, K)``, the logits, with batch shape ``(*batch)``. Every event shape is ``()``:
  one scalar observation per batch element (a category index for the discrete rows).
* ``scale``: positive, broadcastable with ``eta`` (default 1).
* ``concentration``: the Gamma shape ``a``, positive, broadcastable with ``eta`` (default
  1). With rate ``a * eta`` the mean is ``1 / eta`` and the variance ``1 / (a * eta^2)``;
  ``eta`` must be positive, which is checked.
* ``cutpoints``: ``(K - 1,)`` (or ``(*batch, K - 1)``), strictly increasing, required.
  ``P(y <= k) = sigmoid(cutpoints[k] - eta)``.

Conventions:

* ``bernoulli_cloglog`` uses the complementary log-log link ``eta = log(-log(1 - mu))``,
  i.e. ``mu = 1 - exp(-exp(eta))``: the CDF at ``eta`` of the Gumbel law for *minima*,
  and ``P(N > 0)`` for ``N ~ Poisson(exp(eta))``. The slide's ``exp(-exp(-eta))`` is the
  Gumbel (maxima) CDF, the log-log link; it is the mirror image,
  ``exp(-exp(-eta)) = 1 - cloglog_inverse(-eta)``, so either fits the same data with ``eta``
  negated. The name "complementary log-log" and GLM software (R's ``binomial("cloglog")``)
  mean the first, hence the choice.
* ``bernoulli_probit`` and ``bernoulli_cloglog`` build the Bernoulli from stable logits
  (``log mu - log(1 - mu)`` through ``log_ndtr``/``expm1``), so the log-likelihood stays
  finite where ``mu`` rounds to 0 or 1.
* The mean of ``categorical`` is the probability vector ``softmax(eta)`` (the mean of the
  one-hot ``y``), ``(*batch, K)``; the mean of ``ordinal_logit`` is the expected category
  index ``sum_k P(y > k) = sum_k sigmoid(eta - cutpoints[k])``, ``(*batch)``.
* Tobit: ``y = max(0, y*)``, ``y* ~ Normal(eta, scale)``; see :class:`~pyro_bdl.observation.tobit.Tobit`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from pyro_bdl.observation.tobit import Tobit

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ParamSpec:
    """A parameter of an observation model: its name, constraint and default.

    ``default(num_classes)`` returns the initial value (float32), or ``None`` when the
    parameter has no default and must be given.
    """

    name: str
    constraint: constraints.Constraint
    description: str
    default: Callable[[int | None], torch.Tensor | None]


@dataclass(frozen=True)
class ObservationSpec:
    """One row of the table: how to build the distribution and its mean from ``eta``.

    ``build(eta, params)`` and ``mean(eta, params)`` receive validated parameters cast to
    ``eta``'s dtype and device. ``eta_event_ndim`` is 1 when ``eta`` carries a trailing
    parameter dimension (the ``K`` logits of ``categorical``), else 0. ``discrete`` says
    whether observations are integers (counts, labels).
    """

    name: str
    target: str
    link: str
    build: Callable[[torch.Tensor, Params], dist.TorchDistribution]
    mean: Callable[[torch.Tensor, Params], torch.Tensor]
    params: tuple[ParamSpec, ...] = ()
    discrete: bool = False
    eta_event_ndim: int = 0
    eta_positive: bool = False


def _ones(_: int | None) -> torch.Tensor:
    return torch.tensor(1.0)


def _uniform_cutpoints(num_classes: int | None) -> torch.Tensor | None:
    """``logit(k / K)``, k = 1..K-1: all ``K`` categories equally likely at ``eta = 0``."""
    if num_classes is None:
        return None
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return torch.logit(torch.arange(1, num_classes) / num_classes)


_SCALE = ParamSpec("scale", constraints.positive, "positive", _ones)
_CONCENTRATION = ParamSpec("concentration", constraints.positive, "positive", _ones)
_CUTPOINTS = ParamSpec("cutpoints", constraints.ordered_vector, "a strictly increasing vector", _uniform_cutpoints)


def _probit_logits(eta: torch.Tensor) -> torch.Tensor:
    return torch.special.log_ndtr(eta) - torch.special.log_ndtr(-eta)


def _cloglog_logits(eta: torch.Tensor) -> torch.Tensor:
    rate = eta.exp()  # log mu = log(1 - exp(-rate)), log(1 - mu) = -rate
    logits = torch.log(-torch.expm1(-rate)) + rate
    return logits.clamp(max=torch.finfo(eta.dtype).max)


def _cloglog_mean(eta: torch.Tensor) -> torch.Tensor:
    return -torch.expm1(-eta.exp())


def _ordinal_mean(eta: torch.Tensor, cutpoints: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(eta.unsqueeze(-1) - cutpoints).sum(-1)


_SPECS = (
    ObservationSpec(
        "gaussian", "real", "identity", lambda eta, p: dist.Normal(eta, p["scale"]), lambda eta, p: eta, (_SCALE,)
    ),
    ObservationSpec(
        "bernoulli_logit",
        "binary",
        "logit",
        lambda eta, p: dist.Bernoulli(logits=eta),
        lambda eta, p: torch.sigmoid(eta),
        discrete=True,
    ),
    ObservationSpec(
        "bernoulli_probit",
        "binary",
        "probit",
        lambda eta, p: dist.Bernoulli(logits=_probit_logits(eta)),
        lambda eta, p: torch.special.ndtr(eta),
        discrete=True,
    ),
    ObservationSpec(
        "bernoulli_cloglog",
        "binary",
        "complementary log-log",
        lambda eta, p: dist.Bernoulli(logits=_cloglog_logits(eta)),
        lambda eta, p: _cloglog_mean(eta),
        discrete=True,
    ),
    ObservationSpec(
        "categorical",
        "categorical",
        "multinomial logit",
        lambda eta, p: dist.Categorical(logits=eta),
        lambda eta, p: torch.softmax(eta, dim=-1),
        discrete=True,
        eta_event_ndim=1,
    ),
    ObservationSpec(
        "poisson_log",
        "counts",
        "log",
        lambda eta, p: dist.Poisson(eta.exp()),
        lambda eta, p: eta.exp(),
        discrete=True,
    ),
    ObservationSpec(
        "poisson_sqrt",
        "counts",
        "sqrt",
        lambda eta, p: dist.Poisson(eta.square()),
        lambda eta, p: eta.square(),
        discrete=True,
    ),
    ObservationSpec(
        "gamma_reciprocal",
        "positive",
        "reciprocal",
        lambda eta, p: dist.Gamma(p["concentration"], p["concentration"] * eta),
        lambda eta, p: eta.reciprocal(),
        (_CONCENTRATION,),
        eta_positive=True,
    ),
    ObservationSpec(
        "tobit",
        "non-negative (sparse)",
        "ReLU / censoring at 0",
        lambda eta, p: Tobit(eta, p["scale"]),
        lambda eta, p: Tobit(eta, p["scale"]).mean,
        (_SCALE,),
    ),
    ObservationSpec(
        "ordinal_logit",
        "ordered categories",
        "cumulative logit",
        lambda eta, p: dist.OrderedLogistic(eta, p["cutpoints"]),
        lambda eta, p: _ordinal_mean(eta, p["cutpoints"]),
        (_CUTPOINTS,),
        discrete=True,
    ),
)

OBSERVATION_MODELS: dict[str, ObservationSpec] = {spec.name: spec for spec in _SPECS}
"""Every observation model, by name, in table order."""


def get_observation_model(name: str) -> ObservationSpec:
    """The :class:`ObservationSpec` called ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return OBSERVATION_MODELS[name]
    except (KeyError, TypeError):
        valid = ", ".join(OBSERVATION_MODELS)
        raise ValueError(f"unknown observation model {name!r}; expected one of: {valid}") from None


def check_param(spec: ObservationSpec, param: ParamSpec, value, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` as a floating tensor (of ``dtype`` if given), checked against ``param``'s constraint.

    Raises ``ValueError`` when the constraint is violated.
    """
    value = torch.as_tensor(value, dtype=dtype)
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    if param.constraint is constraints.ordered_vector and (value.dim() == 0 or value.shape[-1] == 0):
        raise ValueError(f"{spec.name}: {param.name} must be a non-empty vector, got shape {tuple(value.shape)}")
    if not bool(param.constraint.check(value.detach()).all()):
        raise ValueError(f"{spec.name}: {param.name} must be {param.description}, got {value.detach()}")
    return value


def param_values_or_defaults(spec: ObservationSpec, params: dict, num_classes: int | None = None) -> dict:
    """The given parameter values, defaults for the missing ones; unknown or missing names raise.

    ``num_classes`` feeds defaults that depend on K (the ordinal cutpoints). Values are
    returned as given, unchecked (see :func:`check_param`).
    """
    known = {param.name for param in spec.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{spec.name}: unexpected parameters {unknown}; it takes {sorted(known) or 'none'}")
    values = {}
    for param in spec.params:
        value = params.get(param.name)
        if value is None:
            value = param.default(num_classes)
        if value is None:
            hint = "" if num_classes is not None else " (or give num_classes where K sets the default)"
            raise ValueError(f"{spec.name}: parameter {param.name!r} ({param.description}) is required{hint}")
        values[param.name] = value
    return values


def _resolve(name: str, eta: torch.Tensor, params: dict) -> tuple[ObservationSpec, Params]:
    spec = get_observation_model(name)
    if not isinstance(eta, torch.Tensor) or not eta.is_floating_point():
        raise TypeError(
            f"{name}: eta must be a floating-point tensor, got {type(eta).__name__} {getattr(eta, 'dtype', '')}"
        )
    if eta.dim() < spec.eta_event_ndim:
        raise ValueError(f"{name}: eta must have a trailing dimension of K logits, got shape {tuple(eta.shape)}")
    values = param_values_or_defaults(spec, params)
    if spec.eta_positive and not bool((eta.detach() > 0).all()):
        raise ValueError(f"{name}: eta must be positive (mean = 1 / eta), got min {eta.detach().min().item():.4g}")
    resolved = {
        param.name: check_param(spec, param, values[param.name], eta.dtype).to(dtype=eta.dtype, device=eta.device)
        for param in spec.params
    }
    return spec, resolved


def observation_distribution(name: str, eta: torch.Tensor, **params) -> dist.TorchDistribution:
    """The distribution of ``y`` given the natural parameter ``eta`` under model ``name``.

    Args:
        name: a key of :data:`OBSERVATION_MODELS`.
        eta: natural parameter, ``(*batch)`` (``(*batch, K)`` for ``categorical``).
        **params: the model's parameters (``scale``, ``concentration``, ``cutpoints``; see
            the module docstring); omitted ones take their defaults.

    Returns:
        A Pyro distribution with batch shape ``(*batch)`` and event shape ``()``.

    Raises:
        ValueError: unknown name or parameter, a parameter outside its constraint, a
            missing required parameter, or ``eta <= 0`` for ``gamma_reciprocal``.
        TypeError: ``eta`` is not a floating-point tensor.
    """
    spec, resolved = _resolve(name, eta, params)
    return spec.build(eta, resolved)


def mean_function(name: str, eta: torch.Tensor, **params) -> torch.Tensor:
    """``E[y | eta]``, the inverse link of model ``name``; arguments as for :func:`observation_distribution`.

    Returns:
        ``(*batch)``; ``(*batch, K)`` probabilities for ``categorical``.
    """
    spec, resolved = _resolve(name, eta, params)
    return spec.mean(eta, resolved)
