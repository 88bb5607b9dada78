"""Training helpers for binarised layers: latent-weight clipping and per-layer learning rates.

BinaryNet (Courbariaux et al. 2016, Algorithm 1) clips the latent real weights to
[-1, 1] after every update, because beyond that range the straight-through gradient is
cancelled and the weight could grow without ever changing its sign.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from pyro_bdl.layers.binary import BinaryConv2d, BinaryLinear, glorot_lr_scale
from pyro_bdl.validation import check_positive

BINARY_LAYERS = (BinaryLinear, BinaryConv2d)


def binary_layers(model: nn.Module) -> Iterator[BinaryLinear | BinaryConv2d]:
    """Every binarised layer in ``model`` (itself included), in module order."""
    for module in model.modules():
        if isinstance(module, BINARY_LAYERS):
            yield module


@torch.no_grad()
def clip_latent_weights(model: nn.Module, bound: float = 1.0) -> None:
    """Clip the latent weights of every binarised layer in ``model`` to [-bound, bound], in place."""
    check_positive("bound", bound)
    for layer in binary_layers(model):
        layer.weight.clamp_(-bound, bound)


def attach_weight_clipping(optimizer: torch.optim.Optimizer, model: nn.Module, bound: float = 1.0):
    """Clip ``model``'s latent binary weights after every ``optimizer.step()``.

    Works with any torch optimizer (a step post-hook). Returns the hook handle; call
    ``handle.remove()`` to stop clipping.
    """
    clip_latent_weights(model, bound)  # start inside the range, too
    return optimizer.register_step_post_hook(lambda *_: clip_latent_weights(model, bound))


def binarynet_param_groups(model: nn.Module, lr: float) -> list[dict]:
    """Optimizer parameter groups with BinaryNet's per-layer learning-rate scaling.

    Each binarised layer's latent weights get ``lr * glorot_lr_scale(layer)``; all other
    parameters (biases, batch norm) get ``lr``. Pass the result to any optimizer, e.g.
    ``torch.optim.Adam(binarynet_param_groups(model, 3e-3))``; a scheduler that multiplies
    ``lr`` keeps the ratios.
    """
    groups, scaled = [], set()
    for layer in binary_layers(model):
        groups.append({"params": [layer.weight], "lr": lr * glorot_lr_scale(layer)})
        scaled.add(id(layer.weight))
    others = [p for p in model.parameters() if id(p) not in scaled]
    if others:
        groups.append({"params": others, "lr": lr})
    return groups
