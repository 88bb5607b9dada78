"""The Ising sampler and exact results: Kaufman against enumeration, Onsager's limit, Swendsen-Wang against both."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from pyro_bdl.data.ising import (
    CRITICAL_TEMPERATURE,
    energy_per_spin,
    exact_energy_per_spin,
    kaufman_log_partition,
    onsager_energy_per_spin,
    swendsen_wang,
)


def enumerated(m: int, n: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every configuration's total energy (2^(mn),) and probability at ``temperature``."""
    states = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=m * n)), dtype=torch.float64).reshape(-1, m, n)
    energy = energy_per_spin(states) * m * n
    return energy, torch.softmax(-energy / temperature, 0)


@pytest.mark.parametrize(("m", "n"), [(4, 4), (3, 4), (4, 3)])
@pytest.mark.parametrize("temperature", [1.5, CRITICAL_TEMPERATURE, 3.5])
def test_kaufman_partition_function_matches_enumeration(m, n, temperature):
    energy, probs = enumerated(m, n, temperature)
    assert kaufman_log_partition(m, n, temperature) == pytest.approx(float(torch.logsumexp(-energy / temperature, 0)),
                                                                     abs=1e-9)  # fmt: skip
    assert exact_energy_per_spin(m, n, temperature) == pytest.approx(float((probs * energy).sum()) / (m * n), abs=1e-7)


def test_finite_lattices_approach_onsager():
    assert onsager_energy_per_spin(CRITICAL_TEMPERATURE) == pytest.approx(-math.sqrt(2), abs=1e-12)
    for temperature in (2.0, 3.0):
        assert exact_energy_per_spin(300, 300, temperature) == pytest.approx(onsager_energy_per_spin(temperature),
                                                                             abs=1e-6)  # fmt: skip
    gaps = [exact_energy_per_spin(side, side, CRITICAL_TEMPERATURE) + math.sqrt(2) for side in (10, 40, 160, 640)]
    assert all(a < b < 0 for a, b in itertools.pairwise(gaps))  # finite lattices lie below -sqrt 2, closing in


def test_swendsen_wang_energy_histogram_matches_enumeration_on_3x3():
    """Chi-square of 20,000 samples' energy levels against the exact law; threshold: the 1 - 1e-6 quantile.
    The same samples against the law at T = 2.6 (a near miss) fail by far."""
    samples = swendsen_wang(3, CRITICAL_TEMPERATURE, 20_000, burn_in=100, thin=3, seed=0)
    energy_of_samples = energy_per_spin(samples.reshape(-1, 3, 3) * 2 - 1) * 9
    levels = torch.unique(enumerated(3, 3, 1.0)[0])

    def chi_square(temperature: float) -> tuple[float, float]:
        energy, probs = enumerated(3, 3, temperature)
        expected = torch.stack([probs[energy == level].sum() for level in levels]) * samples.shape[0]
        observed = torch.stack([(energy_of_samples == level).sum() for level in levels]).double()
        keep = expected > 5
        statistic = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
        return statistic, stats.chi2.ppf(1 - 1e-6, df=int(keep.sum()) - 1)

    statistic, threshold = chi_square(CRITICAL_TEMPERATURE)
    assert statistic < threshold
    assert chi_square(2.6)[0] > 3 * threshold


def test_swendsen_wang_energy_at_tc_matches_the_exact_40x40_lattice():
    """Mean energy per spin of 2,000 configurations within 4 batch-means standard errors of Kaufman's
    exact value for the 40 x 40 periodic lattice (-1.4298; Onsager's infinite lattice: -1.4142)."""
    samples = swendsen_wang(40, CRITICAL_TEMPERATURE, 2000, burn_in=100, thin=2, seed=1)
    energies = energy_per_spin(samples.reshape(-1, 40, 40) * 2 - 1)
    batch_means = energies.reshape(20, -1).mean(-1)
    stderr = float(batch_means.std() / math.sqrt(20))
    exact = exact_energy_per_spin(40, 40, CRITICAL_TEMPERATURE)
    assert abs(float(energies.mean()) - exact) < 4 * stderr
    assert stderr < 0.005  # the test has power: -sqrt 2 (the infinite lattice) lies 3 standard errors away or more
    assert samples.shape == (2000, 1600) and set(samples.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"side": 1}, "side must be an int >= 2"), ({"temperature": 0.0}, "temperature must be a finite number > 0"),
     ({"num_samples": 0}, "num_samples must be an int >= 1"), ({"thin": 0}, "thin must be an int >= 1")],
)  # fmt: skip
def test_bad_sampler_arguments(kwargs, message):
    arguments = {"side": 4, "temperature": 2.0, "num_samples": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        swendsen_wang(arguments.pop("side"), arguments.pop("temperature"), arguments.pop("num_samples"), **arguments)
