"""Bayesian layers and bayesianize: sites, shapes, parity with the deterministic twin, batched weights."""

from __future__ import annotations

import inspect

import pyro
import pytest
import torch
from pyro import poutine
from pyro.nn import PyroModule, PyroSample
from torch import nn

from pyro_bdl import bnn, layers
from pyro_bdl.bnn import bayesianize
from pyro_bdl.layers import (
    BayesianConv1d,
    BayesianConv2d,
    BayesianConv3d,
    BayesianLinear,
    GaussianPrior,
    ScaleMixturePrior,
    bayesian_layers,
    functional,
)

pytestmark = pytest.mark.usefixtures("pyro_state")

TWINS = [(BayesianLinear, nn.Linear), (BayesianConv1d, nn.Conv1d), (BayesianConv2d, nn.Conv2d),
         (BayesianConv3d, nn.Conv3d)]  # fmt: skip


def test_bnn_re_exports_the_layers_of_pyro_bdl_layers():
    """One implementation: ``pyro_bdl.bnn`` hands out the very classes of ``pyro_bdl.layers``."""
    for name in ("BayesianLinear", "BayesianConv1d", "BayesianConv2d", "BayesianConv3d", "GaussianPrior", "Prior",
                 "ScaleMixturePrior", "bayesian_layers"):  # fmt: skip
        assert getattr(bnn, name) is getattr(layers, name), name
        assert getattr(layers, name).__module__.startswith("pyro_bdl.layers."), name


@pytest.mark.parametrize(("bayesian", "torch_cls"), TWINS)
def test_signature_keeps_the_torch_arguments(bayesian, torch_cls):
    ours = inspect.signature(bayesian.__init__).parameters
    theirs = inspect.signature(torch_cls.__init__).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, param in theirs.items():
        assert ours[name].default == param.default, name
    assert ours["prior"].kind is inspect.Parameter.KEYWORD_ONLY


def _at_init(module: nn.Module):
    """Condition every Bayesian weight on its deterministic initial value (zero variance)."""
    data = {}
    for path, layer in bayesian_layers(module):
        for name, value in layer.initial_values().items():
            data[f"{path}.{name}" if path else name] = value
    return poutine.condition(module, data=data)


@pytest.mark.parametrize(
    ("torch_layer", "x_shape"),
    [
        (nn.Linear(5, 3), (7, 5)),
        (nn.Linear(5, 3, bias=False), (2, 7, 5)),
        (nn.Conv1d(2, 4, 3, padding=1), (6, 2, 9)),
        (nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, dilation=2), (5, 3, 8, 7)),
        (nn.Conv2d(4, 6, 3, groups=2, bias=False), (2, 4, 6, 6)),
        (nn.Conv3d(1, 2, 2), (2, 1, 4, 4, 4)),
    ],
)
def test_layer_at_zero_variance_is_its_deterministic_twin(torch_layer, x_shape):
    layer = bayesianize(torch_layer)
    assert type(layer).__name__ == "Bayesian" + type(torch_layer).__name__
    x = torch.randn(x_shape)
    trace = poutine.trace(_at_init(layer)).get_trace(x)
    torch.testing.assert_close(trace.nodes["_RETURN"]["value"], torch_layer(x))
    sites = [name for name, site in trace.nodes.items() if site["type"] == "sample"]
    assert sites == (["weight", "bias"] if torch_layer.bias is not None else ["weight"])


def test_default_initialisation_is_torchs():
    torch.manual_seed(3)
    expected = nn.Linear(20, 10)
    torch.manual_seed(3)
    layer = BayesianLinear(20, 10)
    torch.testing.assert_close(layer.weight_init, expected.weight)
    torch.testing.assert_close(layer.bias_init, expected.bias)
    assert "weight_init" not in layer.state_dict()  # a reference for the guides, not state


def test_sites_carry_the_prior_with_the_whole_tensor_as_event():
    prior = ScaleMixturePrior(0.5, 1.0, 0.01)
    layer = BayesianConv2d(3, 4, 3, prior=prior)
    trace = poutine.trace(layer).get_trace(torch.randn(2, 3, 5, 5))
    weight = trace.nodes["weight"]
    assert weight["fn"].event_shape == (4, 3, 3, 3) and weight["fn"].batch_shape == ()
    expected = prior.distribution((4, 3, 3, 3)).log_prob(weight["value"])
    torch.testing.assert_close(weight["fn"].log_prob(weight["value"]), expected)
    assert trace.nodes["_RETURN"]["value"].shape == (2, 4, 3, 3)


def test_unbatched_conv_input_and_bad_inputs():
    layer = BayesianConv1d(2, 3, 3)
    assert layer(torch.randn(2, 8)).shape == (3, 6)
    with pytest.raises(ValueError, match=r"input must be \(\.\.\., 2, \*\)"):
        layer(torch.randn(4, 5, 8))
    with pytest.raises(ValueError, match=r"input must be \(\.\.\., 5\)"):
        BayesianLinear(5, 2)(torch.randn(3, 4))
    with pytest.raises(ValueError, match="padding_mode must be 'zeros'"):
        BayesianConv2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(TypeError, match=r"prior must be a pyro_bdl\.layers\.Prior"):
        BayesianLinear(2, 2, prior=torch.distributions.Normal(0, 1))


