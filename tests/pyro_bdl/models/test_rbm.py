"""The RBM against brute force on units small enough to enumerate, its Gibbs sampler and its input checks."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats

from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.models import RBM
from pyro_bdl.models.rbm import FACTOR_SITE, RBM_KEY, VISIBLE_KEY, all_states

pytestmark = pytest.mark.usefixtures("pyro_state")


def random_rbm(data_dim: int, hidden_dim: int, scale: float = 1.0, visible: str = "bernoulli", seed: int = 0) -> RBM:
    torch.manual_seed(seed)
    rbm = RBM(data_dim, hidden_dim, visible=visible, init_scale=scale)
    with torch.no_grad():
        rbm.visible_bias.normal_(0, 0.5)
        rbm.hidden_bias.normal_(0, 0.5)
    return rbm.double()


def brute_force_free_energy(rbm: RBM, v: torch.Tensor) -> torch.Tensor:
    h = all_states(rbm.hidden_dim)  # (2^H, H)
    energies = rbm.energy(v.unsqueeze(-2), h)  # (rows, 2^H)
    return -torch.logsumexp(-energies, -1)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_free_energy_sums_the_hidden_units_out(visible):
    rbm = random_rbm(10, 6, visible=visible)
    v = all_states(10)[::7] if visible == "bernoulli" else torch.randn(40, 10, dtype=torch.float64)
    torch.testing.assert_close(rbm.free_energy(v), brute_force_free_energy(rbm, v))


@pytest.mark.parametrize(("data_dim", "hidden_dim"), [(10, 6), (5, 9)])
def test_exact_log_partition_matches_the_sum_over_every_visible_state(data_dim, hidden_dim):
    """Enumerating the hidden side (10, 6) or the visible side (5, 9) gives the brute-force sum."""
    rbm = random_rbm(data_dim, hidden_dim)
    brute = torch.logsumexp(-rbm.free_energy(all_states(data_dim)), 0).detach()
    assert rbm.exact_log_partition(chunk=7) == pytest.approx(float(brute), abs=1e-9)


def test_gaussian_log_partition_matches_quadrature():
    rbm = random_rbm(1, 3, visible="gaussian", scale=0.7)
    grid = torch.linspace(-30, 30, 200001, dtype=torch.float64).unsqueeze(-1)
    quadrature = torch.logsumexp(-rbm.free_energy(grid).detach(), 0) + math.log(float(grid[1] - grid[0]))
    assert rbm.exact_log_partition() == pytest.approx(float(quadrature), abs=1e-6)


def test_gibbs_sampler_leaves_the_exact_distribution_stationary():
    """200,000 chains of 6 visible units after 60 sweeps, against exp(-F(v)) / Z by a chi-square test.

    The threshold is the 1 - 1e-6 quantile of chi2(63): a correct sampler fails once in a million
    runs. The same test against the model with weights 10% larger, a near miss, must fail by far,
    so the tolerance cannot pass a wrong sampler by accident.
    """
    rbm = random_rbm(6, 4, scale=0.8)
    states = all_states(6)
    torch.manual_seed(1)
    samples = rbm.sample(200_000, steps=60)
    index = (samples.long() * (2 ** torch.arange(6))).sum(-1)
    counts = torch.bincount(index, minlength=64).double()
    threshold = stats.chi2.ppf(1 - 1e-6, df=63)

    def chi_square(model: RBM) -> float:
        expected = torch.softmax(-model.free_energy(states).detach(), 0) * counts.sum()
        return float(((counts - expected) ** 2 / expected).sum())

    assert chi_square(rbm) < threshold
    near_miss = random_rbm(6, 4, scale=0.8)
    with torch.no_grad():
        near_miss.weight.mul_(1.1)
    assert chi_square(near_miss) > 3 * threshold


def test_the_model_puts_minus_free_energy_in_the_data_plate():
    rbm = random_rbm(10, 6).float()
    x = torch.bernoulli(torch.full((5, 10), 0.5))
    trace = poutine.trace(rbm).get_trace(x)
    site = trace.nodes[FACTOR_SITE]
    assert [frame.name for frame in site["cond_indep_stack"]] == [DATA_PLATE]
    trace.compute_log_prob()
    torch.testing.assert_close(site["log_prob"], -rbm.free_energy(x))
    assert site["infer"][RBM_KEY] is rbm and site["infer"][VISIBLE_KEY] is x


def test_the_model_samples_rows_without_data():
    rbm = random_rbm(10, 6).float()
    x = rbm(num_data=7)
    assert x.shape == (7, 10) and set(x.unique().tolist()) <= {0.0, 1.0}


def test_monitors_have_one_value_per_row():
    rbm = random_rbm(10, 6).float()
    x = torch.bernoulli(torch.full((5, 10), 0.5))
    assert rbm.pseudo_log_likelihood(x).shape == (5,) and bool((rbm.pseudo_log_likelihood(x) <= 0).all())
    assert rbm.reconstruction_error(x).shape == (5,)
    log_z = rbm.exact_log_partition()
    torch.testing.assert_close(rbm.log_likelihood(x, log_z), -rbm.free_energy(x) - log_z)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda rbm: rbm(torch.full((3, 10), 0.5)), "x must hold only 0 and 1 for a binary RBM"),
        (lambda rbm: rbm(torch.ones(3, 9)), r"x must have shape \(rows, 10\), got \(3, 9\)"),
        (lambda rbm: rbm(torch.ones(3, 10), obs_mask=torch.zeros(3, 10, dtype=torch.bool)), "obs_mask must be all"),
        (lambda rbm: rbm.gibbs(torch.ones(3, 10), 0), "steps must be an int >= 1, got 0"),
        (lambda rbm: RBM(10, 0), "hidden_dim must be an int >= 1, got 0"),
        (lambda rbm: RBM(10, 3, visible="poisson"), "visible must be one of 'bernoulli', 'gaussian'; got 'poisson'"),
        (lambda rbm: RBM(10, 3, visible="gaussian").pseudo_log_likelihood(torch.ones(2, 10)), "binary visible"),
        (lambda rbm: RBM(40, 30).exact_log_partition(), "at most 2\\^24 states, got 30 hidden"),
    ],
)
def test_bad_input_gives_a_one_line_error(call, message):
    rbm = RBM(10, 4)
    with pytest.raises(ValueError, match=message):
        call(rbm)


def test_pyro_param_store_holds_the_parameters_under_svi():
    rbm = RBM(10, 4)
    pyro.clear_param_store()
    poutine.trace(rbm).get_trace(torch.ones(2, 10))
    assert {"rbm.weight", "rbm.visible_bias", "rbm.hidden_bias"} <= set(pyro.get_param_store().keys())


def test_the_binary_value_pass_follows_pyros_validation_flag():
    """Shapes are always checked; the pass over the values only while Pyro's validation is on (fit loops
    check their rows once and train with it off)."""
    rbm = RBM(10, 4)
    with pyro.validation_enabled(False):
        rbm(torch.full((3, 10), 0.5))
        with pytest.raises(ValueError, match="x must have shape"):
            rbm(torch.ones(3, 9))
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="x must hold only 0 and 1"):
        rbm(torch.full((3, 10), 0.5))
