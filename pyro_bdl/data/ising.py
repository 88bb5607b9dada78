"""The 2-D Ising model on a periodic lattice: Swendsen-Wang samples and exact results to check them.

``H(s) = -J sum_<ij> s_i s_j`` over nearest-neighbour pairs of an ``m x n`` periodic lattice
(spins ``s = +-1``, ``J = 1``, ``k_B = 1``), ``p(s) = exp(-H(s) / T) / Z``.

===========================  ==============================================================
function                     returns
===========================  ==============================================================
``swendsen_wang``            (num_samples, m * n) float32 in {0, 1} (spin up = 1), rows of the
                             lattice in row-major order
``energy_per_spin``          (n_samples,) float64 ``H(s) / (m n)`` of spins (..., m, n) in {-1, 1}
``kaufman_log_partition``    ``log Z`` of the finite periodic lattice, exact (Kaufman 1949)
``exact_energy_per_spin``    ``<H> / (m n)`` of the finite lattice, from ``log Z`` by a central
                             difference in ``1 / T``
``onsager_energy_per_spin``  the infinite lattice's ``<H> / N`` (Onsager 1944); ``-sqrt 2`` at T_c
===========================  ==============================================================

Swendsen & Wang (1987): each sweep puts a bond on every satisfied neighbour pair with
probability ``1 - exp(-2 J / T)``, finds the clusters (connected components of the bonds) and
flips each cluster with probability 1/2. It has no critical slowing down to speak of at T_c,
where single-spin Metropolis does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import ellipk

from pyro_bdl.validation import check_int, check_positive

CRITICAL_TEMPERATURE = 2.0 / math.log(1.0 + math.sqrt(2.0))
"""Onsager's T_c of the square lattice, J = k_B = 1 (about 2.269)."""


