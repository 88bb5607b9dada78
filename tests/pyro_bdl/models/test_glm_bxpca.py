"""GLM and BXPCA built from the observation models, checked against known answers."""

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from pyro_bdl.models import BXPCAModel, GLMModel

pytestmark = pytest.mark.usefixtures("pyro_state")


def fit(model, guide, steps, lr, *args):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    for _ in range(steps):
        svi.step(*args)


def test_gaussian_glm_posterior_matches_the_closed_form():
    """Known noise and Gaussian priors: the posterior of (w, b) is Gaussian, in closed form."""
    noise, prior, n = 0.5, 1.0, 40
    x = torch.randn(n, 2)
    y = x @ torch.tensor([1.5, -0.7]) + 0.3 + noise * torch.randn(n)
    design = torch.cat([x, torch.ones(n, 1)], dim=1)
    precision = design.T @ design / noise**2 + torch.eye(3) / prior**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ design.T @ y / noise**2

    model = GLMModel(2, "gaussian", prior_scale=prior, learn_params=False, observation_params={"scale": noise})
    guide = AutoMultivariateNormal(model)
    fit(model, guide, 3000, 0.02, x, y)
    samples = Predictive(model, guide=guide, num_samples=4000, return_sites=["weight", "bias"])(x)
    draws = torch.cat([samples["weight"].reshape(-1, 2), samples["bias"].reshape(-1, 1)], dim=-1)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(draws.T.cov(), covariance, atol=0.004, rtol=0.2)


def test_logistic_glm_recovers_the_weights():
    x = torch.randn(2000, 3)
    true_w = torch.tensor([2.0, -1.0, 0.5])
    y = torch.bernoulli(torch.sigmoid(x @ true_w - 0.5))
    model = GLMModel(3, "bernoulli_logit")
    guide = AutoNormal(model)
    fit(model, guide, 1500, 0.03, x, y)
    median = guide.median(x, y)
    torch.testing.assert_close(median["weight"], true_w, atol=0.25, rtol=0)
    assert abs(float(median["bias"]) + 0.5) < 0.2


def test_categorical_glm_shapes_and_prior_samples():
    model = GLMModel(4, "categorical", num_classes=5)
    x = torch.randn(7, 4)
    y = model(x)
    assert y.shape == (7,) and int(y.max()) < 5
    assert model.linear_predictor(x).shape == (7, 5)


def test_glm_errors():
    with pytest.raises(ValueError, match="num_classes"):
        GLMModel(3, "categorical")
    with pytest.raises(ValueError, match="num_classes applies"):
        GLMModel(3, "poisson_log", num_classes=3)
    with pytest.raises(ValueError, match="prior_scale"):
        GLMModel(3, prior_scale=0.0)
    with pytest.raises(ValueError, match=r"x must be \(data, 3\)"):
        GLMModel(3)(torch.randn(5, 4))


def low_rank_binary_table(rows=200, features=20, rank=2):
    z = torch.randn(rows, rank)
    loadings = 2 * torch.randn(rank, features)
    logits = z @ loadings
    return torch.bernoulli(torch.sigmoid(logits)), logits


def test_bxpca_fills_missing_entries_nearly_as_well_as_the_true_model():
    table, logits = low_rank_binary_table()
    observed = torch.rand(table.shape) > 0.1
    with_holes = table.masked_fill(~observed, float("nan"))  # missing values are never read
    model = BXPCAModel(20, 2, "bernoulli_logit")
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(600):
        svi.step(with_holes, obs_mask=observed)
    posterior = guide.median(with_holes, obs_mask=observed)
    eta = (posterior["z"] @ posterior["loadings"]).squeeze(-2) + posterior["offset"]
    accuracy = ((eta > 0).float() == table)[~observed].float().mean()
    oracle = ((logits > 0).float() == table)[~observed].float().mean()
    assert accuracy > 0.7 and accuracy > oracle - 0.05


def test_bxpca_masked_entries_do_not_change_the_log_joint():
    table, _ = low_rank_binary_table(rows=30, features=6)
    observed = torch.rand(table.shape) > 0.3
    model = BXPCAModel(6, 2, "bernoulli_logit")
    trace = pyro.poutine.trace(model).get_trace(table, obs_mask=observed)
    flipped = torch.where(observed, table, 1 - table)
    replay = pyro.poutine.trace(pyro.poutine.replay(model, trace=trace)).get_trace(flipped, obs_mask=observed)
    assert float(trace.nodes["obs"]["fn"].log_prob(trace.nodes["obs"]["value"]).mul(observed).sum()) == pytest.approx(
        float(replay.log_prob_sum()) - float(replay.log_prob_sum(lambda name, site: name != "obs"))
    )


def test_bxpca_samples_and_errors():
    model = BXPCAModel(5, 2, "poisson_log")
    assert model(num_data=8).shape == (8, 5)
    with pytest.raises(ValueError, match="num_data"):
        model()
    with pytest.raises(ValueError, match=r"x must have shape \(rows, 5\)"):
        model(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="categorical"):
        BXPCAModel(5, 2, "categorical")
    with pytest.raises(ValueError, match="obs_mask"):
        model(torch.zeros(3, 5), obs_mask=torch.ones(3, 4, dtype=torch.bool))
