"""S packed binary ConvNets in one batched pass equal the S networks run one by one, bit for bit."""

from __future__ import annotations

import pytest
import torch

from pyro_bdl.bnn import BNNClassifier
from pyro_bdl.layers.bayes_binary import bayesian_binary_layers
from pyro_bdl.models.bayes_binary import BayesBinaryConvNet, BernoulliMeanFieldGuide
from pyro_bdl.networks import export_packed_convnet
from pyro_bdl.networks.packed_ensemble import posterior_mode_convnet, recalibrate_batch_norm
from pyro_bdl.networks.packed_ensemble_convnet import export_packed_ensemble_convnet, stack_packed_convnets

pytestmark = pytest.mark.usefixtures("pyro_state")


@pytest.fixture
def drawn_convnet():
    """A width-5 ConvNet (partial channel words), batch norms of both signs (AND and OR pooling), 3 draws."""
    net = BayesBinaryConvNet(1, 5, 16, 10, image_size=8)
    model = BNNClassifier(net, num_classes=10)
    guide = BernoulliMeanFieldGuide(model)
    x = torch.randint(-4, 5, (6, 1, 8, 8)).float() / 4  # a grid of 1/4: the float first conv is exact
    model(x)  # one training-mode pass fills the batch-norm statistics
    with torch.no_grad():
        for module in net.blocks:
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(torch.randn(module.num_features))
    model.eval()
    layers = [layer for _, layer in bayesian_binary_layers(net)]
    return net, guide.by_layer(guide.sample_weights(3), layers), x


@pytest.mark.parametrize("calibrated", [False, True], ids=["running", "calibrated"])
def test_batched_convnet_equals_separate_networks(drawn_convnet, calibrated):
    net, weights, x = drawn_convnet
    calibration = x if calibrated else None
    ensemble = export_packed_ensemble_convnet(net, weights, calibration=calibration)
    assert bool((ensemble.scale_1 < 0).any()) and bool((ensemble.scale_1 >= 0).any())  # both pools exercised
    logits = ensemble(x)
    assert logits.shape == (3, 6, 10)
    for s in range(3):
        member = posterior_mode_convnet(net, [w[s] for w in weights])
        if calibrated:
            recalibrate_batch_norm(member, x)
        assert torch.equal(logits[s], export_packed_convnet(member)(x))
    torch.testing.assert_close(ensemble.predict_proba(x), logits.softmax(-1).mean(0))


def test_stacking_rejects_other_architectures(drawn_convnet):
    net, weights, _ = drawn_convnet
    small = export_packed_convnet(posterior_mode_convnet(net, [w[0] for w in weights]))
    other = BayesBinaryConvNet(1, 4, 16, 10, image_size=8).eval()
    guide = BernoulliMeanFieldGuide(BNNClassifier(other, num_classes=10))
    layers = [layer for _, layer in bayesian_binary_layers(other)]
    different = export_packed_convnet(posterior_mode_convnet(other, guide.by_layer(guide.mode(), layers)))
    with pytest.raises(ValueError, match=r"members\[1\] has another architecture"):
        stack_packed_convnets([small, different])
    with pytest.raises(TypeError, match="PackedBinaryConvNet"):
        stack_packed_convnets([])
