"""Ready-made networks built from pyro_bdl layers (BinaryNet so far) and their packed exports."""

from pyro_bdl.networks.binarynet import BinaryNetMLP, binarynet_convnet, square_hinge_loss
from pyro_bdl.networks.packed import PackedBinaryMLP, export_packed_mlp, fold_batch_norm
from pyro_bdl.networks.packed_convnet import PackedBinaryConvNet, export_packed_convnet
from pyro_bdl.networks.packed_ensemble import (
    PackedBinaryEnsembleMLP,
    export_packed_ensemble,
    posterior_mode_convnet,
    posterior_mode_mlp,
    recalibrate_batch_norm,
)
from pyro_bdl.networks.packed_ensemble_convnet import (
    PackedBinaryEnsembleConvNet,
    export_packed_ensemble_convnet,
    stack_packed_convnets,
)

__all__ = [
    "BinaryNetMLP",
    "PackedBinaryConvNet",
    "PackedBinaryEnsembleConvNet",
    "PackedBinaryEnsembleMLP",
    "PackedBinaryMLP",
    "binarynet_convnet",
    "export_packed_convnet",
    "export_packed_ensemble",
    "export_packed_ensemble_convnet",
    "export_packed_mlp",
    "fold_batch_norm",
    "posterior_mode_convnet",
    "posterior_mode_mlp",
    "recalibrate_batch_norm",
    "square_hinge_loss",
    "stack_packed_convnets",
]
