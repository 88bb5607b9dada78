"""BinaryNet's MLP and ConvNet, and the square hinge loss.

The MLP's hidden products run on the XNOR kernel in evaluation (and in training without
hidden dropout); with hidden dropout in training they run as float products of the
dropped-out signs (``forward_real``). Both are checked against a float forward written
out by hand. Two tiny training runs show that the pieces learn: the ConvNet's loss falls
on a synthetic batch, and the MLP separates a linearly separable problem.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyro_bdl.layers.binary as binary_module
from pyro_bdl.layers import BinaryConv2d, BinaryLinear, attach_weight_clipping, binary_sign, sign_ste
from pyro_bdl.networks import BinaryNetMLP, binarynet_convnet, square_hinge_loss
from tests.triton_kernels.helpers import generator, random_values


@pytest.fixture(autouse=True)
def seeded():
    """Layers initialise from torch's global generator: fix it, whatever ran before."""
    torch.manual_seed(0)


def count_xnor_calls(monkeypatch) -> list:
    """Record the reduction length k of every xnor_gemm the binary layers run."""
    calls = []
    original = binary_module.xnor_gemm

    def spy(a, b, k, **options):
        calls.append(k)
        return original(a, b, k, **options)

    monkeypatch.setattr(binary_module, "xnor_gemm", spy)
    return calls


