"""Priors: log densities against hand computation, shapes, moments, bad arguments."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from torch import nn

from pyro_bdl.bnn import BNNClassifier, GaussianPrior, MeanFieldGuide, ScaleMixturePrior, bayesianize

pytestmark = pytest.mark.usefixtures("pyro_state")


def _normal_log_pdf(w: float, sigma: float) -> float:
    return -0.5 * math.log(2 * math.pi) - math.log(sigma) - w * w / (2 * sigma * sigma)


def test_gaussian_log_prob_by_hand():
    prior = GaussianPrior(scale=2.0, loc=0.5).distribution((2, 3))
    w = torch.tensor([[0.0, 1.0, -2.0], [3.0, 0.5, -0.1]])
    expected = sum(_normal_log_pdf(v - 0.5, 2.0) for v in w.flatten().tolist())
    assert prior.batch_shape == () and prior.event_shape == (2, 3)
    assert prior.log_prob(w).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("pi", "sigma1", "sigma2"), [(0.5, 1.0, math.exp(-6)), (0.25, math.exp(-1), math.exp(-7))])
def test_scale_mixture_log_prob_by_hand(pi, sigma1, sigma2):
    """Blundell et al. 2015, eq. 7: log(pi N(w; 0, s1^2) + (1 - pi) N(w; 0, s2^2)), summed over weights."""
    w = torch.tensor([[0.0, 1e-3, -0.02], [0.7, -1.5, 3.0]], dtype=torch.float64)
    prior = ScaleMixturePrior(pi, sigma1, sigma2).distribution(w.shape, dtype=torch.float64)
    expected = sum(
        math.log(pi * math.exp(_normal_log_pdf(v, sigma1)) + (1 - pi) * math.exp(_normal_log_pdf(v, sigma2)))
        for v in w.flatten().tolist()
    )
    assert prior.event_shape == w.shape
    assert prior.log_prob(w).item() == pytest.approx(expected, rel=1e-10)


def test_scale_mixture_is_heavier_at_zero_and_in_the_tails_than_a_gaussian_of_equal_variance():
    pi, s1, s2 = 0.5, 1.0, math.exp(-6)
    mixture = ScaleMixturePrior(pi, s1, s2).distribution(())
    gaussian = GaussianPrior(math.sqrt(pi * s1**2 + (1 - pi) * s2**2)).distribution(())
    for w in (0.0, 3.0):
        assert mixture.log_prob(torch.tensor(w)) > gaussian.log_prob(torch.tensor(w))


def test_scale_mixture_samples_have_the_mixture_variance():
    pi, s1, s2 = 0.25, 2.0, 0.1
    samples = ScaleMixturePrior(pi, s1, s2).distribution((200_000,)).sample()
    variance = pi * s1**2 + (1 - pi) * s2**2
    # the variance of the sample variance is E[w^4] - var^2, with E[w^4] = 3 sum_k pi_k s_k^4
    se = math.sqrt((3 * (pi * s1**4 + (1 - pi) * s2**4) - variance**2) / samples.numel())
    assert samples.shape == (200_000,)
    assert abs(samples.square().mean().item() - variance) < 5 * se
    # P(|w| < 3 s2) = (1 - pi) P(|z| < 3) + pi P(|z| < 3 s2 / s1), z standard normal
    expected = (1 - pi) * math.erf(3 / math.sqrt(2)) + pi * math.erf(3 * s2 / s1 / math.sqrt(2))
    near_zero = (samples.abs() < 3 * s2).float().mean().item()
    assert near_zero == pytest.approx(expected, abs=5 * math.sqrt(expected * (1 - expected) / samples.numel()))


def test_priors_follow_dtype_and_device():
    d = ScaleMixturePrior().distribution((4,), dtype=torch.float64, device="cpu")
    assert d.sample().dtype == torch.float64
    assert GaussianPrior().distribution((4,), dtype=torch.float64).sample().dtype == torch.float64


def test_scale_mixture_prior_is_supported_on_the_real_line_so_autoguides_accept_it():
    """torch's mixture support has no bijection; ours says ``real``, so a mean-field guide can train on it."""
    model = BNNClassifier(bayesianize(nn.Sequential(nn.Linear(2, 3)), prior=ScaleMixturePrior()))
    guide = MeanFieldGuide(model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    assert math.isfinite(svi.step(x, y))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GaussianPrior(scale=0.0), "scale must be a finite number > 0"),
        (lambda: GaussianPrior(scale=float("nan")), "scale must be a finite number > 0"),
        (lambda: GaussianPrior(loc=float("inf")), "loc must be finite"),
        (lambda: ScaleMixturePrior(pi=1.0), "pi must lie strictly between 0 and 1"),
        (lambda: ScaleMixturePrior(sigma2=-1.0), "sigma2 must be a finite number > 0"),
    ],
)
def test_bad_prior_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
