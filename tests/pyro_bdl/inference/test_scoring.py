"""Importance weights, ELBO and IW log-likelihood against closed-form Gaussian answers."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal, init_to_value

from pyro_bdl.inference import (
    elbo_per_datum,
    importance_log_likelihood,
    joint_log_importance_weights,
    log_importance_weights,
    trace_layout,
)

pytestmark = pytest.mark.usefixtures("pyro_state")

ROOT_HALF = math.sqrt(0.5)


# --- y_n ~ N(z_n, 1), z_n ~ N(0, 1): p(y_n) = N(0, 2), p(z_n | y_n) = N(y_n / 2, 1/2) -----------------


def scalar_model(y: torch.Tensor) -> None:
    with pyro.plate("data", y.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=y)


def exact_guide(y: torch.Tensor) -> None:
    with pyro.plate("data", y.shape[0]):
        pyro.sample("z", dist.Normal(y / 2, ROOT_HALF))


SHIFT, WIDTH = 0.7, 1.3


def shifted_guide(y: torch.Tensor) -> None:
    """A worse guide: N(y/2 + SHIFT, WIDTH)."""
    with pyro.plate("data", y.shape[0]):
        pyro.sample("z", dist.Normal(y / 2 + SHIFT, WIDTH))


def scalar_evidence(y: torch.Tensor) -> torch.Tensor:
    return dist.Normal(torch.zeros((), dtype=y.dtype), math.sqrt(2.0)).log_prob(y)


def shifted_elbo(y: torch.Tensor) -> torch.Tensor:
    """log p(y) - KL(N(y/2 + SHIFT, WIDTH) || N(y/2, sqrt(1/2))), the exact ELBO of shifted_guide."""
    q = dist.Normal(y / 2 + SHIFT, torch.full_like(y, WIDTH))
    posterior = dist.Normal(y / 2, torch.full_like(y, ROOT_HALF))
    return scalar_evidence(y) - torch.distributions.kl_divergence(q, posterior)


@pytest.fixture
def y() -> torch.Tensor:
    return 2.0 * torch.randn(11, dtype=torch.float64)


@pytest.mark.parametrize("num_samples", [1, 7, 250])
def test_exact_posterior_gives_constant_weights(y, num_samples):
    weights = log_importance_weights(scalar_model, exact_guide, y, num_samples=num_samples, particle_chunk=100)
    assert weights.shape == (num_samples, y.shape[0])
    assert weights.dtype == torch.float64
    torch.testing.assert_close(weights, scalar_evidence(y).expand(num_samples, -1), atol=1e-12, rtol=0)
    for score in (importance_log_likelihood, elbo_per_datum):
        result = score(scalar_model, exact_guide, y, num_samples=num_samples, particle_chunk=3)
        torch.testing.assert_close(result, scalar_evidence(y), atol=1e-12, rtol=0)


def test_worse_guide_elbo_matches_closed_form_and_iw_tightens(y):
    elbo = elbo_per_datum(scalar_model, shifted_guide, y, num_samples=20_000, particle_chunk=5000)
    # per-datum MC standard error here is below 0.02 nats
    torch.testing.assert_close(elbo, shifted_elbo(y), atol=0.08, rtol=0)
    evidence = scalar_evidence(y)
    assert (shifted_elbo(y) < evidence).all()
    data = 2.0 * torch.randn(400, dtype=torch.float64)
    gaps = [
        (scalar_evidence(data) - importance_log_likelihood(scalar_model, shifted_guide, data, num_samples=k)).mean()
        for k in (1, 10, 100, 1000)
    ]
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3] > -0.01
    assert gaps[3] < 0.05


def test_seeded_runs_repeat_exactly(y):
    pyro.set_rng_seed(3)
    first = log_importance_weights(scalar_model, shifted_guide, y, num_samples=9, particle_chunk=4, data_chunk=5)
    pyro.set_rng_seed(3)
    second = log_importance_weights(scalar_model, shifted_guide, y, num_samples=9, particle_chunk=4, data_chunk=5)
    assert torch.equal(first, second)


@pytest.mark.parametrize(("particle_chunk", "data_chunk"), [(1, 1), (4, None), (100, 3), (7, 11), (5, 100)])
def test_chunking_exact_guide_is_exact(y, particle_chunk, data_chunk):
    weights = log_importance_weights(
        scalar_model, exact_guide, y, num_samples=13, particle_chunk=particle_chunk, data_chunk=data_chunk
    )
    torch.testing.assert_close(weights, scalar_evidence(y).expand(13, -1), atol=1e-12, rtol=0)


def test_chunking_worse_guide_agrees_statistically(y):
    kwargs = {"num_samples": 6000}
    whole = elbo_per_datum(scalar_model, shifted_guide, y, particle_chunk=6000, **kwargs)
    chunked = elbo_per_datum(scalar_model, shifted_guide, y, particle_chunk=700, data_chunk=4, **kwargs)
    # MC standard error of one ELBO_n at S=6000 is 0.032 nats; tolerances are about 4.5 standard errors
    torch.testing.assert_close(whole, chunked, atol=0.2, rtol=0)
    torch.testing.assert_close(chunked, shifted_elbo(y), atol=0.15, rtol=0)
    weights = log_importance_weights(scalar_model, shifted_guide, y, particle_chunk=700, data_chunk=4, **kwargs)
    torch.testing.assert_close(weights.mean(0), shifted_elbo(y), atol=0.15, rtol=0)  # columns stay with their datum
    iw_whole = importance_log_likelihood(scalar_model, shifted_guide, y, particle_chunk=6000, **kwargs)
    iw_chunked = importance_log_likelihood(scalar_model, shifted_guide, y, particle_chunk=700, data_chunk=4, **kwargs)
    torch.testing.assert_close(iw_whole, scalar_evidence(y), atol=0.05, rtol=0)  # SE 0.011
    torch.testing.assert_close(iw_chunked, scalar_evidence(y), atol=0.05, rtol=0)


def test_elbo_matches_pyro_trace_elbo(y):
    """Summed over data, our ELBO estimates what Trace_ELBO's loss estimates (negated)."""
    ours = elbo_per_datum(scalar_model, shifted_guide, y, num_samples=4000).sum()
    pyros = -Trace_ELBO(num_particles=4000, vectorize_particles=True).loss(scalar_model, shifted_guide, y)
    # standard error of each sum: 0.13 nats
    assert abs(ours.item() - pyros) < 0.8
    assert abs(ours.item() - shifted_elbo(y).sum().item()) < 0.6


