"""Pareto k-hat of the importance weights of a guide: did variational inference work?

Yao, Vehtari, Simpson & Gelman (2018), "Yes, but did it work?: Evaluating variational
inference" (ICML): draw ``z_s ~ q``, form the log importance ratios
``log w_s = log p(x, z_s) - log q(z_s | x)``, fit a generalised Pareto distribution to the
largest weights (Pareto-smoothed importance sampling, Vehtari et al. 2024, JMLR 25(72)) and
read its shape k-hat:

* ``k <= 0.5``: the weights have finite variance; q is close to the posterior and
  importance-sampling estimates from it converge fast.
* ``0.5 < k <= 0.7``: finite mean, infinite variance; usable, estimates converge slowly.
* ``k > 0.7``: q misses mass the posterior has (typically too narrow); do not trust q or
  importance sampling from it. ``k > 1``: the weights do not even have a finite mean.

For a finite number of draws S, Vehtari et al. (2024) lower the usable bound to
``min(1 - 1 / log10(S), 0.7)`` (reported as :attr:`PSISDiagnostic.sample_size_threshold`).

For an amortised guide (every latent in the data plate) the weights split per datum,
``(S, N)`` from :func:`pyro_bdl.inference.scoring.log_importance_weights`, and there is one
k-hat per data point; otherwise (global latents, e.g. BNN weights) the joint weights ``(S,)``
from :func:`~pyro_bdl.inference.scoring.joint_log_importance_weights` give one k-hat.
The fit itself is ArviZ's ``psislw``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.inference import joint_log_importance_weights, log_importance_weights, trace_layout
from pyro_bdl.validation import check_int

MIN_SAMPLES = 100
"""Fewest draws accepted: the Pareto fit uses the largest ``min(S / 5, 3 sqrt(S))`` weights."""


@dataclass(frozen=True)
class PSISDiagnostic:
    """Pareto k-hat of a guide's importance weights (see the module docstring).

    Attributes:
        khat: ``(N,)`` one k-hat per data point (``per_datum``) or ``()`` one joint k-hat.
            ``-inf`` where the log weights are constant to floating-point precision (q is
            proportional to the posterior there: no tail at all).
        num_samples: S, the number of importance draws.
        per_datum: whether ``khat`` is per data point.
    """

    khat: np.ndarray
    num_samples: int
    per_datum: bool

    GOOD: ClassVar[float] = 0.5
    """At or below: finite-variance weights, q close to the posterior (Yao et al. 2018)."""
    BAD: ClassVar[float] = 0.7
    """Above: q unreliable, importance sampling from it too (Yao et al. 2018)."""

    @property
    def sample_size_threshold(self) -> float:
        """``min(1 - 1 / log10(S), 0.7)``: the bound for S draws (Vehtari et al. 2024)."""
        return min(1.0 - 1.0 / math.log10(self.num_samples), self.BAD)

    @property
    def max_khat(self) -> float:
        """The worst (largest) k-hat."""
        return float(np.max(self.khat))

    @property
    def reliable(self) -> bool:
        """Whether every k-hat is at most :attr:`BAD` (0.7)."""
        return self.max_khat <= self.BAD

    def counts(self) -> dict[str, int]:
        """How many k-hats fall in each band: good (<= 0.5), ok (<= 0.7), bad (<= 1), very bad (> 1)."""
        khat = np.atleast_1d(self.khat)
        return {
            "good": int(np.sum(khat <= self.GOOD)),
            "ok": int(np.sum((khat > self.GOOD) & (khat <= self.BAD))),
            "bad": int(np.sum((khat > self.BAD) & (khat <= 1.0))),
            "very bad": int(np.sum(khat > 1.0)),
        }

    def worst(self, count: int = 5) -> list[tuple[int, float]]:
        """``[(data index, k-hat)]`` of the ``count`` largest per-datum k-hats, worst first."""
        if not self.per_datum:
            raise ValueError("worst() needs per-datum k-hats; this diagnostic has one joint k-hat")
        order = np.argsort(-self.khat, kind="stable")[:count]
        return [(int(i), float(self.khat[i])) for i in order]

    def summary(self) -> str:
        """A few readable lines: what was measured, the k-hat bands and the verdict."""
        kind = f"per data point, N={self.khat.size}" if self.per_datum else "joint over all latents"
        lines = [f"PSIS k-hat of log p(x, z) - log q(z | x) ({kind}, S={self.num_samples} draws)"]
        if self.per_datum:
            total = self.khat.size
            for band, count in self.counts().items():
                limits = {"good": "<= 0.5", "ok": "(0.5, 0.7]", "bad": "(0.7, 1]", "very bad": "> 1"}[band]
                lines.append(f"  {band:>8} {limits:>10}: {count:6d} ({100.0 * count / total:5.1f}%)")
            lines.append(f"  max k-hat {self.max_khat:.3f} at data point {self.worst(1)[0][0]}")
        else:
            lines.append(f"  k-hat {self.max_khat:.3f}")
        if self.max_khat == -math.inf:
            verdict = "exact: the log weights are constant, q is proportional to the posterior"
        elif self.max_khat <= self.GOOD:
            verdict = "good: the guide is close to the posterior"
        elif self.max_khat <= self.BAD:
            verdict = "ok: usable, but importance-sampling estimates converge slowly"
        else:
            verdict = "bad: the guide misses posterior mass; do not trust it (k-hat > 0.7)"
        lines.append(f"  verdict: {verdict} (bound for S={self.num_samples}: {self.sample_size_threshold:.2f})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _pareto_khat(log_weights: np.ndarray) -> np.ndarray:
    """``(rows,)`` k-hat of each row of ``(rows, S)`` log importance ratios: ArviZ's ``psislw``."""
    import arviz as az

    _, khat = az.psislw(log_weights, reff=1.0)
    return np.asarray(khat, dtype=float)


