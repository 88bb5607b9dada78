"""Layers to build Pyro models and networks from: binarised layers (BinaryNet) so far."""

from pyro_bdl.layers.binary import (
    BinaryConv2d,
    BinaryLinear,
    SignSTE,
    binary_conv2d_reference,
    binary_sign,
    glorot_lr_scale,
    sign_ste,
)
from pyro_bdl.layers.binary_training import (
    attach_weight_clipping,
    binary_layers,
    binarynet_param_groups,
    clip_latent_weights,
)

__all__ = [
    "BinaryConv2d",
    "BinaryLinear",
    "SignSTE",
    "attach_weight_clipping",
    "binary_conv2d_reference",
    "binary_layers",
    "binary_sign",
    "binarynet_param_groups",
    "clip_latent_weights",
    "glorot_lr_scale",
    "sign_ste",
]
