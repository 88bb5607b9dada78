"""Local reparameterisation and flipout: same per-example distribution as weight sampling, lower gradient variance."""

from __future__ import annotations

import gc

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO
from pyro.nn import PyroModule, PyroSample
from torch import nn

from pyro_bdl.bnn import (
    BayesianConv2d,
    BayesianLinear,
    BNNRegressor,
    Flipout,
    LocalReparameterization,
    MAPGuide,
    MeanFieldGuide,
    bayesianize,
    flipout,
    local_reparameterization,
)

pytestmark = pytest.mark.usefixtures("pyro_state")

METHODS = {"plain": None, "local": LocalReparameterization, "flipout": Flipout}
DRAWS = 20_000


def _normal_guide(shapes: dict[str, tuple[int, ...]]):
    """A hand-written mean-field guide with fixed, distinct means and scales; returns (guide, params)."""
    params = {}
    for i, (name, shape) in enumerate(shapes.items()):
        generator = torch.Generator().manual_seed(i)
        params[name] = (torch.randn(shape, generator=generator), 0.2 + torch.rand(shape, generator=generator))

    def guide(x):
        for name, (loc, scale) in params.items():
            pyro.sample(name, dist.Normal(loc, scale).to_event(len(loc.shape)))

    return guide, params


def _draw(model, guide, method, x, draws=DRAWS):
    """``draws`` vectorised outputs of ``model(x)`` with weights from ``guide``, under ``method``."""
    if METHODS[method] is not None:
        model, guide = METHODS[method]().wrap(model, guide)
    plate = pyro.plate("draws", draws, dim=-2)
    guide_trace = poutine.trace(plate(guide)).get_trace(x)
    with torch.no_grad():
        return poutine.replay(plate(model), trace=guide_trace)(x)


def _hand_written_layer() -> PyroModule:
    layer = PyroModule[nn.Linear](5, 3)
    layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand([3, 5]).to_event(2))
    layer.bias = PyroSample(dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    return layer


@pytest.mark.parametrize(
    ("method", "make_layer"),
    [(method, lambda: BayesianLinear(5, 3)) for method in METHODS]
    # torch's F.linear cannot take a batch of weights, but the estimators intercept it:
    + [("local", _hand_written_layer), ("flipout", _hand_written_layer)],
    ids=["plain", "local", "flipout", "local-PyroModule[nn.Linear]", "flipout-PyroModule[nn.Linear]"],
)
def test_linear_preactivations_have_the_weight_sampling_distribution(method, make_layer):
    x = torch.randn(4, 5)
    x[1] = x[0]  # two identical examples
    guide, params = _normal_guide({"weight": (3, 5), "bias": (3,)})
    out = _draw(make_layer(), guide, method, x)  # (draws, 4, 3)
    (w_loc, w_scale), (b_loc, b_scale) = params["weight"], params["bias"]
    mean = x @ w_loc.T + b_loc
    var = x.square() @ w_scale.square().T + b_scale.square()
    assert out.shape == (DRAWS, 4, 3)
    assert ((out.mean(0) - mean).abs() <= 5 * (var / DRAWS).sqrt()).all()
    assert ((out.var(0) / var - 1).abs() <= 5 * (2 / DRAWS) ** 0.5).all()
    # Plain sampling shares one weight draw across the minibatch; the estimators decorrelate examples.
    covariance = ((out[:, 0] - out[:, 0].mean(0)) * (out[:, 2] - out[:, 2].mean(0))).mean(0)
    shared = (x[0] * x[2]) @ w_scale.square().T + b_scale.square()
    expected = shared if method == "plain" else b_scale.square() if method == "flipout" else torch.zeros(3)
    assert ((covariance - expected).abs() <= 6 * (var[0] * var[2] / DRAWS).sqrt()).all()
    identical = torch.equal(out[:, 0], out[:, 1])
    assert identical == (method == "plain")


@pytest.mark.parametrize("method", list(METHODS))
def test_conv_outputs_have_the_weight_sampling_distribution_jointly_within_an_example(method):
    layer = BayesianConv2d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 5, 5)
    guide, params = _normal_guide({"weight": (3, 2, 3, 3), "bias": (3,)})
    out = _draw(layer, guide, method, x, draws=8000)  # (draws, 2, 3, 5, 5)
    reference = _draw(layer, guide, "plain", x, draws=8000)
    (w_loc, w_scale), (b_loc, b_scale) = params["weight"], params["bias"]
    mean = nn.functional.conv2d(x, w_loc, b_loc, padding=1)
    var = nn.functional.conv2d(x.square(), w_scale.square(), padding=1) + b_scale.square()[:, None, None]
    assert ((out.mean(0) - mean).abs() <= 5 * (var / 8000).sqrt()).all()
    assert ((out.var(0) / var - 1).abs() <= 5 * (2 / 8000) ** 0.5).all()

    # Two neighbouring pixels of one example share kernel weights: their covariance must survive.
    def pixel_covariance(samples):
        a, b = samples[:, 0, :, 2, 2], samples[:, 0, :, 2, 3]
        return ((a - a.mean(0)) * (b - b.mean(0))).mean(0)

    tolerance = 6 * (var[0, :, 2, 2] * var[0, :, 2, 3] / 8000).sqrt() * 2**0.5
    assert ((pixel_covariance(out) - pixel_covariance(reference)).abs() <= tolerance).all()
    assert pixel_covariance(reference).abs().max() > 3 * tolerance.max()  # the check has power