def psis_khat(log_weights: torch.Tensor | np.ndarray) -> PSISDiagnostic:
    """Pareto k-hat of log importance weights.

    Args:
        log_weights: ``(S,)`` joint log weights, or ``(S, N)`` per-datum log weights (draws
            first, as :func:`~pyro_bdl.inference.scoring.log_importance_weights` returns).
            ``-inf`` (zero weight) is allowed, NaN and ``+inf`` are not.

    Returns:
        A :class:`PSISDiagnostic`, per datum for ``(S, N)`` input.

    Raises:
        ValueError: wrong number of dims, fewer than :data:`MIN_SAMPLES` draws, NaN or ``+inf``.
    """
    if isinstance(log_weights, torch.Tensor):
        log_weights = log_weights.detach().cpu().numpy()
    log_weights = np.asarray(log_weights)
    if not np.issubdtype(log_weights.dtype, np.floating):
        raise ValueError(f"log_weights must be floating point, got dtype {log_weights.dtype}")
    if log_weights.ndim not in (1, 2):
        raise ValueError(f"log_weights must be (draws,) or (draws, data), got shape {log_weights.shape}")
    num_samples = log_weights.shape[0]
    if num_samples < MIN_SAMPLES:
        raise ValueError(
            f"log_weights needs at least {MIN_SAMPLES} draws along dim 0 for the Pareto fit, "
            f"got {num_samples} (shape {log_weights.shape})"
        )
    if np.isnan(log_weights).any() or np.isposinf(log_weights).any():
        raise ValueError("log_weights must not contain NaN or +inf (a draw outside the model's support?)")
    if np.isneginf(log_weights).all(axis=0).any():
        raise ValueError("log_weights has a column where every weight is zero (-inf): no draw of q has mass under p")
    per_datum = log_weights.ndim == 2
    rows = log_weights.T if per_datum else log_weights[None, :]  # (rows, S): ArviZ wants draws last
    rows = rows.astype(np.float64)

    # Constant log weights (q proportional to p) have no tail to fit; ArviZ would return inf or
    # divide by zero there. Constant means: spread within a few ulps of the input precision.
    finite_max = np.max(rows, axis=1)
    spread = finite_max - np.min(np.where(np.isfinite(rows), rows, finite_max[:, None]), axis=1)
    eps = np.finfo(log_weights.dtype).eps
    constant = np.isfinite(rows).all(axis=1) & (spread <= 16 * eps * np.maximum(1.0, np.abs(finite_max)))
    khat = np.full(rows.shape[0], -np.inf)
    if (~constant).any():
        with np.errstate(divide="ignore", invalid="ignore"):
            khat[~constant] = _pareto_khat(rows[~constant])
    if np.isnan(khat).any():
        raise ValueError("the Pareto fit returned NaN for some weights; check the log weights for degenerate values")
    return PSISDiagnostic(khat=khat if per_datum else khat.reshape(()), num_samples=num_samples, per_datum=per_datum)


def importance_khat(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 1000,
    per_datum: bool | None = None,
    data_plate: str = DATA_PLATE,
    particle_chunk: int = 100,
    **kwargs: Any,
) -> PSISDiagnostic:
    """PSIS k-hat of a (model, guide) pair on data (Yao et al. 2018).

    Args:
        model: called as ``f(*args, **kwargs)``; must broadcast over a leading
            particle dim (as for ``vectorize_particles``).
        guide: likewise.
        num_samples: S guide draws (at least :data:`MIN_SAMPLES`; 1000 or more is better).
        per_datum: one k-hat per data point from
            :func:`~pyro_bdl.inference.scoring.log_importance_weights` (amortised guides:
            every latent in ``data_plate``), or one joint k-hat from
            :func:`~pyro_bdl.inference.scoring.joint_log_importance_weights`.
            ``None`` decides from the model: per datum when every site lies in ``data_plate``.
        data_plate: name of the plate over data points.
        particle_chunk: draws vectorised at once.

    Returns:
        A :class:`PSISDiagnostic`; ``print`` it for a summary.
    """
    check_int("num_samples", num_samples, MIN_SAMPLES)
    if per_datum is None:
        per_datum = trace_layout(model, guide, *args, data_plate=data_plate, **kwargs).is_local
    if per_datum:
        log_weights = log_importance_weights(
            model, guide, *args, num_samples=num_samples, data_plate=data_plate, particle_chunk=particle_chunk, **kwargs
        )
    else:
        log_weights = joint_log_importance_weights(
            model, guide, *args, num_samples=num_samples, particle_chunk=particle_chunk, **kwargs
        )
    return psis_khat(log_weights)
