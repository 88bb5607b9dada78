"""Priors over network weights: Gaussian and the scale mixture of two Gaussians.

A :class:`Prior` builds, for a parameter of a given shape, a distribution whose event
shape is that whole shape (one site per weight tensor)::

    GaussianPrior(scale)                  w ~ N(0, scale^2) elementwise
    ScaleMixturePrior(pi, sigma1, sigma2) w ~ pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2)

The scale mixture is eq. 7 of Blundell, Cornebise, Kavukcuoglu & Wierstra 2015, "Weight
uncertainty in neural networks": a wide component (``sigma1``) and a narrow one
(``sigma2 << 1``) give a heavy-tailed, spike-and-slab-like prior. They searched
``-log sigma1 in {0, 1, 2}``, ``-log sigma2 in {6, 7, 8}``, ``pi in {1/4, 1/2, 3/4}``;
the defaults here are ``pi = 1/2, sigma1 = 1, sigma2 = e^-6``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from pyro_bdl.validation import check_positive


class Prior(ABC):
    """A prior over one weight tensor; subclass and implement :meth:`base`."""

    @abstractmethod
    def base(self, dtype: torch.dtype, device: torch.device | str | None) -> dist.TorchDistribution:
        """The prior of one scalar weight: a distribution with batch and event shape ``()``."""

    def distribution(
        self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> dist.TorchDistribution:  # fmt: skip
        """The prior of a whole weight tensor: batch shape ``()``, event shape ``shape``."""
        shape = torch.Size(shape)
        return self.base(dtype, device).expand(shape).to_event(len(shape))


class GaussianPrior(Prior):
    """Independent ``N(loc, scale^2)`` on every weight.

    Args:
        scale: standard deviation, positive.
        loc: mean (default 0).
    """

    def __init__(self, scale: float = 1.0, loc: float = 0.0) -> None:
        self.scale = check_positive("scale", scale)
        self.loc = float(loc)
        if not math.isfinite(self.loc):
            raise ValueError(f"loc must be finite, got {loc!r}")

    def base(self, dtype: torch.dtype, device: torch.device | str | None) -> dist.TorchDistribution:
        loc = torch.tensor(self.loc, dtype=dtype, device=device)
        return dist.Normal(loc, torch.tensor(self.scale, dtype=dtype, device=device))

    def __repr__(self) -> str:
        return f"GaussianPrior(scale={self.scale}, loc={self.loc})"


class RealMixtureSameFamily(dist.MixtureSameFamily):
    """``MixtureSameFamily`` of real-valued components, declaring its support ``real``.

    torch reports a mixture's support as ``MixtureSameFamilyConstraint``, which has no
    registered bijection, so autoguides (``AutoNormal``, ...) could not place a guide on a
    site with this prior. Every component here is supported on the whole real line.
    """

    support = constraints.real


class ScaleMixturePrior(Prior):
    """``pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2)`` on every weight (Blundell et al. 2015, eq. 7).

    Args:
        pi: weight of the first component, in (0, 1).
        sigma1: standard deviation of the first component, positive.
        sigma2: standard deviation of the second component, positive.

    Sampling is not reparameterised (the component is discrete); only ``log_prob`` enters
    SVI and NUTS.
    """

    def __init__(self, pi: float = 0.5, sigma1: float = 1.0, sigma2: float = math.exp(-6.0)) -> None:
        pi = float(pi)
        if not 0.0 < pi < 1.0:
            raise ValueError(f"pi must lie strictly between 0 and 1, got {pi!r}")
        self.pi = pi
        self.sigma1 = check_positive("sigma1", sigma1)
        self.sigma2 = check_positive("sigma2", sigma2)

    def base(self, dtype: torch.dtype, device: torch.device | str | None) -> dist.TorchDistribution:
        probs = torch.tensor([self.pi, 1.0 - self.pi], dtype=dtype, device=device)
        scales = torch.tensor([self.sigma1, self.sigma2], dtype=dtype, device=device)
        return RealMixtureSameFamily(dist.Categorical(probs=probs), dist.Normal(torch.zeros_like(scales), scales))

    def __repr__(self) -> str:
        return f"ScaleMixturePrior(pi={self.pi}, sigma1={self.sigma1}, sigma2={self.sigma2})"
