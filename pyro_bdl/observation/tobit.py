"""The Tobit likelihood: a Gaussian censored at zero from below (ReLU of a Gaussian).

Latent ``y* ~ Normal(loc, scale)``, observed ``y = max(0, y*)``. The law of ``y`` has an
atom at 0 and a Gaussian density above it::

    log p(y) = log Phi(-loc / scale)          if y == 0
             = log Normal(y; loc, scale)       if y > 0

    E[y] = scale * phi(loc / scale) + loc * Phi(loc / scale)

with ``phi``/``Phi`` the standard normal density and distribution function. The density
part is with respect to Lebesgue measure and the atom with respect to counting measure,
so ``log_prob`` mixes the two, as every censored likelihood does.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import broadcast_all

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)
_EMPTY_SHAPE = torch.Size()


class Tobit(TorchDistribution):
    """Gaussian censored at zero: ``y = max(0, y*)``, ``y* ~ Normal(loc, scale)``.

    Args:
        loc: mean of the latent Gaussian (the natural parameter ``eta``), any shape.
        scale: standard deviation of the latent Gaussian, positive, broadcastable with ``loc``.
        validate_args: as for ``torch.distributions.Distribution``.

    Shapes: batch shape ``broadcast(loc, scale).shape``, event shape ``()``; samples lie in
    ``[0, inf)`` and ``log_prob`` rejects negative values when validation is on.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Tobit, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        super(Tobit, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=_EMPTY_SHAPE) -> torch.Tensor:
        """ReLU of a reparametrised Gaussian draw; shape ``sample_shape + batch_shape``."""
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return torch.relu(self.loc + self.scale * noise)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log Phi(-loc/scale)`` where ``value == 0``, the Gaussian log density where ``value > 0``."""
        if self._validate_args:
            self._validate_sample(value)
        censored = torch.special.log_ndtr(-self.loc / self.scale)
        z = (value - self.loc) / self.scale
        density = -0.5 * z.square() - self.scale.log() - _HALF_LOG_TWO_PI
        return torch.where(value == 0, censored, density)

    @property
    def mean(self) -> torch.Tensor:
        z = self.loc / self.scale
        density = torch.exp(-0.5 * z.square() - _HALF_LOG_TWO_PI)
        return self.scale * density + self.loc * torch.special.ndtr(z)
