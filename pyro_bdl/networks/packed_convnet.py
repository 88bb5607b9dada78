"""Export a trained binary ConvNet (e.g. :func:`binarynet_convnet`) to a chain that runs on packed signs.

The network is read as a sequence of blocks, each ending in a batch norm whose sign the next
binary layer takes:

* ``BinaryConv2d [MaxPool2d] BatchNorm2d``, and after an ``nn.Flatten``,
* ``BinaryLinear BatchNorm1d``; the last block's folded scores are the output.

Between blocks the activations stay sign words: a feature map is ``(B, H, W, ceil(C / 32))``
int32, the channels of each pixel packed in one row of words. A binary convolution gathers
the words of each patch (:func:`triton_kernels.conv_patch_words`, +1 padding as in training)
and runs one ``xnor_gemm(..., scale=s, bias=t, pack_output=True)`` whose output rows are
again per-pixel channel words. Max pooling before a batch norm is done on the packed bits
(:func:`triton_kernels.pool_packed_signs`: AND for ``s >= 0``, OR for ``s < 0``).

The exporter takes each binary layer's packed weight words from the layer
(``packed_weight()``, cached in eval mode). The one exception is the first linear layer
after the flatten: ``nn.Flatten`` orders its inputs channel-major (NCHW) while the packed
feature map is pixel-major, so that layer's signs are packed once more, permuted, at export
(reordering at run time would cost a bit shuffle per call).

The first convolution of BinaryNet takes real pixels (``binarize_input=False``): it runs as
a float convolution with the +-1 weights, is pooled and normalised in float and then packed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pyro_bdl.kernels import conv_patch_words, pack_signs, patch_bits, pool_packed_signs, xnor_gemm
from pyro_bdl.layers.binary import BinaryConv2d, BinaryLinear
from pyro_bdl.networks.packed import fold_batch_norm


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, padding and dilation of a packed convolution, plus the max-pool window (1 = none)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pool: int

    def conv_options(self) -> dict:
        """Stride, padding and dilation as keyword arguments of :func:`conv_patch_words`."""
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}


class PackedBinaryConvNet(nn.Module):
    """Inference-only binary ConvNet on packed sign weights; built by :func:`export_packed_convnet`.

    Shapes: x (batch, in_channels, H, W) real -> scores (batch, classes) float32. Buffers per
    block ``i``: ``words_i`` int32 (out, patch or input words), ``scale_i`` and ``shift_i``
    (out,) float32, and for pooled convolutions ``and_words_i`` (ceil(out / 32),) int32; a real
    first convolution keeps its +-1 weights as ``signs_0`` int8 (out, in, kh, kw).
    """

    def __init__(self, blocks: list[dict], in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.kinds: list[str] = []
        self.geometries: list[ConvGeometry | None] = []
        self.bits: list[int] = []
        for index, block in enumerate(blocks):
            self.kinds.append(block["kind"])
            self.geometries.append(block.get("geometry"))
            self.bits.append(block.get("bits", 0))
            for name in ("words", "signs", "scale", "shift", "and_words"):
                if name in block:
                    self.register_buffer(f"{name}_{index}", block[name])

    def _buffer(self, name: str, index: int) -> torch.Tensor:
        return getattr(self, f"{name}_{index}")

    def _real_conv(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """First block on real input: float conv with +-1 weights, pool, fold, pack per pixel."""
        geometry = self.geometries[index]
        weight = self._buffer("signs", index).to(x.dtype)
        y = F.conv2d(x, weight, None, geometry.stride, geometry.padding, geometry.dilation)
        if geometry.pool > 1:
            y = F.max_pool2d(y, geometry.pool)
        y = y * self._buffer("scale", index).view(1, -1, 1, 1) + self._buffer("shift", index).view(1, -1, 1, 1)
        return pack_signs(y.permute(0, 2, 3, 1).float(), check_nan=False)

    def _binary_product(self, index: int, words: torch.Tensor, **options) -> torch.Tensor:
        """(rows, KW) sign words -> the block's folded ``s * (x . w) + t``, packed or float per ``options``."""
        scale, shift = self._buffer("scale", index), self._buffer("shift", index)
        return xnor_gemm(words, self._buffer("words", index), self.bits[index], scale=scale, bias=shift, **options)

    def _packed_conv(self, index: int, words: torch.Tensor) -> torch.Tensor:
        """(B, H, W, CW) sign words -> (B, H', W', CW') sign words of the next feature map."""
        geometry = self.geometries[index]
        columns = conv_patch_words(words.unsqueeze(3), geometry.kernel, **geometry.conv_options()).squeeze(3)
        batch, out_h, out_w, _ = columns.shape
        out = self._binary_product(index, columns.reshape(batch * out_h * out_w, -1), pack_output=True)
        out = out.reshape(batch, out_h, out_w, -1)
        if geometry.pool > 1:
            out = pool_packed_signs(out, geometry.pool, self._buffer("and_words", index))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (batch, {self.in_channels}, height, width), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a float tensor, got dtype {x.dtype}")
        last = len(self.kinds) - 1
        words = None
        for index, kind in enumerate(self.kinds):
            if kind == "real_conv":
                words = self._real_conv(index, x)
                continue
            if kind == "conv":
                if words is None:  # a binary first layer binarises the input itself
                    words = pack_signs(x.permute(0, 2, 3, 1), check_nan=True)
                words = self._packed_conv(index, words)
                continue
            if words.dim() == 4:  # the flatten: pixel-major words, matched by the permuted weights
                words = words.flatten(1)
            options = {"out_dtype": torch.float32} if index == last else {"pack_output": True}
            words = self._binary_product(index, words, **options)
        return words