def test_batched_linear_equals_a_loop_over_samples():
    x = torch.randn(2, 7, 5)  # (T, N, in)
    w, b = torch.randn(3, 1, 4, 5), torch.randn(3, 1, 4)  # (S, 1, out, in): S = 3 samples
    out = functional.linear(x.unsqueeze(1), w, b)  # x: (2, 1, 7, 5) broadcasts with S
    assert out.shape == (2, 3, 7, 4)
    for t in range(2):
        for s in range(3):
            torch.testing.assert_close(out[t, s], nn.functional.linear(x[t], w[s, 0], b[s, 0]))
    with pytest.raises(ValueError, match="weights are global"):
        functional.linear(x, torch.randn(3, 7, 4, 5))


@pytest.mark.parametrize("groups", [1, 2])
def test_batched_conv_equals_a_loop_over_samples(groups):
    x = torch.randn(5, 4, 6, 6)  # (N, C, H, W)
    w, b = torch.randn(3, 1, 6, 4 // groups, 3, 3), torch.randn(3, 1, 6)
    out = functional.conv(x, w, b, stride=2, padding=1, groups=groups, spatial_ndim=2)
    assert out.shape == (3, 5, 6, 3, 3)
    for s in range(3):
        expected = nn.functional.conv2d(x, w[s, 0], b[s, 0], stride=2, padding=1, groups=groups)
        torch.testing.assert_close(out[s], expected)


def test_layers_evaluate_every_sample_of_an_outer_plate_at_once():
    net = bayesianize(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)))
    x = torch.randn(10, 3)
    with pyro.plate("samples", 4, dim=-2):
        trace = poutine.trace(net).get_trace(x)
    out = trace.nodes["_RETURN"]["value"]
    assert trace.nodes["0.weight"]["value"].shape == (4, 1, 8, 3)
    assert out.shape == (4, 10, 2)
    for s in range(4):
        one = {name: trace.nodes[name]["value"][s, 0] for name in ("0.weight", "0.bias", "2.weight", "2.bias")}
        torch.testing.assert_close(out[s], poutine.condition(net, data=one)(x))


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 3)
    )  # fmt: skip


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("all", {"0", "3", "5"}),
        ("last", {"5"}),
        (["0", "5"], {"0", "5"}),
        (lambda name, module: isinstance(module, nn.Linear), {"3", "5"}),
    ],
)
def test_bayesianize_selects_layers_and_keeps_shapes(which, expected):
    net = _net()
    bnn = bayesianize(net, prior=GaussianPrior(0.5), which=which)
    assert isinstance(bnn, PyroModule) and not isinstance(net, PyroModule)  # a converted copy
    assert {name for name, _ in bayesian_layers(bnn)} == expected
    for name, layer in bayesian_layers(bnn):
        original = net.get_submodule(name)
        torch.testing.assert_close(layer.weight_init, original.weight)  # starts from the net's own init
        assert layer.prior.scale == 0.5
    x = torch.randn(5, 1, 6, 6)
    trace = poutine.trace(bnn).get_trace(x)
    assert trace.nodes["_RETURN"]["value"].shape == net(x).shape == (5, 3)
    latent = {name for name, site in trace.nodes.items() if site["type"] == "sample"}
    assert latent == {f"{layer}.{p}" for layer in expected for p in ("weight", "bias")}
    params = {name for name, site in trace.nodes.items() if site["type"] == "param"}
    deterministic = {"0", "3", "5"} - expected
    assert params == {f"{layer}.{p}" for layer in deterministic for p in ("weight", "bias")}
    torch.testing.assert_close(_at_init(bnn)(x), net(x))  # at zero variance, the original network


def test_bayesianize_a_single_layer_and_nested_modules():
    assert isinstance(bayesianize(nn.Linear(2, 3)), BayesianLinear)
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), nn.Linear(3, 1))
    bnn = bayesianize(net, which=["0.0"])
    assert [name for name, _ in bayesian_layers(bnn)] == ["0.0"]
    trace = poutine.trace(bnn).get_trace(torch.randn(4, 2))
    assert "0.0.weight" in trace.nodes and trace.nodes["0.0.weight"]["type"] == "sample"


def test_plain_pyro_modules_with_pyro_sample_still_work_in_our_stack():
    """The way Pyro users write BNNs by hand: PyroModule[nn.Linear] with PyroSample (used by the reparam tests)."""
    layer = PyroModule[nn.Linear](3, 2)
    layer.weight = PyroSample(pyro.distributions.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
    assert layer(torch.randn(4, 3)).shape == (4, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"which": "first"}, ValueError, "which must be 'all', 'last'"),
        ({"which": ["0", "nope"]}, ValueError, r"unknown or unsupported layers \['nope'\]"),
        ({"which": ["1"]}, ValueError, r"unknown or unsupported layers \['1'\]"),  # a ReLU
        ({"which": lambda name, module: False}, ValueError, "which selected no layer"),
        ({"which": 3}, TypeError, "which must be a string"),
    ],
)
def test_bayesianize_bad_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        bayesianize(_net(), **kwargs)


def test_bayesianize_bad_networks():
    with pytest.raises(ValueError, match="no layer that can be made Bayesian"):
        bayesianize(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match=r"net must be a torch\.nn\.Module"):
        bayesianize(lambda x: x)
    with pytest.raises(ValueError, match="already contains Bayesian layers"):
        bayesianize(bayesianize(_net()))
