"""Ready-made networks built from pyro_bdl layers (BinaryNet so far) and their packed exports."""

from pyro_bdl.networks.binarynet import BinaryNetMLP, binarynet_convnet, square_hinge_loss
from pyro_bdl.networks.packed import PackedBinaryMLP, export_packed_mlp, fold_batch_norm
from pyro_bdl.networks.packed_convnet import PackedBinaryConvNet, export_packed_convnet

__all__ = [
    "BinaryNetMLP",
    "PackedBinaryConvNet",
    "PackedBinaryMLP",
    "binarynet_convnet",
    "export_packed_convnet",
    "export_packed_mlp",
    "fold_batch_norm",
    "square_hinge_loss",
]
