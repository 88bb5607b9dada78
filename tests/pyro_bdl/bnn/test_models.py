"""BNN models: sites and plates, Pyro interoperability, toy problems with known answers, MC dropout, bad input."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.nn import PyroModule
from pyro.optim import Adam
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_bdl.bnn import (
    DATA_PLATE,
    OBS_SITE,
    BayesianLinear,
    BNNClassifier,
    BNNRegressor,
    MAPGuide,
    MCDropoutClassifier,
    MCDropoutRegressor,
    MeanFieldGuide,
    bayesianize,
    flipout,
    local_reparameterization,
    run_nuts,
)

pytestmark = pytest.mark.usefixtures("pyro_state")


def _mlp(inputs: int, outputs: int, hidden: int = 16, dropout: float | None = None) -> nn.Module:
    layers = [nn.Linear(inputs, hidden), nn.Tanh()]
    if dropout is not None:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(hidden, outputs))


def _train(model, guide, *data, steps: int, lr: float = 0.02) -> None:
    svi = SVI(model, guide, Adam({"lr": lr}), Trace_ELBO())
    for _ in range(steps):
        svi.step(*data)


@pytest.mark.parametrize(
    ("noise", "outputs", "latent"),
    [
        ("homoscedastic", 1, {"noise_precision"}),
        ("heteroscedastic", 2, set()),
        (0.3, 1, set()),
    ],
)
def test_regressor_sites_and_plates(noise, outputs, latent):
    model = BNNRegressor(bayesianize(_mlp(3, outputs)), noise=noise)
    x, y = torch.randn(7, 3), torch.randn(7)
    trace = poutine.trace(model).get_trace(x, y)
    weights = {f"net.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    sample_sites = {
        name for name, site in trace.nodes.items() if site["type"] == "sample" and not site_is_subsample(site)
    }
    assert sample_sites == weights | latent | {"loc", "noise_scale", OBS_SITE}
    obs = trace.nodes[OBS_SITE]
    assert obs["is_observed"] and torch.equal(obs["value"], y)
    (frame,) = obs["cond_indep_stack"]
    assert (frame.name, frame.dim, frame.size) == (DATA_PLATE, -1, 7)
    assert all(not trace.nodes[name]["cond_indep_stack"] for name in weights | latent)  # global latents
    if isinstance(noise, float):
        torch.testing.assert_close(trace.nodes["noise_scale"]["value"], torch.full((7,), noise))
    trace.compute_log_prob()  # scores without shape errors


@pytest.mark.parametrize("parallel", [False, True])
def test_predictive_samples_the_posterior_predictive(parallel):
    model = BNNRegressor(bayesianize(_mlp(3, 1)), noise="homoscedastic")
    guide = MeanFieldGuide(model)
    x, y = torch.randn(9, 3), torch.randn(9)
    guide(x, y)
    samples = Predictive(model, guide=guide, num_samples=5, parallel=parallel)(x)
    assert samples[OBS_SITE].shape == (5, 9)
    assert samples["loc"].shape == samples["noise_scale"].shape == (5, 9)
    assert samples["net.0.weight"].shape[-2:] == (16, 3)
    assert samples[OBS_SITE].std(0).min() > 0
    prior = Predictive(model, num_samples=4, parallel=parallel)(x)  # prior predictive, no guide
    assert prior[OBS_SITE].shape == (4, 9)


def test_heteroscedastic_regression_learns_noise_that_grows_with_x():
    torch.manual_seed(0)
    x = torch.rand(200, 1) * 2 - 1
    true_scale = 0.05 + 0.45 * (x[:, 0] + 1) / 2  # 0.05 at x = -1 up to 0.5 at x = 1
    y = 0.5 * x[:, 0] + true_scale * torch.randn(200)
    model = BNNRegressor(bayesianize(_mlp(1, 2)), noise="heteroscedastic")
    guide = MeanFieldGuide(model)
    _train(model, guide, x, y, steps=400, lr=0.03)
    grid = torch.tensor([[-0.8], [0.0], [0.8]])
    scale = Predictive(model, guide=guide, num_samples=50, return_sites=["noise_scale"])(grid)["noise_scale"].mean(0)
    expected = 0.05 + 0.45 * (grid[:, 0] + 1) / 2  # 0.095, 0.275, 0.455
    # measured (seeds 0, 1): (0.22, 0.28, 0.47), (0.25, 0.33, 0.44); a constant noise level fails these
    assert scale[0] < scale[1] < scale[2]
    assert scale[2] > 1.5 * scale[0]
    assert ((scale / expected).log().abs() < torch.tensor(3.0).log()).all()


def test_classifier_learns_a_separable_problem():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (150,))
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    x = centres[labels] + 0.4 * torch.randn(150, 2)
    model = BNNClassifier(bayesianize(_mlp(2, 3)), num_classes=3)
    guide = MeanFieldGuide(model)
    _train(model, guide, x, labels, steps=300)
    trace = poutine.trace(model).get_trace(x, labels)
    assert trace.nodes["logits"]["value"].shape == (150, 3)
    logits = Predictive(model, guide=guide, num_samples=20, return_sites=["logits"], parallel=True)(x)["logits"]
    probs = logits.softmax(-1).mean(0)
    assert (probs.argmax(-1) == labels).float().mean() > 0.97
    samples = Predictive(model, guide=guide, num_samples=20)(x)[OBS_SITE]
    assert samples.dtype == torch.long and samples.shape == (20, 150)


@pytest.mark.parametrize("estimator", [None, flipout, local_reparameterization], ids=["plain", "flipout", "local"])
def test_conv_classifier_trains_and_predicts(estimator):
    """A small conv BNN end to end; ``nn.Flatten(-3)`` (not ``nn.Flatten()``) keeps the sample dims apart."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(-3), nn.Linear(4 * 4 * 4, 3))
    model = BNNClassifier(bayesianize(net), num_classes=3)
    guide = MeanFieldGuide(model)
    x, y = torch.randn(12, 1, 6, 6), torch.randint(0, 3, (12,))
    m, g = (model, guide) if estimator is None else estimator(model, guide)
    svi = SVI(m, g, Adam({"lr": 0.01}), Trace_ELBO(num_particles=2, vectorize_particles=True))
    losses = [svi.step(x, y) for _ in range(30)]
    assert all(torch.isfinite(torch.tensor(losses)))
    for parallel in (False, True):
        samples = Predictive(m, guide=g, num_samples=3, parallel=parallel)(x)
        assert samples[OBS_SITE].shape == (3, 12)
        assert samples["logits"].shape == (3, 12, 3)