def with_running_stats(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> nn.Module:
    """Random batch-norm affine parameters and running statistics from a few training passes."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.weight.copy_(random_values(module.weight.shape, gen) + 1.5)
                module.bias.copy_(random_values(module.bias.shape, gen))
        model.train()
        for _ in range(3):
            model(x + random_values(x.shape, gen) * 0.1)
    return model


def mlp_reference(model: BinaryNetMLP, x: torch.Tensor) -> torch.Tensor:
    """Evaluation forward by hand: float products of +-1 operands, batch norm on running stats."""
    layers, norms = list(model.layers), list(model.norms)
    h = norms[0](F.linear(x, binary_sign(layers[0].weight)))
    for layer, norm in zip(layers[1:], norms[1:], strict=True):
        h = norm(F.linear(binary_sign(h), binary_sign(layer.weight)))
    return h


# --- BinaryNetMLP ------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_mlp_output_shape(training):
    model = BinaryNetMLP(in_features=20, hidden=64, depth=2, classes=3).train(training)
    scores = model(random_values((8, 20), generator(0)))
    assert scores.shape == (8, 3) and scores.dtype == torch.float32
    assert [layer.binarize_input for layer in model.layers] == [False, True, True]


def test_mlp_rejects_zero_depth():
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        BinaryNetMLP(depth=0)


def test_mlp_eval_runs_hidden_layers_on_xnor_kernel(monkeypatch):
    gen = generator(1)
    model = BinaryNetMLP(in_features=50, hidden=70, depth=3, classes=10)
    x = random_values((16, 50), gen)
    with_running_stats(model, x, gen).eval()
    calls = count_xnor_calls(monkeypatch)
    with torch.no_grad():
        scores = model(x)
        expected = mlp_reference(model, x)
    assert calls == [70, 70, 70]  # every layer after the first, each reducing over 70 hidden units
    torch.testing.assert_close(scores, expected)
    assert torch.equal(scores.argmax(1), expected.argmax(1))


def test_mlp_training_with_hidden_dropout_uses_float_products(monkeypatch):
    gen = generator(2)
    model = BinaryNetMLP(in_features=30, hidden=40, depth=2, classes=4, dropout_in=0.2, dropout_hidden=0.5)
    x = random_values((12, 30), gen)
    calls = count_xnor_calls(monkeypatch)
    torch.manual_seed(0)
    scores = model(x)
    assert calls == [], "a dropped activation is 0, which the XNOR kernel cannot hold"

    torch.manual_seed(0)  # the same dropout masks, drawn in the same order
    h = model.norms[0](model.layers[0].forward_real(model.dropout_in(x)))
    for layer, norm in zip(model.layers[1:], model.norms[1:], strict=True):
        h = norm(F.linear(model.dropout_hidden(sign_ste(h)), binary_sign(layer.weight)))
    torch.testing.assert_close(scores, h)


def test_mlp_training_without_hidden_dropout_uses_xnor_kernel(monkeypatch):
    model = BinaryNetMLP(in_features=30, hidden=40, depth=2, classes=4, dropout_in=0.0, dropout_hidden=0.0)
    calls = count_xnor_calls(monkeypatch)
    model(random_values((12, 30), generator(3))).sum().backward()
    assert calls == [40, 40]
    assert all(param.grad is not None for param in model.parameters())


# --- square hinge loss -------------------------------------------------------------------


def test_square_hinge_loss_by_hand():
    scores = torch.tensor([[0.5, -2.0, 0.3], [1.5, 0.2, -0.4]])
    labels = torch.tensor([0, 2])
    # targets [[+1, -1, -1], [-1, -1, +1]]; max(0, 1 - t * y):
    margins = [[0.5, 0.0, 1.3], [2.5, 1.2, 1.4]]
    expected = sum(m * m for row in margins for m in row) / 6
    assert square_hinge_loss(scores, labels).item() == pytest.approx(expected)


def test_square_hinge_loss_is_zero_beyond_the_margin():
    scores = torch.tensor([[1.0, -1.0], [-3.0, 2.0]], requires_grad=True)
    loss = square_hinge_loss(scores, torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(scores.grad, torch.zeros(2, 2))


@pytest.mark.parametrize(
    ("scores_shape", "labels_shape"),
    [((4,), (4,)), ((4, 3), (3,)), ((4, 3), (4, 1)), ((2, 4, 3), (2,))],
)
def test_square_hinge_loss_rejects_bad_shapes(scores_shape, labels_shape):
    with pytest.raises(ValueError, match=r"scores must be \(batch, classes\)"):
        square_hinge_loss(torch.randn(scores_shape), torch.zeros(labels_shape, dtype=torch.long))


# --- binarynet_convnet -------------------------------------------------------------------


def test_convnet_architecture_and_gradients():
    gen = generator(4)
    net = binarynet_convnet(in_channels=3, classes=10, width=16, image_size=32, hidden=64)
    convs = [module for module in net if isinstance(module, BinaryConv2d)]
    linears = [module for module in net if isinstance(module, BinaryLinear)]
    assert [conv.out_channels for conv in convs] == [16, 16, 32, 32, 64, 64]
    assert [conv.binarize_input for conv in convs] == [False] + [True] * 5
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(64 * 4 * 4, 64), (64, 64), (64, 10)]
    assert sum(isinstance(module, nn.MaxPool2d) for module in net) == 3

    scores = net(random_values((4, 3, 32, 32), gen))
    assert scores.shape == (4, 10)
    square_hinge_loss(scores, torch.tensor([0, 3, 7, 9])).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    for layer in convs + linears:  # the STE lets signal through to every latent weight
        assert layer.weight.grad.abs().sum() > 0


def test_convnet_eval_shape():
    net = binarynet_convnet(in_channels=1, classes=5, width=8, image_size=16, hidden=32).eval()
    with torch.no_grad():
        assert net(random_values((3, 1, 16, 16), generator(5))).shape == (3, 5)


@pytest.mark.parametrize("image_size", [28, 30, 12])
def test_convnet_rejects_image_size_not_divisible_by_8(image_size):
    with pytest.raises(ValueError, match="divisible by 8"):
        binarynet_convnet(image_size=image_size)


def test_convnet_training_reduces_loss():
    gen = generator(6)
    torch.manual_seed(6)
    net = binarynet_convnet(in_channels=3, classes=2, width=8, image_size=8, hidden=32)
    labels = torch.randint(0, 2, (32,), generator=gen)
    images = random_values((32, 3, 8, 8), gen) + (2.0 * labels - 1).view(-1, 1, 1, 1)  # class shifts the mean
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    attach_weight_clipping(optimizer, net)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = square_hinge_loss(net(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3]), losses


def test_mlp_learns_linearly_separable_problem():
    gen = generator(7)
    torch.manual_seed(7)
    x = random_values((256, 20), gen)
    labels = (x @ random_values((20,), gen) > 0).long()
    model = BinaryNetMLP(in_features=20, hidden=64, depth=2, classes=2, dropout_in=0.0, dropout_hidden=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    attach_weight_clipping(optimizer, model)
    for _ in range(300):
        optimizer.zero_grad()
        square_hinge_loss(model(x), labels).backward()
        optimizer.step()
    assert all(layer.weight.abs().max() <= 1 for layer in model.layers)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95
