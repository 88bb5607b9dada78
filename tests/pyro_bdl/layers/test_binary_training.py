"""BinaryNet's training helpers: latent-weight clipping and per-layer learning rates.

Clipping touches the latent weights of binary layers only (not their biases, not batch
norm, not ordinary layers), keeps them in [-bound, bound] after every optimizer step
while attached, and stops when the hook is removed. The parameter groups scale each
binary layer's weight learning rate by the inverse Glorot bound and cover every
parameter exactly once.
"""

import math

import pytest
import torch
from torch import nn

from pyro_bdl.layers import (
    BinaryConv2d,
    BinaryLinear,
    attach_weight_clipping,
    binary_layers,
    binarynet_param_groups,
    clip_latent_weights,
    glorot_lr_scale,
)
from tests.triton_kernels.helpers import generator, random_values


@pytest.fixture(autouse=True)
def seeded():
    """Layers initialise from torch's global generator: fix it, whatever ran before."""
    torch.manual_seed(0)


def mixed_model() -> nn.Sequential:
    """Binary and ordinary layers side by side: conv -> BN -> linear (binary) -> BN -> Linear."""
    return nn.Sequential(
        BinaryConv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        BinaryLinear(4 * 5 * 5, 16),
        nn.BatchNorm1d(16),
        nn.Linear(16, 3),
    )


def scale_all_(model: nn.Module, factor: float, gen: torch.Generator) -> None:
    """Every parameter to fresh normal values times ``factor`` (most far outside [-1, 1])."""
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(random_values(param.shape, gen) * factor)


def binary_weights(model: nn.Module) -> list[torch.Tensor]:
    return [layer.weight for layer in binary_layers(model)]


def test_binary_layers_in_module_order():
    model = mixed_model()
    assert list(binary_layers(model)) == [model[0], model[3]]
    layer = BinaryLinear(3, 2)
    assert list(binary_layers(layer)) == [layer]
    assert list(binary_layers(nn.Linear(3, 2))) == []


@pytest.mark.parametrize("bound", [1.0, 0.5])
def test_clip_touches_only_binary_weights(bound):
    model = mixed_model()
    scale_all_(model, 5.0, generator(0))
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    clip_latent_weights(model, bound)
    for name, param in model.named_parameters():
        if name in ("0.weight", "3.weight"):
            assert torch.equal(param, before[name].clamp(-bound, bound))
            assert (param.abs() == bound).any()
        else:  # binary biases, batch norm, the ordinary Linear
            assert torch.equal(param, before[name]), name


@pytest.mark.parametrize("bound", [0.0, -1.0, float("nan")])
def test_clip_rejects_non_positive_bound(bound):
    with pytest.raises(ValueError, match="bound must be a finite number > 0"):
        clip_latent_weights(mixed_model(), bound)
    with pytest.raises(ValueError, match="bound must be a finite number > 0"):
        attach_weight_clipping(torch.optim.SGD(mixed_model().parameters(), lr=0.1), mixed_model(), bound)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, gen: torch.Generator) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(random_values((8, 3, 5, 5), gen)) - random_values((8, 3), gen)).square().mean()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize(
    ("optimizer", "lr"),
    [(torch.optim.SGD, 1.0), (torch.optim.Adam, 5.0)],
    ids=["SGD", "Adam"],
)
def test_attached_clipping_keeps_weights_in_range(optimizer, lr):
    gen = generator(1)
    model = mixed_model()
    with torch.no_grad():
        for weight in binary_weights(model):
            weight.copy_(random_values(weight.shape, gen) * 3)
        model[5].weight.copy_(random_values(model[5].weight.shape, gen) * 3)
    opt = optimizer(model.parameters(), lr=lr)
    unclipped = []  # step post-hooks run in order: this one sees the weights before clipping
    opt.register_step_post_hook(lambda *_: unclipped.append(max(w.abs().max().item() for w in binary_weights(model))))
    handle = attach_weight_clipping(opt, model)
    assert all(weight.abs().max() <= 1 for weight in binary_weights(model)), "attaching clips at once"

    train_steps(model, opt, 3, gen)
    assert min(unclipped) > 1, "each step pushes some latent weights out of [-1, 1]"
    for weight in binary_weights(model):
        assert weight.abs().max() <= 1
    assert model[5].weight.abs().max() > 1, "ordinary layers are not clipped"

    handle.remove()
    train_steps(model, opt, 1, gen)
    assert max(weight.abs().max() for weight in binary_weights(model)) == unclipped[-1] > 1


def test_attached_clipping_with_custom_bound():
    gen = generator(2)
    model = mixed_model()
    opt = torch.optim.Adam(model.parameters(), lr=5.0)
    attach_weight_clipping(opt, model, bound=0.25)
    train_steps(model, opt, 2, gen)
    assert all(weight.abs().max() == 0.25 for weight in binary_weights(model))


def test_glorot_lr_scale_linear():
    assert glorot_lr_scale(BinaryLinear(784, 4096, bias=False)) == pytest.approx(1 / math.sqrt(1.5 / (784 + 4096)))


@pytest.mark.parametrize(
    ("layer", "fan_in", "fan_out"),
    [
        (BinaryConv2d(3, 16, 3), 3 * 9, 16 * 9),
        (BinaryConv2d(8, 6, (3, 2)), 8 * 6, 6 * 6),
        (BinaryConv2d(8, 4, 3, groups=2), 4 * 9, 4 * 9),  # fan-in counts the channels of one group
    ],
    ids=["3x3", "3x2", "grouped"],
)
def test_glorot_lr_scale_conv_includes_receptive_field(layer, fan_in, fan_out):
    assert glorot_lr_scale(layer) == pytest.approx(1 / math.sqrt(1.5 / (fan_in + fan_out)))


def test_param_groups_scale_binary_weights_only():
    lr = 3e-3
    model = nn.Sequential(
        BinaryConv2d(3, 16, 3),
        nn.BatchNorm2d(16),
        BinaryLinear(784, 4096),
        nn.BatchNorm1d(4096),
        nn.Linear(4096, 10),
    )
    groups = binarynet_param_groups(model, lr)

    lr_of = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in lr_of, "a parameter appears twice"
            lr_of[id(param)] = group["lr"]
    assert set(lr_of) == {id(param) for param in model.parameters()}
    for name, param in model.named_parameters():
        layer = model[int(name.split(".")[0])]
        if name.endswith("weight") and isinstance(layer, BinaryLinear | BinaryConv2d):
            assert lr_of[id(param)] == pytest.approx(lr * glorot_lr_scale(layer)), name
        else:
            assert lr_of[id(param)] == lr, name
    assert lr_of[id(model[2].weight)] == pytest.approx(lr / math.sqrt(1.5 / (784 + 4096)))
    torch.optim.Adam(groups)  # a valid optimizer spec: no parameter in two groups


def test_param_groups_without_other_parameters():
    layer = BinaryLinear(10, 4, bias=False)
    groups = binarynet_param_groups(layer, 0.1)
    assert len(groups) == 1
    assert groups[0]["params"] == [layer.weight]
    assert groups[0]["lr"] == pytest.approx(0.1 * glorot_lr_scale(layer))
