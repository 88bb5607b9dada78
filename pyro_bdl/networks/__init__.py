"""Ready-made networks built from pyro_bdl layers (BinaryNet so far)."""

from pyro_bdl.networks.binarynet import BinaryNetMLP, binarynet_convnet, square_hinge_loss
from pyro_bdl.networks.packed import PackedBinaryMLP, export_packed_mlp, fold_batch_norm

__all__ = [
    "BinaryNetMLP",
    "PackedBinaryMLP",
    "binarynet_convnet",
    "export_packed_mlp",
    "fold_batch_norm",
    "square_hinge_loss",
]