def _gradient_variance(method: str, repeats: int = 20) -> float:
    torch.manual_seed(0)
    x = torch.randn(128, 4)
    y = torch.sin(x.sum(-1))
    net = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))
    model = BNNRegressor(bayesianize(net), noise=0.5)
    guide = MeanFieldGuide(model, init_scale_ratio=0.5)
    guide(x, y)  # set up the parameters
    loc = dict(guide.named_parameters())["locs.net.0.weight_unconstrained"]
    m, g = (model, guide) if METHODS[method] is None else METHODS[method]().wrap(model, guide)
    grads = []
    for _ in range(repeats):
        loss = Trace_ELBO().differentiable_loss(m, g, x, y)
        grads.append(torch.autograd.grad(loss, [loc])[0])
    return torch.stack(grads).var(0).sum().item()


def test_estimators_lower_the_gradient_variance():
    """Variance of d(-ELBO)/d(first layer's weight means) over 20 draws (measured: about 50x and 17x lower)."""
    plain = _gradient_variance("plain")
    assert _gradient_variance("local") < 0.25 * plain
    assert _gradient_variance("flipout") < 0.25 * plain


def test_autonormal_draws_are_recognised_and_map_draws_left_alone():
    net = bayesianize(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)))
    model = BNNRegressor(net, noise=0.1)
    x = torch.randn(1, 3).expand(6, 3).contiguous()  # identical rows
    for guide_cls, differs in ((MeanFieldGuide, True), (MAPGuide, False)):
        pyro.clear_param_store()
        guide = guide_cls(model)
        m, g = local_reparameterization(model, guide)
        guide_trace = poutine.trace(g).get_trace(x)
        loc = poutine.trace(poutine.replay(m, trace=guide_trace)).get_trace(x).nodes["loc"]["value"]
        assert (loc.std() > 1e-4) == differs, guide_cls.__name__


def test_wrapped_pair_works_with_predictive_and_records_do_not_pile_up():
    net = bayesianize(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)))
    model = BNNRegressor(net, noise=0.1)
    guide = MeanFieldGuide(model)
    estimator = Flipout()
    m, g = estimator.wrap(model, guide)
    x = torch.randn(10, 3)
    for parallel in (False, True):
        samples = Predictive(m, guide=g, num_samples=7, parallel=parallel)(x)
        assert samples["obs"].shape == (7, 10)
    del samples  # its weight samples are views of the recorded draws
    for _ in range(5):
        Trace_ELBO().loss(m, g, x, torch.randn(10))
    gc.collect()
    assert len(estimator._records) == 0
    assert callable(flipout(model, guide)[0])
