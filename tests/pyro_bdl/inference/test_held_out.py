"""held_out_scores: the test ELBO and IW log-likelihood of a model whose evidence is known exactly."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.inference.held_out import held_out_scores


def gaussian_model(x: torch.Tensor) -> None:
    """z_n ~ N(0, 1), x_n | z_n ~ N(z_n 1, I): x_n ~ N(0, I + 1 1^T)."""
    with pyro.plate(DATA_PLATE, x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample(OBS_SITE, dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)


def exact_guide(x: torch.Tensor) -> None:
    """The exact posterior: z_n | x_n ~ N(sum(x_n) / (D + 1), 1 / (D + 1))."""
    precision = x.shape[-1] + 1.0
    with pyro.plate(DATA_PLATE, x.shape[0]):
        pyro.sample("z", dist.Normal(x.sum(-1) / precision, precision**-0.5))


def test_with_the_exact_posterior_elbo_and_iw_bound_equal_the_evidence():
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    covariance = torch.eye(3) + torch.ones(3, 3)
    evidence = dist.MultivariateNormal(torch.zeros(3), covariance).log_prob(x)
    scores = held_out_scores(gaussian_model, exact_guide, x, iw_samples=5, elbo_samples=2, particle_chunk=2,
                             data_chunk=3, progress=False)  # fmt: skip
    assert scores["test_images"] == 7 and scores["iw_samples"] == 5
    assert scores["test_elbo"] == pytest.approx(evidence.mean().item(), abs=1e-4)
    assert scores["test_iw_log_likelihood"] == pytest.approx(evidence.mean().item(), abs=1e-4)
    assert scores["test_nll"] == -scores["test_iw_log_likelihood"]
    assert scores["test_nll_standard_error"] == pytest.approx(evidence.std().item() / math.sqrt(7), rel=1e-3)
    assert scores["seconds"] > 0


@pytest.mark.parametrize(
    ("images", "options", "message"),
    [
        (torch.zeros(2, 3), {"iw_samples": 0}, "iw_samples"),
        (torch.zeros(2, 3), {"data_chunk": 0}, "data_chunk"),
        (torch.zeros(3), {}, "images must be a non-empty"),
        (torch.zeros(0, 3), {}, "images must be a non-empty"),
    ],
)
def test_bad_arguments_are_named(images, options, message):
    settings = {"iw_samples": 2, "elbo_samples": 1, "particle_chunk": 2, "data_chunk": 2, "progress": False} | options
    with pytest.raises(ValueError, match=message):
        held_out_scores(gaussian_model, exact_guide, images, **settings)
