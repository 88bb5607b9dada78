"""Annealed importance sampling of an RBM's log partition function (Salakhutdinov & Murray 2008).

The chain of distributions, for inverse temperatures ``0 = beta_0 < ... < beta_K = 1``::

    p*_beta(v) = exp((1 - beta) a_A.v) * exp(beta a.v) * prod_j (1 + exp(beta (b_j + v.W[:, j])))

starts at the base-rate model ``p_A`` (independent visible units with biases ``a_A``, e.g. from
the data's pixel means; ``log Z_A = sum_i softplus(a_A,i) + H log 2``) and ends at the RBM. Each
run draws ``v_0 ~ p_A``, moves ``v`` by one block-Gibbs sweep that leaves ``p_beta_k`` invariant
and accumulates ``log w = sum_k log p*_beta_k(v_k) - log p*_beta_(k-1)(v_k)``. Then
``Z / Z_A`` is estimated by the mean of ``w`` over runs, unbiased in ``Z`` (so ``log Z`` is
biased low on average: a poorly mixed AIS run *underestimates* ``log Z`` and flatters the
model's log-likelihood). Reported with it: the delta-method standard error of ``log Z``,
``std(w) / (sqrt(M) mean(w))``, and the effective sample size ``(sum w)^2 / sum w^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pyro_bdl.models.rbm import RBM
from pyro_bdl.validation import check_int
from triton_kernels.cpu_bernoulli import bernoulli_bits
from triton_kernels.cpu_binary_rows import binary_addmm, binary_kernels_enabled

BASE_RATE_CLAMP = 1e-3
"""Pixel means are clamped to ``[c, 1 - c]`` before taking the base-rate logits."""


@dataclass(frozen=True)
class AISResult:
    """An AIS estimate: ``log_z`` with ``stderr`` (delta method), the ESS of the ``num_runs`` weights,
    the schedule (``num_betas`` inverse temperatures) and the log weights (num_runs,)."""

    log_z: float
    stderr: float
    ess: float
    num_betas: int
    num_runs: int
    log_weights: torch.Tensor

    def as_dict(self) -> dict[str, float | int]:
        """The scalars, for a results JSON."""
        return {"log_z": self.log_z, "stderr": self.stderr, "ess": self.ess, "num_betas": self.num_betas,
                "num_runs": self.num_runs}  # fmt: skip


def ais_schedule(num_betas: int) -> torch.Tensor:
    """Inverse temperatures (num_betas,) float64 from 0 to 1, spaced like Salakhutdinov & Murray's
    14,500: 500/14500 of the steps on [0, 0.5], 4000/14500 on [0.5, 0.9], the rest on [0.9, 1]."""
    check_int("num_betas", num_betas, 10)
    first, second = max(1, round(num_betas * 500 / 14500)), max(1, round(num_betas * 4000 / 14500))
    third = num_betas - first - second
    return torch.cat([
        torch.linspace(0.0, 0.5, first + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.5, 0.9, second + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.9, 1.0, third, dtype=torch.float64),
    ])  # fmt: skip


def base_rate_bias(data: torch.Tensor) -> torch.Tensor:
    """Base-rate visible logits (D,) from binary training rows ``data`` (rows, D): logit of the clamped means."""
    means = data.double().mean(0).clamp(BASE_RATE_CLAMP, 1 - BASE_RATE_CLAMP)
    return torch.log(means) - torch.log1p(-means)


@torch.no_grad()
def ais_log_partition(
    rbm: RBM,
    *,
    num_betas: int = 14500,
    num_runs: int = 100,
    base_bias: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AISResult:
    """AIS estimate of ``log Z`` of a binary ``rbm``: two matmuls per temperature in the model's dtype (one
    pre-activation ``b + v.W`` serves the weight increment and the draw of ``h``), the log weights in float64.
    Both matmuls multiply binary samples: they run as sums of weight rows at the ones
    (:func:`~triton_kernels.cpu_binary_rows.binary_addmm`, the weight transposed once for ``h``) where the
    kernels are on and the samples sparse enough, as dense matmuls otherwise.

    Args:
        rbm: an :class:`~pyro_bdl.models.RBM` with binary visible units.
        num_betas: inverse temperatures of :func:`ais_schedule`, >= 10.
        num_runs: independent AIS runs M (vectorised).
        base_bias: base-rate logits (D,) (:func:`base_rate_bias` of the training data); zeros
            (uniform bits) by default.
        generator: a ``torch.Generator`` for reproducible runs (default: the global one).
    """
    if rbm.visible != "bernoulli":
        raise ValueError(f"ais_log_partition needs binary visible units, got visible={rbm.visible!r}")
    check_int("num_runs", num_runs, 2)
    betas = ais_schedule(num_betas)
    weight, visible_bias, hidden_bias = (p.detach() for p in rbm.params())  # matmuls in the model's dtype
    base = torch.zeros_like(visible_bias, dtype=torch.float64) if base_bias is None else base_bias.detach().double()
    if base.shape != visible_bias.shape:
        raise ValueError(f"base_bias must have shape {tuple(visible_bias.shape)}, got {tuple(base.shape)}")
    log_z_base = float(F.softplus(base).sum()) + rbm.hidden_dim * math.log(2.0)
    bias_step = visible_bias.double() - base  # d/d beta of the visible term of log p*_beta

    def bernoulli(probs: torch.Tensor) -> torch.Tensor:  # the compiled sampler, seeded from ``generator``
        return bernoulli_bits(probs, generator).to(weight.dtype)

    weight_t = weight.T.contiguous() if binary_kernels_enabled() else weight.T  # read by rows for h -> v
    v = bernoulli(torch.sigmoid(base).expand(num_runs, -1))
    log_w = torch.zeros(num_runs, dtype=torch.float64)
    previous = 0.0
    for beta in betas[1:].tolist():
        # log p*_beta(v) - log p*_previous(v), from one pre-activation b + v.W (its rounding enters the
        # increment only times beta - previous), accumulated in float64
        activation = binary_addmm(hidden_bias, v, weight).double()
        log_w += (beta - previous) * (v.double() @ bias_step) + (
            F.softplus(beta * activation) - F.softplus(previous * activation)).sum(-1)  # fmt: skip
        h = bernoulli(torch.sigmoid(beta * activation))
        v = bernoulli(torch.sigmoid((1 - beta) * base + beta * binary_addmm(visible_bias, h, weight_t).double()))
        previous = beta
    log_mean = float(torch.logsumexp(log_w, 0)) - math.log(num_runs)
    w = torch.exp(log_w - log_w.max())
    ess = float(w.sum() ** 2 / (w**2).sum())
    stderr = float(w.std() / (math.sqrt(num_runs) * w.mean()))
    return AISResult(log_z_base + log_mean, stderr, ess, num_betas, num_runs, log_w)


__all__ = ["AISResult", "ais_log_partition", "ais_schedule", "base_rate_bias"]