# --- two latent sites, 2-D data: u_n = (z1_n, z2_n) ~ N(0, I_3), y_n ~ N(W u_n, s^2 I_2) -----------------

W = torch.tensor([[1.0, -0.5, 0.8], [0.3, 1.2, -0.4]], dtype=torch.float64)
NOISE = 0.6


def two_site_model(y: torch.Tensor) -> None:
    with pyro.plate("data", y.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(torch.zeros(2, dtype=y.dtype), 1.0).to_event(1))
        z2 = pyro.sample("z2", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
        mean = z1 @ W[:, :2].T + z2.unsqueeze(-1) * W[:, 2]
        pyro.sample("obs", dist.Normal(mean, NOISE).to_event(1), obs=y)


def two_site_posterior(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    precision = torch.eye(3, dtype=y.dtype) + W.T @ W / NOISE**2
    covariance = torch.linalg.inv(precision)
    return y @ (covariance @ W.T / NOISE**2).T, covariance  # (N, 3), (3, 3)


def two_site_exact_guide(y: torch.Tensor) -> None:
    """The exact posterior, factored as q(z1 | y) q(z2 | z1, y)."""
    mean, cov = two_site_posterior(y)
    gain = cov[2, :2] @ torch.linalg.inv(cov[:2, :2])  # (2,)
    conditional_var = cov[2, 2] - gain @ cov[:2, 2]
    with pyro.plate("data", y.shape[0]):
        z1 = pyro.sample("z1", dist.MultivariateNormal(mean[:, :2], covariance_matrix=cov[:2, :2]))
        conditional_mean = mean[:, 2] + ((z1 - mean[:, :2]) * gain).sum(-1)
        pyro.sample("z2", dist.Normal(conditional_mean, conditional_var.sqrt()))


def test_two_site_model_exact_posterior():
    y = torch.randn(9, 2, dtype=torch.float64) * 1.5
    marginal = dist.MultivariateNormal(torch.zeros(2, dtype=y.dtype), W @ W.T + NOISE**2 * torch.eye(2, dtype=y.dtype))
    weights = log_importance_weights(two_site_model, two_site_exact_guide, y, num_samples=20, particle_chunk=6)
    torch.testing.assert_close(weights, marginal.log_prob(y).expand(20, -1), atol=1e-10, rtol=0)
    layout = trace_layout(two_site_model, two_site_exact_guide, y)
    assert (layout.max_plate_nesting, layout.data_dim, layout.num_data) == (1, -1, 9)
    assert layout.is_local


# --- data plate at dim -2 with a feature plate inside: y_nd ~ N(z_n, 1) ----------------------------------


def feature_model(y: torch.Tensor) -> None:
    with pyro.plate("rows", y.shape[0], dim=-2):
        z = pyro.sample("z", dist.Normal(torch.zeros((1,), dtype=y.dtype), 1.0))  # (rows, 1)
        with pyro.plate("features", y.shape[1], dim=-1):
            pyro.sample("obs", dist.Normal(z, 1.0), obs=y)


def feature_exact_guide(y: torch.Tensor) -> None:
    features = y.shape[1]
    with pyro.plate("rows", y.shape[0], dim=-2):
        pyro.sample("z", dist.Normal(y.sum(-1, keepdim=True) / (features + 1), (1.0 / (features + 1)) ** 0.5))


def test_data_plate_at_other_dim_with_inner_plate():
    y = torch.randn(6, 4, dtype=torch.float64)
    cov = torch.eye(4, dtype=y.dtype) + torch.ones(4, 4, dtype=y.dtype)
    evidence = dist.MultivariateNormal(torch.zeros(4, dtype=y.dtype), cov).log_prob(y)
    weights = log_importance_weights(
        feature_model, feature_exact_guide, y, num_samples=5, data_plate="rows", particle_chunk=2, data_chunk=4
    )
    torch.testing.assert_close(weights, evidence.expand(5, -1), atol=1e-10, rtol=0)
    layout = trace_layout(feature_model, feature_exact_guide, y, data_plate="rows")
    assert (layout.max_plate_nesting, layout.data_dim, layout.num_data) == (2, -2, 6)


# --- global latent: mu ~ N(0, s0), y_n ~ N(mu, s) -------------------------------------------------------

PRIOR_SCALE, LIKELIHOOD_SCALE = 2.0, 0.8


def global_model(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), PRIOR_SCALE))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, LIKELIHOOD_SCALE), obs=y)