def _pool_window(pool: nn.MaxPool2d) -> int:
    """The window of a square, non-overlapping, unpadded max pool; ValueError for any other."""
    kernel = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
    square = (kernel, (kernel, kernel))
    if (pool.kernel_size not in square or pool.stride not in square or pool.padding not in (0, (0, 0))
            or pool.dilation not in (1, (1, 1)) or pool.ceil_mode):  # fmt: skip
        raise ValueError(f"packed export supports square MaxPool2d with stride = kernel and no padding, got {pool}")
    return kernel


def _conv_block(conv: BinaryConv2d, pool: nn.MaxPool2d | None, norm: nn.BatchNorm2d, first: bool) -> dict:
    if conv.groups != 1:
        raise ValueError(f"packed export supports groups=1 convolutions, got groups={conv.groups}")
    window = 1 if pool is None else _pool_window(pool)
    geometry = ConvGeometry(conv.kernel_size, conv.stride, conv.padding, conv.dilation, window)
    scale, shift = fold_batch_norm(norm, conv.bias)
    weight = conv.weight.detach()
    if bool(torch.isnan(weight).any()):
        raise ValueError(f"{conv} has NaN latent weights, which have no sign; cannot export")
    if not conv.binarize_input:
        if not first:
            raise ValueError("only the first convolution may take real inputs (binarize_input=False)")
        signs = torch.where(weight < 0, -1, 1).to(torch.int8)
        return {"kind": "real_conv", "geometry": geometry, "signs": signs, "scale": scale, "shift": shift}
    words = conv.packed_weight()[0]  # (out, kh * kw * CW), the layer's own words
    bits, spare = patch_bits(conv.in_channels, conv.kernel_size[0] * conv.kernel_size[1])  # spare bits: agree
    block = {"kind": "conv", "geometry": geometry, "words": words, "bits": bits,
             "scale": scale, "shift": shift - scale * spare}  # fmt: skip
    if window > 1:
        block["and_words"] = pack_signs(torch.where(scale >= 0, -1.0, 1.0), check_nan=False)
    return block


def _linear_block(linear: BinaryLinear, norm: nn.BatchNorm1d, channels: int | None) -> dict:
    """A linear block; ``channels`` is the feature map's C when this layer follows the flatten."""
    scale, shift = fold_batch_norm(norm, linear.bias)
    weight = linear.weight.detach()
    if bool(torch.isnan(weight).any()):
        raise ValueError(f"{linear} has NaN latent weights, which have no sign; cannot export")
    if channels is None:
        return {"kind": "linear", "words": linear.packed_weight(), "bits": linear.in_features,
                "scale": scale, "shift": shift}  # fmt: skip
    if linear.in_features % channels:
        raise ValueError(f"{linear} follows a flatten of {channels} channels but in_features is not a multiple")
    pixels = linear.in_features // channels
    per_pixel = weight.reshape(-1, channels, pixels).transpose(1, 2)  # (out, P, C): NCHW flatten -> pixel-major
    words = pack_signs(per_pixel, check_nan=True).flatten(1)  # permuted: the layer's words cannot serve
    bits, spare = patch_bits(channels, pixels)
    return {"kind": "linear", "words": words, "bits": bits, "scale": scale, "shift": shift - scale * spare}


def export_packed_convnet(model: nn.Sequential) -> PackedBinaryConvNet:
    """Pack a trained binary ConvNet's weights and fold its batch norms (see the module docstring).

    Args:
        model: an ``nn.Sequential`` of blocks ``BinaryConv2d [MaxPool2d] BatchNorm2d``, one
            ``nn.Flatten``, then ``BinaryLinear BatchNorm1d`` blocks, as
            :func:`~pyro_bdl.networks.binarynet_convnet` builds; its running batch-norm
            statistics are used. Convolutions must have ``groups=1``.

    Returns:
        A :class:`PackedBinaryConvNet` on the model's device whose scores match
        ``model.eval()`` up to the float rounding of the folded batch norms.
    """
    modules = list(model)
    blocks: list[dict] = []
    channels: int | None = None
    flattened = False
    position = 0
    while position < len(modules):
        module = modules[position]
        if isinstance(module, BinaryConv2d) and not flattened:
            pool = modules[position + 1] if position + 1 < len(modules) else None
            pool = pool if isinstance(pool, nn.MaxPool2d) else None
            norm_at = position + (2 if pool is not None else 1)
            norm = modules[norm_at] if norm_at < len(modules) else None
            if not isinstance(norm, nn.BatchNorm2d):
                raise TypeError(f"module {norm_at}: expected BatchNorm2d after {module}, got {type(norm).__name__}")
            blocks.append(_conv_block(module, pool, norm, first=not blocks))
            channels = module.out_channels
            position = norm_at + 1
        elif isinstance(module, nn.Flatten) and not flattened and blocks:
            flattened = True
            position += 1
        elif isinstance(module, BinaryLinear) and flattened:
            norm = modules[position + 1] if position + 1 < len(modules) else None
            if not isinstance(norm, nn.BatchNorm1d):
                got = type(norm).__name__
                raise TypeError(f"module {position + 1}: expected BatchNorm1d after {module}, got {got}")
            if not module.binarize_input:
                raise ValueError("packed export needs binary-input linear layers (binarize_input=True)")
            follows_flatten = blocks[-1]["kind"] != "linear"
            blocks.append(_linear_block(module, norm, channels if follows_flatten else None))
            position += 2
        else:
            raise TypeError(f"module {position} ({type(module).__name__}) does not fit the packed ConvNet pattern")
    if not blocks or blocks[-1]["kind"] != "linear":
        raise ValueError("the network must start with BinaryConv2d blocks and end with BinaryLinear + BatchNorm1d")
    return PackedBinaryConvNet(blocks, modules[0].in_channels)
