"""BinaryNet architectures (Courbariaux et al. 2016) and their loss.

* :class:`BinaryNetMLP`: the MNIST MLP, 3 hidden layers of 4096 binary units with batch
  norm, dropout and a 10-way output trained with the square hinge loss (L2-SVM).
* :func:`binarynet_convnet`: the CIFAR-10 ConvNet,
  (2 x 128C3) - MP2 - (2 x 256C3) - MP2 - (2 x 512C3) - MP2 - (2 x 1024FC) - 10.

Every binary layer binarises its input itself, so the sign activation sits inside the
next layer and the batch norm before it stays real (as in the paper, where BN precedes
``binary_tanh``). The first layer takes real inputs with binary weights.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from pyro_bdl.layers.binary import BinaryConv2d, BinaryLinear, sign_ste
from pyro_bdl.validation import check_int


def square_hinge_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BinaryNet's L2-SVM loss: mean over batch and classes of max(0, 1 - t * y)^2.

    Args:
        scores: (batch, classes) real outputs.
        labels: (batch,) class indices; the target t is +1 for the label, -1 elsewhere.
    """
    if scores.dim() != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(
            f"scores must be (batch, classes) and labels (batch,), got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    targets = -torch.ones_like(scores)
    targets.scatter_(1, labels.long().unsqueeze(1), 1.0)
    return torch.clamp(1.0 - targets * scores, min=0.0).square().mean()


class BinaryNetMLP(nn.Module):
    """BinaryNet's MLP: real input -> ``depth`` binary hidden layers -> class scores.

    Each layer is a bias-free binary linear layer followed by batch norm. Dropout is applied to
    the real input and, as in the paper, to the binary activations of the hidden layers. A
    dropped activation is 0, which a sign word cannot hold, so while hidden dropout is active
    in training the hidden products run as float products of the {0, +-2} activations with the
    binary weights. In evaluation, or with ``dropout_hidden=0``, they run on the XNOR kernel.

    Shapes: x (batch, in_features), real (BinaryNet scales pixels to [-1, 1]) ->
    scores (batch, classes).
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: int = 4096,
        depth: int = 3,
        classes: int = 10,
        dropout_in: float = 0.2,
        dropout_hidden: float = 0.5,
        bn_eps: float = 1e-4,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden", hidden), ("depth", depth), ("classes", classes)):
            check_int(name, value)
        widths = [in_features] + [hidden] * depth + [classes]
        self.layers = nn.ModuleList(
            BinaryLinear(fan_in, fan_out, bias=False, binarize_input=index > 0)
            for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths))
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(width, eps=bn_eps, momentum=bn_momentum) for width in widths[1:])
        self.dropout_in = nn.Dropout(dropout_in)
        self.dropout_hidden = nn.Dropout(dropout_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norms[0](self.layers[0](self.dropout_in(x)))
        for layer, norm in zip(self.layers[1:], self.norms[1:], strict=True):
            if self.training and self.dropout_hidden.p > 0:
                h = layer.forward_real(self.dropout_hidden(sign_ste(h)))
            else:
                h = layer(h)
            h = norm(h)
        return h


def binarynet_convnet(
    in_channels: int = 3,
    classes: int = 10,
    width: int = 128,
    image_size: int = 32,
    hidden: int = 1024,
    bn_eps: float = 1e-4,
) -> nn.Sequential:
    """BinaryNet's CIFAR-10 ConvNet, with ``width`` channels in the first block (128 in the paper).

    Shapes: (batch, in_channels, image_size, image_size) -> (batch, classes). ``image_size``
    must be divisible by 8 (three 2x2 max pools).
    """
    for name, value in (("in_channels", in_channels), ("classes", classes), ("width", width), ("hidden", hidden)):
        check_int(name, value)
    if check_int("image_size", image_size) % 8:
        raise ValueError(f"image_size must be divisible by 8 (three 2x2 pools), got {image_size}")
    blocks: list[nn.Module] = []
    channels = in_channels
    for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
        for conv_index in range(2):
            first_layer = stage == 0 and conv_index == 0
            blocks.append(
                BinaryConv2d(channels, out_channels, 3, padding=1, bias=False, binarize_input=not first_layer)
            )
            if conv_index == 1:
                blocks.append(nn.MaxPool2d(2))
            blocks.append(nn.BatchNorm2d(out_channels, eps=bn_eps))
            channels = out_channels
    features = channels * (image_size // 8) ** 2
    blocks += [
        nn.Flatten(),
        BinaryLinear(features, hidden, bias=False),
        nn.BatchNorm1d(hidden, eps=bn_eps),
        BinaryLinear(hidden, hidden, bias=False),
        nn.BatchNorm1d(hidden, eps=bn_eps),
        BinaryLinear(hidden, classes, bias=False),
        nn.BatchNorm1d(classes, eps=bn_eps),
    ]
    return nn.Sequential(*blocks)