def global_posterior(y: torch.Tensor) -> tuple[torch.Tensor, float]:
    precision = 1 / PRIOR_SCALE**2 + y.shape[0] / LIKELIHOOD_SCALE**2
    return y.sum() / LIKELIHOOD_SCALE**2 / precision, precision**-0.5


def global_exact_guide(y: torch.Tensor) -> None:
    loc, scale = global_posterior(y)
    pyro.sample("mu", dist.Normal(loc, scale))


def global_loose_guide(y: torch.Tensor) -> None:
    loc, scale = global_posterior(y)
    pyro.sample("mu", dist.Normal(loc + scale, 2 * scale))


def global_evidence(y: torch.Tensor) -> torch.Tensor:
    n = y.shape[0]
    cov = LIKELIHOOD_SCALE**2 * torch.eye(n, dtype=y.dtype) + PRIOR_SCALE**2 * torch.ones(n, n, dtype=y.dtype)
    return dist.MultivariateNormal(torch.zeros(n, dtype=y.dtype), cov).log_prob(y)


def test_joint_weights_global_latent():
    y = 1.5 + torch.randn(25, dtype=torch.float64)
    weights = joint_log_importance_weights(global_model, global_exact_guide, y, num_samples=30, particle_chunk=8)
    assert weights.shape == (30,)
    torch.testing.assert_close(weights, global_evidence(y).expand(30), atol=1e-9, rtol=0)
    loose = joint_log_importance_weights(global_model, global_loose_guide, y, num_samples=20_000, particle_chunk=5000)
    assert (loose.mean() < global_evidence(y)).item()
    estimate = loose.logsumexp(0) - math.log(loose.shape[0])
    assert abs(estimate.item() - global_evidence(y).item()) < 0.03
    layout = trace_layout(global_model, global_exact_guide, y)
    assert layout.outside_data_plate == ("mu",)
    assert not layout.is_local


