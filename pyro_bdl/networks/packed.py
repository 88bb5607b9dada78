"""Export a trained :class:`BinaryNetMLP` to packed weights that run in the packed domain.

Each batch norm folds into a per-unit scale and shift (``s = gamma / sqrt(var + eps)``,
``t = beta - mean * s``). Every hidden layer then runs as one
``xnor_gemm(words, W, k, scale=s, bias=t, pack_output=True)``: it reads sign words and
writes sign words. The last layer writes the folded class scores as float32.

The first layer takes real inputs. For 8-bit images (uint8 pixels ``p``, mapped to
``low + (high - low) * p / 255`` as in training) it is one
:func:`~triton_kernels.pixel_gemm` with the exact integer ``p . w`` and the folded
``s * (low * sum_k w_k + (high - low) / 255 * p . w) + t`` and sign packing in its epilogue:
the fused Triton kernel on a GPU, BinaryNet's bit-plane identity on the CPU XNOR path
(``first_layer`` picks the method: ``"auto"``, ``"fused"`` or ``"bitplane"``). Above
``BITPLANE_MAX_ROWS`` rows, and for float inputs, the first layer multiplies the real input
with the signs unpacked on the fly instead.

The exporter takes each layer's packed weight words from the layer
(:meth:`~pyro_bdl.layers.BinaryLinear.packed_weight`, cached in eval mode) instead of packing
the latent weights again.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pyro_bdl.kernels import num_words, pack_signs, pixel_gemm, unpack_signs, xnor_gemm
from pyro_bdl.layers.binary import BinaryLinear
from pyro_bdl.networks.binarynet import BinaryNetMLP
from pyro_bdl.validation import check_choice

BITPLANE_MAX_ROWS = 64  # above this, 8 binary products cost more than one float product
FIRST_LAYER_ROUTES = ("auto", "fused", "bitplane")


def fold_batch_norm(norm: _BatchNorm, layer_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (features,) float32, with ``norm(y + bias) == y * scale + shift`` in eval mode.

    ``norm`` is any batch norm (1d or 2d); ``scale`` and ``shift`` act on its channel dimension.
    """
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("batch norm must track running statistics to be folded (track_running_stats=True)")
    scale = torch.rsqrt(norm.running_var.float() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.float()
    shift = -norm.running_mean.float() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.float()
    if layer_bias is not None:
        shift = shift + layer_bias.float() * scale
    return scale.detach(), shift.detach()


class PackedBinaryMLP(nn.Module):
    """Inference-only BinaryNet MLP on packed sign weights (see the module docstring).

    Shapes: x (batch, in_features), uint8 pixels or real values -> scores (batch, classes)
    float32. Buffers: per layer ``words_i`` (out, ceil(in / 32)) int32, ``scale_i`` and
    ``shift_i`` (out,) float32; ``first_row_sums`` (hidden,) int32.

    ``first_layer`` is the :func:`pixel_gemm` method for uint8 pixels up to ``BITPLANE_MAX_ROWS``
    rows: ``"fused"`` (one Triton launch; CUDA only), ``"bitplane"`` (8 XNOR products in one
    GEMM) or ``"auto"`` (fused on CUDA, bit planes on the CPU, where the XNOR path is faster).
    """

    def __init__(
        self,
        layers: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]],
        input_range=(-1.0, 1.0),
        first_layer: str = "auto",
    ):
        super().__init__()
        self.first_layer = check_choice("first_layer", first_layer, FIRST_LAYER_ROUTES)
        self.depth = len(layers)
        self.in_features = layers[0][1]
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.widths = [layers[0][1]] + [words.shape[0] for words, *_ in layers]
        for index, (words, k, scale, shift) in enumerate(layers):
            if words.shape[1] != num_words(k):
                raise ValueError(f"layer {index}: {words.shape[1]} words cannot hold k={k} signs")
            self.register_buffer(f"words_{index}", words)
            self.register_buffer(f"scale_{index}", scale)
            self.register_buffer(f"shift_{index}", shift)
        first_signs = unpack_signs(layers[0][0], self.in_features, dtype=torch.int32)
        self.register_buffer("first_row_sums", first_signs.sum(dim=1, dtype=torch.int32))
        self.register_buffer("pixel_scale", torch.empty(0), persistent=False)
        self.register_buffer("pixel_shift", torch.empty(0), persistent=False)
        self._fold_pixel_affine()
        self.register_load_state_dict_post_hook(lambda module, _: module._fold_pixel_affine())

    def _fold_pixel_affine(self) -> None:
        """The fused first layer's epilogue, ``s * (high - low) / 255`` and ``t + s * low * sum_k w_k``."""
        low, high = self.input_range
        scale, shift = self.scale_0.float(), self.shift_0.float()
        self.pixel_scale = scale * ((high - low) / 255.0)
        self.pixel_shift = shift + scale * (low * self.first_row_sums.float())

    def _pixel_first_layer(self, x: torch.Tensor) -> bool:
        return x.dtype == torch.uint8 and x.shape[0] <= BITPLANE_MAX_ROWS

    def _layer(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        k = self.widths[index]
        return getattr(self, f"words_{index}"), k, getattr(self, f"scale_{index}"), getattr(self, f"shift_{index}")

    def _first_products(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, in_features) real or uint8 -> (batch, hidden) float32, a float product with the signs."""
        words, k, _, _ = self._layer(0)
        if x.dtype == torch.uint8:
            low, high = self.input_range
            x = x.float() * ((high - low) / 255.0) + low
        return x.float() @ unpack_signs(words, k, dtype=torch.float32).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be (batch, {self.in_features}), got {tuple(x.shape)}")
        words, k, scale, shift = self._layer(0)
        if self._pixel_first_layer(x):
            affine = {"scale": self.pixel_scale, "bias": self.pixel_shift, "method": self.first_layer}
            if self.depth == 1:
                return pixel_gemm(x, words, k, out_dtype=torch.float32, **affine)
            signs = pixel_gemm(x, words, k, pack_output=True, **affine)
        else:
            h = self._first_products(x) * scale + shift
            if self.depth == 1:
                return h
            signs = pack_signs(h, check_nan=False)
        for index in range(1, self.depth - 1):
            words, k, scale, shift = self._layer(index)
            signs = xnor_gemm(signs, words, k, scale=scale, bias=shift, pack_output=True)
        words, k, scale, shift = self._layer(self.depth - 1)
        return xnor_gemm(signs, words, k, scale=scale, bias=shift, out_dtype=torch.float32)


def export_packed_mlp(model: BinaryNetMLP, input_range=(-1.0, 1.0), first_layer: str = "auto") -> PackedBinaryMLP:
    """Pack a trained :class:`BinaryNetMLP`'s weights and fold its batch norms.

    Args:
        model: the trained network (its running batch-norm statistics are used).
        input_range: the real interval that uint8 pixels 0..255 were mapped to in training.
        first_layer: the :func:`pixel_gemm` method for small uint8 batches (see :class:`PackedBinaryMLP`).

    Returns:
        A :class:`PackedBinaryMLP` on the model's device. Its scores match ``model.eval()``
        up to float rounding of the first layer and batch norm.
    """
    layers = []
    for layer, norm in zip(model.layers, model.norms, strict=True):
        if not isinstance(layer, BinaryLinear):
            raise TypeError(f"expected BinaryLinear layers, got {type(layer).__name__}")
        if bool(torch.isnan(layer.weight).any()):
            raise ValueError(f"{layer} has NaN latent weights, which have no sign; cannot export")
        words = layer.packed_weight()  # the layer's own words (cached in eval mode): no repacking
        scale, shift = fold_batch_norm(norm, layer.bias)
        layers.append((words, layer.in_features, scale, shift))
    return PackedBinaryMLP(layers, input_range, first_layer)
