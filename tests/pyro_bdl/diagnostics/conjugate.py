"""Conjugate models with closed-form posteriors, shared by the diagnostics tests.

* Bayesian linear regression, known noise: ``w ~ N(0, tau^2 I)``, ``y_n ~ N(x_n . w, sigma^2)``;
  the posterior is ``N(mean, cov)`` with ``cov = (X^T X / sigma^2 + I / tau^2)^-1`` and
  ``mean = cov X^T y / sigma^2``.
* Normal-Normal per datum: ``z_n ~ N(0, 1)``, ``y_n ~ N(z_n, s^2)``; the posterior is
  ``z_n | y_n ~ N(y_n / (1 + s^2), s^2 / (1 + s^2))``, which an amortised guide can match exactly.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

SIGMA, TAU = 0.5, 1.0
NOISE = 0.7


def regression_data(num_data: int = 20, features: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (N, D), y (N,)) drawn with the global torch seed."""
    x = torch.randn(num_data, features)
    w = torch.linspace(1.0, -0.5, features)
    return x, x @ w + SIGMA * torch.randn(num_data)


def regression_model(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Linear regression; ``w`` broadcasts over leading draws dims (w: (..., 1, D) -> mean (..., N))."""
    w = pyro.sample("w", dist.Normal(0.0, TAU).expand([x.shape[-1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("obs", dist.Normal((x * w).sum(-1), SIGMA), obs=y)


def regression_posterior(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form posterior (mean (D,), covariance (D, D)) of the regression weights."""
    precision = x.T @ x / SIGMA**2 + torch.eye(x.shape[1]) / TAU**2
    cov = torch.linalg.inv(precision)
    return cov @ x.T @ y / SIGMA**2, cov


def regression_guide(x: torch.Tensor, y: torch.Tensor, width: float = 1.0):
    """A full-covariance guide at the exact posterior, its scale multiplied by ``width``."""
    mean, cov = regression_posterior(x, y)
    scale_tril = width * torch.linalg.cholesky(cov)

    def guide(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.sample("w", dist.MultivariateNormal(mean, scale_tril=scale_tril))

    return guide


def normal_model(y: torch.Tensor) -> None:
    """Normal-Normal: one latent per datum, in the plate ``data``."""
    with pyro.plate("data", y.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(z, NOISE), obs=y)


def normal_guide(width: float = 1.0):
    """Amortised guide ``q(z_n | y_n)``: the exact posterior with its scale multiplied by ``width``."""
    scale = width * (NOISE**2 / (1 + NOISE**2)) ** 0.5

    def guide(y: torch.Tensor) -> None:
        with pyro.plate("data", y.shape[0]):
            pyro.sample("z", dist.Normal(y / (1 + NOISE**2), scale))

    return guide