def test_joint_weights_with_autoguide_auxiliary_sites():
    """AutoNormal samples 'mu_unconstrained' (auxiliary) and then 'mu' as a Delta; both count in log q."""
    y = 1.5 + torch.randn(25, dtype=torch.float64)
    loc, scale = global_posterior(y)
    guide = AutoNormal(global_model, init_loc_fn=init_to_value(values={"mu": loc}), init_scale=scale)
    weights = joint_log_importance_weights(global_model, guide, y, num_samples=12, particle_chunk=5)
    torch.testing.assert_close(weights, global_evidence(y).expand(12).to(weights.dtype), atol=1e-4, rtol=0)


def test_joint_weights_of_local_model_sum_per_datum_weights(y):
    joint = joint_log_importance_weights(scalar_model, exact_guide, y, num_samples=3)
    torch.testing.assert_close(joint, scalar_evidence(y).sum().expand(3), atol=1e-10, rtol=0)


# --- bad inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, 1.5, True, None])
@pytest.mark.parametrize("name", ["num_samples", "particle_chunk"])
def test_bad_counts(y, name, value):
    kwargs = {"num_samples": 3, name: value}
    with pytest.raises(ValueError, match=name):
        log_importance_weights(scalar_model, exact_guide, y, **kwargs)
    with pytest.raises(ValueError, match=name):
        joint_log_importance_weights(scalar_model, exact_guide, y, **kwargs)


@pytest.mark.parametrize("value", [0, -1, 2.0])
def test_bad_data_chunk(y, value):
    with pytest.raises(ValueError, match="data_chunk"):
        importance_log_likelihood(scalar_model, exact_guide, y, num_samples=3, data_chunk=value)


def test_missing_data_plate(y):
    with pytest.raises(ValueError, match="no plate named 'points'"):
        elbo_per_datum(scalar_model, exact_guide, y, data_plate="points")


def test_global_site_rejected_for_per_datum_weights():
    y = torch.randn(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="site 'mu' is not in the data plate"):
        log_importance_weights(global_model, global_exact_guide, y, num_samples=2)


def test_unmatched_sites(y):
    def no_guide(y):
        pass

    def extra_guide(y):
        exact_guide(y)
        pyro.sample("extra", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="latent site 'z' of the model is not sampled by the guide"):
        log_importance_weights(scalar_model, no_guide, y, num_samples=2)
    with pytest.raises(ValueError, match="guide site 'extra' does not appear in the model"):
        joint_log_importance_weights(scalar_model, extra_guide, y, num_samples=2)


def test_subsampled_data_plate_rejected(y):
    def sub_model(y):
        with pyro.plate("data", y.shape[0], subsample_size=3) as idx:
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=y[idx])

    def sub_guide(y):
        with pyro.plate("data", y.shape[0], subsample_size=3) as idx:
            pyro.sample("z", dist.Normal(y[idx] / 2, ROOT_HALF))

    with pytest.raises(ValueError, match="subsampled"):
        elbo_per_datum(sub_model, sub_guide, y)


def test_data_chunk_needs_a_tensor_with_n_rows():
    def count_model(n):
        with pyro.plate("data", n):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="needs a tensor argument with 6 rows"):
        elbo_per_datum(count_model, count_model, 6, data_chunk=2)
    # without chunking, a model with no data tensor scores fine (prior = guide: weights 0)
    assert torch.equal(elbo_per_datum(count_model, count_model, 6), torch.zeros(6))


def test_no_gradients_and_no_outer_trace_pollution(y):
    loc = pyro.param("loc", torch.tensor(0.3, dtype=torch.float64))

    def param_guide(y):
        with pyro.plate("data", y.shape[0]):
            pyro.sample("z", dist.Normal(y / 2 + pyro.param("loc"), ROOT_HALF))

    weights = log_importance_weights(scalar_model, param_guide, y, num_samples=4)
    assert not weights.requires_grad
    assert loc.grad is None