def _neighbours(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Site indices of every right and down neighbour pair of the periodic ``m x n`` lattice, (2 m n,) each."""
    index = np.arange(m * n).reshape(m, n)
    right, down = np.roll(index, -1, axis=1), np.roll(index, -1, axis=0)
    return np.concatenate([index.ravel(), index.ravel()]), np.concatenate([right.ravel(), down.ravel()])


def swendsen_wang(side: int | tuple[int, int], temperature: float, num_samples: int, *, burn_in: int = 200,
                  thin: int = 2, seed: int = 0) -> torch.Tensor:  # fmt: skip
    """``num_samples`` configurations of the periodic Ising lattice at ``temperature``.

    Args:
        side: ``L`` (an ``L x L`` lattice) or ``(m, n)``.
        temperature: ``T > 0`` (``J = k_B = 1``).
        num_samples: configurations returned.
        burn_in: sweeps discarded first (from a random start).
        thin: sweeps between returned configurations.
        seed: seeds numpy's generator.

    Returns:
        (num_samples, m * n) float32 in {0, 1}, spin up = 1, row-major.
    """
    m, n = (side, side) if isinstance(side, int) else side
    check_int("side", m, 2)
    check_int("side", n, 2)
    check_positive("temperature", temperature)
    check_int("num_samples", num_samples)
    check_int("burn_in", burn_in, 0)
    check_int("thin", thin)
    rng = np.random.default_rng(seed)
    first, second = _neighbours(m, n)
    p_bond = 1.0 - math.exp(-2.0 / temperature)
    spins = rng.choice(np.array([-1, 1], dtype=np.int8), size=m * n)
    out = np.empty((num_samples, m * n), dtype=np.float32)
    for sweep in range(burn_in + num_samples * thin):
        bonded = (spins[first] == spins[second]) & (rng.random(first.shape[0]) < p_bond)
        graph = coo_matrix((np.ones(int(bonded.sum())), (first[bonded], second[bonded])), shape=(m * n, m * n))
        count, labels = connected_components(graph, directed=False)
        flip = rng.random(count) < 0.5
        spins = np.where(flip[labels], -spins, spins).astype(np.int8)
        done = sweep - burn_in + 1
        if done > 0 and done % thin == 0:
            out[done // thin - 1] = (spins + 1) // 2
    return torch.from_numpy(out)


def energy_per_spin(spins: torch.Tensor) -> torch.Tensor:
    """``H(s) / (m n)`` (...,) float64 of spins (..., m, n) in {-1, 1}, periodic."""
    s = spins.double()
    bonds = s * s.roll(-1, -1) + s * s.roll(-1, -2)
    return -bonds.sum((-1, -2)) / (s.shape[-1] * s.shape[-2])


def kaufman_log_partition(m: int, n: int, temperature: float) -> float:
    """``log Z`` of the periodic ``m x n`` lattice at ``temperature`` (Kaufman 1949), exact.

    ``Z = 1/2 (2 sinh 2K)^(mn/2) (Z1 + Z2 + Z3 + Z4)``, ``K = 1 / T``, with
    ``Z1,2 = prod_{r<n} 2 cosh, 2 sinh (m gamma_{2r+1} / 2)``, ``Z3,4`` the same over
    ``gamma_{2r}``, ``cosh gamma_k = cosh 2K coth 2K - cos(pi k / n)`` (``gamma_k > 0``) and
    ``gamma_0 = 2K + log tanh K`` (signed: negative below T_c, zero at T_c).
    """
    check_int("m", m, 2)
    check_int("n", n, 2)
    k = 1.0 / check_positive("temperature", temperature)

    def gamma(index: int) -> float:
        if index == 0:
            return 2 * k + math.log(math.tanh(k))
        return math.acosh(math.cosh(2 * k) / math.tanh(2 * k) - math.cos(math.pi * index / n))

    terms = []  # (sign, log |Z_i|)
    for offset in (1, 0):
        gammas = [m * gamma(2 * r + offset) / 2 for r in range(n)]
        log_cosh = sum(g + math.log1p(math.exp(-2 * g)) if g > 0 else -g + math.log1p(math.exp(2 * g))
                       for g in gammas)  # log 2 cosh(g), stable  # fmt: skip
        terms.append((1.0, log_cosh))
        signs = [math.copysign(1.0, g) if g != 0 else 0.0 for g in gammas]
        if all(signs):
            log_sinh = sum(abs(g) + math.log(-math.expm1(-2 * abs(g))) for g in gammas)  # log 2 |sinh g|
            terms.append((math.prod(signs), log_sinh))
    top = max(log for _, log in terms)
    total = sum(sign * math.exp(log - top) for sign, log in terms)
    return math.log(0.5) + m * n / 2 * math.log(2 * math.sinh(2 * k)) + top + math.log(total)


def exact_energy_per_spin(m: int, n: int, temperature: float, step: float = 1e-5) -> float:
    """``<H> / (m n) = -d log Z / d beta / (m n)`` of the finite periodic lattice (central difference)."""
    beta = 1.0 / check_positive("temperature", temperature)
    upper, lower = kaufman_log_partition(m, n, 1 / (beta + step)), kaufman_log_partition(m, n, 1 / (beta - step))
    return -(upper - lower) / (2 * step) / (m * n)


def onsager_energy_per_spin(temperature: float) -> float:
    """The infinite lattice's energy per spin: ``-coth 2K [1 + (2/pi)(2 tanh^2 2K - 1) K(q)]``,
    ``q = 2 sinh 2K / cosh^2 2K`` (``K(q)`` the complete elliptic integral of modulus ``q``)."""
    k = 1.0 / check_positive("temperature", temperature)
    q = 2 * math.sinh(2 * k) / math.cosh(2 * k) ** 2
    elliptic = 0.0 if abs(2 * math.tanh(2 * k) ** 2 - 1) < 1e-15 else float(ellipk(q**2))
    return -1 / math.tanh(2 * k) * (1 + 2 / math.pi * (2 * math.tanh(2 * k) ** 2 - 1) * elliptic)


__all__ = [
    "CRITICAL_TEMPERATURE",
    "energy_per_spin",
    "exact_energy_per_spin",
    "kaufman_log_partition",
    "onsager_energy_per_spin",
    "swendsen_wang",
]
