"""A Bernoulli distribution over signs {-1, +1}, with a straight-through relaxed sample.

``w ~ SignBernoulli(logits)`` means ``P(w = +1) = sigmoid(l)``, so

    log p(w) = log sigmoid(w * l) = -softplus(-w * l),      E[w] = tanh(l / 2).

It is the prior and the mean-field posterior of every weight of a Bayesian binary layer
(:mod:`pyro_bdl.layers.bayes_binary`). BayesBiNN (Meng, Bachmann & Khan, ICML 2020) writes the
same family with ``lambda = l / 2``.

Reparameterised sample (``temperature`` given; the Gumbel-softmax / concrete estimator of
BayesBiNN, eq. 9, in its straight-through form)::

    u ~ U(0, 1),  z = l + log(u / (1 - u))          (logistic noise: P(z >= 0) = sigmoid(l))
    hard = +1 if z >= 0 else -1                      (an exact draw of w)
    soft = tanh(z / (2 * temperature))               (the relaxed draw)
    rsample = hard + (soft - soft.detach())          (value: hard; gradient: d soft / d l)

The value is the hard +-1 sample exactly, so the forward pass can run on the XNOR kernels;
the gradient reaching ``logits`` is the relaxed one. Its factor ``sech^2(z / 2 tau) / (2 tau)``
is non-zero only for weights whose noisy logit lies within a few ``tau`` of 0.

``estimator="mean"`` (BayesBiNN's estimator as its code runs it, temperature ``1e-10``, where
the scale ``(1 - w_r^2 + 1e-10) / tau`` is exactly 1 for every saturated relaxed sample): the
value is the same hard sample, the gradient flows as if the weight were its mean::

    rsample = hard + (mu - mu.detach()),   mu = tanh(l / 2) = 2 sigmoid(l) - 1
    dL/dl = g * dmu/dl,                    g = dL/dw at the hard sample

so the natural gradient ``dL/dmu`` (:mod:`pyro_bdl.inference.natural_gradient`) is ``g`` itself,
the straight-through gradient, for every weight however confident: BayesBiNN's update
``lambda <- (1 - alpha) lambda - alpha (N g - lambda_0)``. It is exact for a loss linear in
``w`` (``E_q[g . w] = g . mu``). ``mu`` is computed as ``2 exp(-softplus(-l)) - 1`` so that its
gradient ``2 sigmoid(l) sigmoid(-l)`` does not cancel to 0 for large positive logits.

``log_prob`` is the Bernoulli mass of the hard value (not the relaxed density of Pyro's
``RelaxedBernoulliStraightThrough``), so the ELBO's ``log q - log p`` terms are masses of the
same discrete variable, and the analytic KL registered here serves ``TraceMeanField_ELBO``::

    KL(q || p) = sigmoid(lq) (log sigmoid(lq) - log sigmoid(lp))
               + sigmoid(-lq) (log sigmoid(-lq) - log sigmoid(-lp)).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.kl import register_kl
from torch.distributions.utils import broadcast_all

from pyro_bdl.validation import check_positive


class _Signs(constraints.Constraint):
    """The discrete set {-1, +1}."""

    is_discrete = True
    event_dim = 0

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value == 1) | (value == -1)


signs = _Signs()
"""Constraint: every entry is -1 or +1."""


ESTIMATORS = ("relaxed", "mean")


def _stable_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """``sigmoid(l)`` whose gradient ``sigmoid(l) sigmoid(-l)`` keeps its relative precision for large ``|l|``."""
    return torch.exp(-F.softplus(-logits))


class SignBernoulli(TorchDistribution):
    """``w in {-1, +1}`` with ``P(w = +1) = sigmoid(logits)``; straight-through ``rsample``.

    Args:
        logits: (*batch) real log-odds of +1.
        temperature: the relaxation temperature of ``rsample`` with ``estimator="relaxed"``
            (module docstring); ``None`` makes that estimator non-reparameterised (``sample``
            only, as for scoring).
        estimator: ``"relaxed"`` (Gumbel-softmax straight-through, needs ``temperature``) or
            ``"mean"`` (the hard sample, gradient through ``mu = tanh(l / 2)``; BayesBiNN's
            estimator at its temperature; ``temperature`` unused).
    """

    arg_constraints: ClassVar[dict] = {"logits": constraints.real}
    support = signs
    has_enumerate_support = True

    def __init__(self, logits: torch.Tensor, temperature: float | None = None, validate_args=None, *,
                 estimator: str = "relaxed") -> None:  # fmt: skip
        (self.logits,) = broadcast_all(logits)
        self.temperature = None if temperature is None else check_positive("temperature", temperature)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {estimator!r}")
        self.estimator = estimator
        super().__init__(self.logits.shape, validate_args=validate_args)

    @property
    def has_rsample(self) -> bool:
        return self.estimator == "mean" or self.temperature is not None

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SignBernoulli, _instance)
        new.logits = self.logits.expand(torch.Size(batch_shape))
        new.temperature = self.temperature
        new.estimator = self.estimator
        super(SignBernoulli, new).__init__(torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def probs(self) -> torch.Tensor:
        """P(w = +1), (*batch)."""
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return torch.tanh(self.logits / 2)

    @property
    def mode(self) -> torch.Tensor:
        """+1 where ``logits >= 0``, else -1 (ties go to +1, as ``sign`` does in the packing convention)."""
        return torch.where(self.logits >= 0, 1.0, -1.0).to(self.logits.dtype)

    @property
    def variance(self) -> torch.Tensor:
        return 1 - self.mean.square()

    def _noisy_logits(self, sample_shape: torch.Size) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        tiny = torch.finfo(self.logits.dtype).tiny
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device).clamp(tiny, 1 - 1e-7)
        return self.logits.expand(shape) + (torch.log(u) - torch.log1p(-u))

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            z = self._noisy_logits(torch.Size(sample_shape))
            return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        if not self.has_rsample:
            raise NotImplementedError(
                "SignBernoulli has no rsample without a temperature; pass temperature= or estimator='mean'"
            )
        z = self._noisy_logits(torch.Size(sample_shape))
        hard = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        if self.estimator == "mean":
            soft = (2 * _stable_sigmoid(self.logits) - 1).expand(z.shape)
        else:
            soft = torch.tanh(z / (2 * self.temperature))
        return hard + (soft - soft.detach())

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value, logits = broadcast_all(value, self.logits)
        return -F.softplus(-value * logits)

    def entropy(self) -> torch.Tensor:
        p = self.probs
        return F.softplus(-self.logits) * p + F.softplus(self.logits) * (1 - p)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        values = torch.tensor([-1.0, 1.0], dtype=self.logits.dtype, device=self.logits.device)
        values = values.reshape((2,) + (1,) * len(self.batch_shape))
        return values.expand((2, *self.batch_shape)) if expand else values


@register_kl(SignBernoulli, SignBernoulli)
def _kl_sign_bernoulli(q: SignBernoulli, p: SignBernoulli) -> torch.Tensor:
    """KL(q || p) of two sign Bernoullis, elementwise (module docstring); its ``q.logits`` gradient does not cancel."""
    q_plus, q_minus = _stable_sigmoid(q.logits), _stable_sigmoid(-q.logits)  # not 1 - q_plus: no cancellation
    log_q_plus, log_q_minus = -F.softplus(-q.logits), -F.softplus(q.logits)
    log_p_plus, log_p_minus = -F.softplus(-p.logits), -F.softplus(p.logits)
    return q_plus * (log_q_plus - log_p_plus) + q_minus * (log_q_minus - log_p_minus)