def test_mc_dropout_predictions_vary_across_samples_even_in_eval_mode():
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 64).unsqueeze(-1)
    y = torch.sin(x[:, 0])
    net = _mlp(1, 1, hidden=64, dropout=0.2)
    model = MCDropoutRegressor(net, noise=0.1, prior_scale=1.0)
    assert [name for name, m in net.named_modules() if isinstance(m, PyroModule)] == []  # net left alone
    guide = MAPGuide(model)
    _train(model, guide, x, y, steps=300)
    model.eval()
    assert not model.net[0].training if hasattr(model.net[0], "training") else True
    assert all(m.training for m in model.modules() if isinstance(m, nn.Dropout))
    samples = Predictive(model, guide=guide, num_samples=30, return_sites=["loc"])(x)["loc"]
    assert samples.std(0).min() > 1e-3  # masks differ from draw to draw; the weights are one point
    assert (samples.mean(0) - y).pow(2).mean().sqrt() < 0.25
    parallel = Predictive(model, guide=guide, num_samples=30, return_sites=["loc"], parallel=True)(x)["loc"]
    assert parallel.std(0).min() > 1e-3
    classifier = MCDropoutClassifier(_mlp(2, 3, dropout=0.5), num_classes=3, prior_scale=0.5)
    assert classifier(torch.randn(4, 2)).shape == (4,)


def test_nuts_runs_on_a_small_network():
    x = torch.linspace(-1, 1, 20).unsqueeze(-1)
    model = BNNRegressor(bayesianize(_mlp(1, 1, hidden=4)), noise=0.1)
    mcmc = run_nuts(model, x, x[:, 0] ** 2, num_samples=10, warmup_steps=10, max_tree_depth=4)
    samples = mcmc.get_samples()
    assert samples["net.0.weight"].shape == (10, 4, 1)
    for parallel in (False, True):
        predictive = Predictive(model, posterior_samples=samples, parallel=parallel)(x)
        assert predictive[OBS_SITE].shape == predictive["loc"].shape == (10, 20)
        # the first draw's network, evaluated by hand
        first = {name: value[0] for name, value in samples.items()}
        torch.testing.assert_close(predictive["loc"][0], poutine.condition(model.net, data=first)(x)[:, 0])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: m(torch.tensor([[float("nan")], [0.0]]), torch.zeros(2)), ValueError, "x must be finite"),
        (lambda m: m(torch.zeros(2, 1), torch.tensor([0.0, float("inf")])), ValueError, "y must be finite"),
        (lambda m: m(torch.zeros(2), torch.zeros(2)), ValueError, "x must have at least 2 dimension"),
        (
            lambda m: m(torch.zeros(2, 1), torch.zeros(2, 1)),
            ValueError,
            r"y must have 1 dimension\(s\), got shape \(2, 1\)",
        ),
        (lambda m: m(torch.zeros(2, 1, dtype=torch.long)), TypeError, "x must be a floating tensor"),
        (lambda m: m(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)), TypeError, "y must be a floating tensor"),
        (lambda m: m(torch.zeros(2, 3)), ValueError, r"input must be \(\.\.\., 1\)"),
    ],
)
def test_regressor_rejects_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call(BNNRegressor(bayesianize(_mlp(1, 1)), noise=0.5))


def test_classifier_rejects_bad_input_and_models_reject_bad_options():
    model = BNNClassifier(bayesianize(_mlp(2, 3)))
    with pytest.raises(TypeError, match="y must be an int64 tensor of labels"):
        model(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
        model(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"map x to \(\.\.\., 4, 5\)"):
        BNNClassifier(bayesianize(_mlp(2, 3)), num_classes=5)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="noise must be one of"):
        BNNRegressor(bayesianize(_mlp(2, 1)), noise="gaussian")
    with pytest.raises(ValueError, match="noise must be one of"):
        BNNRegressor(bayesianize(_mlp(2, 1)), noise=-1.0)
    with pytest.raises(ValueError, match=r"map x to \(\.\.\., 4, 2\) for noise='heteroscedastic'"):
        BNNRegressor(bayesianize(_mlp(2, 1)), noise="heteroscedastic")(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="net must be a PyroModule"):
        BNNRegressor(_mlp(2, 1))
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        BNNClassifier(BayesianLinear(2, 1), num_classes=1)
    with pytest.raises(ValueError, match="MC dropout needs a network with dropout layers"):
        MCDropoutRegressor(_mlp(2, 1))
    with pytest.raises(ValueError, match="noise_precision_prior must be"):
        BNNRegressor(BayesianLinear(2, 1), noise_precision_prior=(0.0, 1.0))
    pyro.clear_param_store()
