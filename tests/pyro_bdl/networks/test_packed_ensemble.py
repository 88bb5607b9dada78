"""The packed S-sample predictive of a Bayesian binary MLP and the posterior-mode exports."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, TraceMeanField_ELBO

from pyro_bdl.bnn import BNNClassifier
from pyro_bdl.layers.bayes_binary import bayesian_binary_layers
from pyro_bdl.models.bayes_binary import BayesBinaryConvNet, BayesBinaryMLP, BernoulliMeanFieldGuide
from pyro_bdl.networks import export_packed_convnet, export_packed_mlp
from pyro_bdl.networks.packed_ensemble import (
    export_packed_ensemble,
    posterior_mode_convnet,
    posterior_mode_mlp,
    recalibrate_batch_norm,
)

pytestmark = pytest.mark.usefixtures("pyro_state")


def quarter_inputs(n: int, features: int) -> torch.Tensor:
    """Inputs on a grid of 1/4: every float product with +-1 weights is exact, so results can be compared bitwise."""
    return torch.randint(-4, 5, (n, features)).float() / 4


@pytest.fixture
def trained_mlp():
    net = BayesBinaryMLP(20, 40, 2, 3)
    model = BNNClassifier(net, num_classes=3)
    guide = BernoulliMeanFieldGuide(model)
    x, y = quarter_inputs(64, 20), torch.randint(0, 3, (64,))
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), TraceMeanField_ELBO())
    for _ in range(5):
        svi.step(x, y)
    return model.eval(), guide, x


def test_batched_predictive_equals_separate_passes(trained_mlp):
    model, guide, x = trained_mlp
    net = model.net
    weights = guide.by_layer(guide.sample_weights(5), net.layers)
    ensemble = export_packed_ensemble(net, weights)
    logits = ensemble(x)
    assert logits.shape == (5, 64, 3)
    for s in range(5):  # the same network, exported on its own and run alone
        single = export_packed_mlp(posterior_mode_mlp(net, [w[s] for w in weights]))
        assert torch.equal(logits[s], single(x))


def test_batched_predictive_matches_pyro_predictive(trained_mlp):
    model, guide, x = trained_mlp
    draws = guide.sample_weights(4)
    ensemble = export_packed_ensemble(model.net, guide.by_layer(draws, model.net.layers))
    with torch.no_grad():
        reference = Predictive(model, posterior_samples=draws, parallel=True, return_sites=("logits",))(x)["logits"]
    torch.testing.assert_close(ensemble(x), reference, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ensemble.predict_proba(x), reference.softmax(-1).mean(0), atol=1e-5, rtol=1e-5)


def test_per_sample_calibration_equals_recalibrated_separate_networks(trained_mlp):
    model, guide, x = trained_mlp
    net = model.net
    weights = guide.by_layer(guide.sample_weights(3), net.layers)
    ensemble = export_packed_ensemble(net, weights, calibration=x)
    assert ensemble.scale_1.shape == (3, 40)
    for s in range(3):
        single = recalibrate_batch_norm(posterior_mode_mlp(net, [w[s] for w in weights]), x)
        torch.testing.assert_close(ensemble(x)[s], single(x), atol=1e-4, rtol=1e-4)


def test_posterior_mode_mlp_is_the_model_at_the_mode(trained_mlp):
    model, guide, x = trained_mlp
    mode = posterior_mode_mlp(model.net, guide.by_layer(guide.mode(), model.net.layers))
    trace = poutine.trace(poutine.condition(model, data=guide.mode())).get_trace(x)
    torch.testing.assert_close(mode(x), trace.nodes["logits"]["value"].detach())
    torch.testing.assert_close(export_packed_mlp(mode)(x), mode(x), atol=1e-4, rtol=1e-5)


def test_posterior_mode_convnet_exports_to_the_packed_convnet():
    net = BayesBinaryConvNet(1, 4, 16, 10, image_size=8)
    model = BNNClassifier(net, num_classes=10)
    guide = BernoulliMeanFieldGuide(model)
    x = torch.randn(6, 1, 8, 8)
    model(x)  # one training-mode pass fills the batch-norm statistics
    model.eval()
    layers = [layer for _, layer in bayesian_binary_layers(net)]
    mode = posterior_mode_convnet(net, guide.by_layer(guide.mode(), layers))
    trace = poutine.trace(poutine.condition(model, data=guide.mode())).get_trace(x)
    torch.testing.assert_close(mode(x), trace.nodes["logits"]["value"].detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(export_packed_convnet(mode)(x), mode(x), atol=1e-4, rtol=1e-5)


def test_convnet_parallel_predictive_has_sample_dims():
    net = BayesBinaryConvNet(1, 4, 16, 10, image_size=8)
    model = BNNClassifier(net, num_classes=10).eval()
    guide = BernoulliMeanFieldGuide(model)
    logits = Predictive(model, guide=guide, num_samples=3, parallel=True, return_sites=("logits",))(
        torch.randn(5, 1, 8, 8)
    )["logits"]
    assert logits.shape == (3, 5, 10)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda net, w: export_packed_ensemble(net, w[:1]), "one"),
        (lambda net, w: export_packed_ensemble(net, [w[0] * 0.5, *w[1:]]), "only -1 and"),
        (lambda net, w: export_packed_ensemble(net, [w[0][:, :3], *w[1:]]), "shape"),
        (lambda net, w: export_packed_ensemble(net, [w[0], w[1][:2], w[2]]), "samples"),
        (lambda net, w: posterior_mode_mlp(net, [v[0] for v in w][:2]), "one"),
        (lambda net, w: export_packed_ensemble(torch.nn.Linear(2, 2), w), "BayesBinaryMLP"),
    ],
)
def test_bad_exports_give_one_line_errors(trained_mlp, call, match):
    model, guide, _ = trained_mlp
    weights = guide.by_layer(guide.sample_weights(3), model.net.layers)
    with pytest.raises((ValueError, TypeError), match=match) as error:
        call(model.net, weights)
    assert "\n" not in str(error.value)


def test_ensemble_rejects_bad_inputs(trained_mlp):
    model, guide, _ = trained_mlp
    ensemble = export_packed_ensemble(model.net, guide.by_layer(guide.sample_weights(2), model.net.layers))
    with pytest.raises(ValueError, match="x must be"):
        ensemble(torch.zeros(3, 19))
    with pytest.raises(ValueError, match="uint8 pixels or a float"):
        ensemble(torch.zeros(3, 20, dtype=torch.int64))
    strict = export_packed_ensemble(model.net, guide.by_layer(guide.sample_weights(2), model.net.layers),
                                    first_layer="bitplane")  # fmt: skip
    with pytest.raises(ValueError, match="first_layer='bitplane' needs x as uint8 pixels") as error:
        strict(torch.zeros(3, 20))  # never quantised silently
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="first_layer"):
        export_packed_ensemble(model.net, guide.by_layer(guide.sample_weights(2), model.net.layers), first_layer="x")


def pixels(n: int, features: int) -> torch.Tensor:
    values = torch.randint(0, 256, (n, features), dtype=torch.uint8)
    values[:, :5] = 0
    return values


@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_pixel_route_equals_separate_pixel_networks(trained_mlp, monkeypatch, samples, backend):
    """uint8 pixels: the S-network pass (one compiled call, or pixel_gemm + batched products
    without numba) equals each network exported alone and run on the same pixels, bit for bit."""
    monkeypatch.setenv("TRITON_KERNELS_CPU_GEMM", backend)
    model, guide, _ = trained_mlp
    net = model.net
    weights = guide.by_layer(guide.sample_weights(samples), net.layers)
    x = pixels(7, 20)
    logits = export_packed_ensemble(net, weights)(x)
    assert logits.shape == (samples, 7, 3)
    for s in range(samples):
        single = export_packed_mlp(posterior_mode_mlp(net, [w[s] for w in weights]), first_layer="bitplane")
        assert torch.equal(logits[s], single(x))


def test_pixel_route_equals_float_route(trained_mlp):
    """Pixels standing for themselves (input_range (0, 255)): every float product is an exact
    integer, so the bit planes and the float product give identical logits; BinaryNet's
    (-1, 1) agrees up to the rounding of the first fold."""
    model, guide, _ = trained_mlp
    weights = guide.by_layer(guide.sample_weights(4), model.net.layers)
    x = pixels(9, 20)
    exact = export_packed_ensemble(model.net, weights, input_range=(0.0, 255.0))
    assert torch.equal(exact(x), exact(x.float()))
    pm1 = export_packed_ensemble(model.net, weights)
    floats = x.float() / 255 * 2 - 1
    torch.testing.assert_close(pm1(x), pm1(floats), atol=1e-4, rtol=1e-5)
    forced = export_packed_ensemble(model.net, weights, first_layer="float")
    torch.testing.assert_close(forced(x), pm1(floats), atol=1e-5, rtol=1e-6)


def test_pixel_route_survives_state_dict_round_trip(trained_mlp):
    model, guide, _ = trained_mlp
    layers = model.net.layers
    ensemble = export_packed_ensemble(model.net, guide.by_layer(guide.sample_weights(2), layers))
    other = export_packed_ensemble(model.net, guide.by_layer(guide.sample_weights(2), layers))
    x = pixels(3, 20)
    before = other(x)  # builds (and caches) the compiled plan of other's own weights
    other.load_state_dict(ensemble.state_dict())
    assert not torch.equal(before, ensemble(x))  # the two draws differ, so the check below can fail
    assert torch.equal(other(x), ensemble(x))
