"""MixtureLikelihood_ELBO: the ELBO with each datum's likelihood averaged over K particles before the log.

L_K = E[ sum_i c log (1/K) sum_k p(y_i | x_i, w_k) ] - KL(q || p)      (c: the site's scale)
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyro_bdl.inference import MixtureLikelihood_ELBO, scale_data_plate

pytestmark = pytest.mark.usefixtures("pyro_state")

X = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-1.5, 1.2], [0.1, 0.0], [1.0, 1.0]])
Y = torch.tensor([1.0, 2.5, -1.0, 0.2, 0.7])


def regression(x, y=None, mask=None):
    """Bayesian linear regression: w ~ N(0, I), y_i ~ N(x_i . w, 0.5)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]), poutine.mask(mask=mask if mask is not None else True):
        pyro.sample("obs", dist.Normal(x @ w, 0.5), obs=y)


def guide(x, y=None, mask=None):
    loc = pyro.param("loc", torch.tensor([0.3, -0.2]))
    scale = pyro.param("scale", torch.tensor([0.4, 0.7]), constraint=dist.constraints.positive)
    pyro.sample("w", dist.Normal(loc, scale).to_event(1))


def hand_written(num_particles: int, scale: float = 1.0, mask=None) -> torch.Tensor:
    """-L_K from K guide draws made in the order the loss draws them (guide, then the replayed model)."""
    loc, sd = pyro.param("loc"), pyro.param("scale")
    q = dist.Normal(loc, sd).to_event(1)
    kl = kl_divergence(q, dist.Normal(torch.zeros(2), 1.0).to_event(1))
    log_lik = torch.stack([dist.Normal(X @ q.rsample(), 0.5).log_prob(Y) for _ in range(num_particles)])
    mixture = torch.logsumexp(log_lik, 0) - math.log(num_particles)
    if mask is not None:
        mixture = mixture * mask
    return -(scale * mixture.sum() - kl)


def test_one_particle_is_the_mean_field_elbo():
    pyro.get_param_store().clear()
    guide(X, Y)
    pyro.set_rng_seed(3)
    expected = TraceMeanField_ELBO(num_particles=1).loss(regression, guide, X, Y)
    pyro.set_rng_seed(3)
    assert MixtureLikelihood_ELBO(num_particles=1).loss(regression, guide, X, Y) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("num_particles", [2, 5])
def test_loss_equals_the_per_datum_log_mean_likelihood_minus_kl(num_particles):
    pyro.get_param_store().clear()
    guide(X, Y)
    pyro.set_rng_seed(0)
    loss = MixtureLikelihood_ELBO(num_particles=num_particles).loss(regression, guide, X, Y)
    pyro.set_rng_seed(0)
    assert loss == pytest.approx(hand_written(num_particles).item(), rel=1e-5)


def test_gradients_are_those_of_the_hand_written_bound():
    pyro.get_param_store().clear()
    guide(X, Y)
    params = [pyro.param("loc").unconstrained(), pyro.param("scale").unconstrained()]
    pyro.set_rng_seed(1)
    MixtureLikelihood_ELBO(num_particles=3).loss_and_grads(regression, guide, X, Y)
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    pyro.set_rng_seed(1)
    expected = torch.autograd.grad(hand_written(3), params)
    for got, want in zip(grads, expected, strict=True):
        assert torch.count_nonzero(want) > 0
        torch.testing.assert_close(got, want)


def test_the_bound_is_never_below_the_elbo_of_the_same_particles():
    """Jensen: log of a mean >= mean of the logs, draw by draw."""
    pyro.get_param_store().clear()
    guide(X, Y)
    loss = MixtureLikelihood_ELBO(num_particles=4)
    for seed in range(5):
        pyro.set_rng_seed(seed)
        mixture = loss.loss(regression, guide, X, Y)
        pyro.set_rng_seed(seed)
        elbo = TraceMeanField_ELBO(num_particles=4).loss(regression, guide, X, Y)
        assert mixture <= elbo + 1e-6


def test_minibatch_scale_and_likelihood_weight_multiply_the_mixture():
    pyro.get_param_store().clear()
    guide(X, Y)
    pyro.set_rng_seed(2)
    loss = MixtureLikelihood_ELBO(num_particles=3).loss(scale_data_plate(regression, "data", 7.0), guide, X, Y)
    pyro.set_rng_seed(2)
    assert loss == pytest.approx(hand_written(3, scale=7.0).item(), rel=1e-5)


def test_masked_data_drop_out_of_the_mixture():
    pyro.get_param_store().clear()
    guide(X, Y)
    mask = torch.tensor([True, False, True, True, False])
    pyro.set_rng_seed(4)
    loss = MixtureLikelihood_ELBO(num_particles=2).loss(regression, guide, X, Y, mask)
    pyro.set_rng_seed(4)
    assert loss == pytest.approx(hand_written(2, mask=mask.float()).item(), rel=1e-5)


def test_pixel_dims_are_summed_within_each_datum():
    """A site with an event-like plate inside the data plate: the mixture is over whole data points."""

    def pixels(x, y=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("pixel", 3, dim=-1):
            pyro.sample("obs", dist.Normal((x @ w).unsqueeze(-1), 0.5), obs=y)

    pyro.get_param_store().clear()
    guide(X)
    y = Y.unsqueeze(-1).expand(5, 3)
    pyro.set_rng_seed(5)
    loss = MixtureLikelihood_ELBO(num_particles=2).loss(pixels, guide, X, y)
    pyro.set_rng_seed(5)
    loc, sd = pyro.param("loc"), pyro.param("scale")
    q = dist.Normal(loc, sd).to_event(1)
    kl = kl_divergence(q, dist.Normal(torch.zeros(2), 1.0).to_event(1))
    log_lik = torch.stack([3 * dist.Normal(X @ q.rsample(), 0.5).log_prob(Y) for _ in range(2)])
    expected = -((torch.logsumexp(log_lik, 0) - math.log(2)).sum() - kl)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_particles": 0}, "num_particles"),
        ({"num_particles": 2.0}, "num_particles"),
        ({"vectorize_particles": True}, "vectorize_particles"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixtureLikelihood_ELBO(**kwargs)


def test_a_model_without_the_observed_site_or_its_plate_is_refused():
    pyro.get_param_store().clear()
    guide(X, Y)
    with pytest.raises(ValueError, match="obs_site: the model has no observed site 'y'"):
        MixtureLikelihood_ELBO(obs_site="y").loss(regression, guide, X, Y)
    with pytest.raises(ValueError, match=r"data_plate: .* plate named 'batch'"):
        MixtureLikelihood_ELBO(data_plate="batch").loss(regression, guide, X, Y)
