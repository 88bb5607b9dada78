"""Convolutions and max pooling on packed signs: patch words (im2col on words) and pooling on bits.

A binary feature map in the packed domain is ``(B, H, W, G, CWg)`` int32: for each pixel and
each of ``G`` channel groups, the group's ``Cg`` channel signs packed in ``CWg = ceil(Cg / 32)``
words (:func:`triton_kernels.pack_signs` on the channels-last map). A binary convolution is
then one :func:`triton_kernels.xnor_gemm` per group between

* the input's **patch words** (:func:`conv_patch_words`): for every output pixel, the words of
  its ``kh * kw`` taps side by side, tap-major, ``(B, OH, OW, G, kh * kw * CWg)``; padding
  pixels are words of 0, i.e. +1 signs (BinaryNet pads the binarised input with +1), and
* the weights packed the same way (:func:`conv_weight_words`), ``(G, O / G, kh * kw * CWg)``.

Each tap carries ``32 * CWg - Cg`` padding bits that are 0 in both operands, so they agree:
the product over the ``32 * CWg * kh * kw`` bits of a patch row exceeds the convolution by
exactly that many per tap (:func:`patch_bits` gives both numbers).

Max pooling followed by a sign and a folded batch norm ``y = s * c + t`` stays in the packed
domain (:func:`pool_packed_signs`): with ``s >= 0``, ``sign(s * max(c) + t)`` is +1 iff some
pixel of the window gives +1, so a set bit (-1) survives only if set in every pixel (AND);
with ``s < 0`` the maximum becomes a minimum and the AND an OR. Float rounding is monotone,
so this equals pooling the real values first.

These are gathers and bitwise reductions: one torch implementation runs on every device. The
``*_reference`` twins state the same results through unpacked +-1 values and
``torch.nn.functional`` (slow, the specification the tests use).

=====================  ==================================  ==================================
function               input                               output
=====================  ==================================  ==================================
``conv_patch_words``   (B, H, W, G, CWg) int32              (B, OH, OW, G, kh * kw * CWg)
``conv_weight_words``  weight (O, Cg, kh, kw) real          (G, O / G, kh * kw * CWg) int32
``pool_packed_signs``  (B, H, W, CW) int32, (CW,) int32     (B, H // win, W // win, CW)
=====================  ==================================  ==================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from triton_kernels._checks import check_pair, check_words_tensor
from triton_kernels.pack import num_words, pack_signs, unpack_signs_reference

Pair = int | tuple[int, int]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis (``nn.Conv2d``'s formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_conv_input_size(height: int, width: int, kernel: Pair, padding: Pair = 0, dilation: Pair = 1) -> None:
    """``ValueError`` naming the sizes when the padded input is smaller than the (dilated) kernel."""
    kh, kw = check_pair("kernel_size", kernel)
    ph, pw = check_pair("padding", padding, minimum=0)
    dh, dw = check_pair("dilation", dilation)
    padded, span = (height + 2 * ph, width + 2 * pw), (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    if padded[0] < span[0] or padded[1] < span[1]:
        raise ValueError(
            f"input of {height} x {width} pixels (padded: {padded[0]} x {padded[1]}) is smaller than the "
            f"kernel_size {kh} x {kw} (dilated: {span[0]} x {span[1]})"
        )


def patch_bits(group_channels: int, taps: int) -> tuple[int, int]:
    """(bits of a patch row, padding bits among them) for ``taps`` taps of ``group_channels`` channels.

    ``xnor_gemm(patches, weights, bits)`` minus the padding count is the convolution's sum.
    """
    words = num_words(group_channels)
    return taps * words * 32, taps * (words * 32 - group_channels)


def conv_patch_words(
    words: torch.Tensor, kernel_size: Pair, stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1
) -> torch.Tensor:
    """Per-pixel sign words (B, H, W, G, CWg) -> the words of every patch, (B, OH, OW, G, kh * kw * CWg).

    Padding pixels are words of 0 (+1 signs). The patch row is tap-major, tap (i, j) holding the
    group's ``CWg`` words of pixel (i * dh, j * dw) of the window, as in :func:`conv_weight_words`.
    """
    check_words_tensor("words", words, dims=5)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        check_pair(name, value, minimum)
        for name, value, minimum in (("kernel_size", kernel_size, 1), ("stride", stride, 1),
                                     ("padding", padding, 0), ("dilation", dilation, 1))
    )  # fmt: skip
    batch, height, width, groups, group_words = words.shape
    check_conv_input_size(height, width, (kh, kw), (ph, pw), (dh, dw))
    out_h, out_w = conv_output_size(height, kh, sh, ph, dh), conv_output_size(width, kw, sw, pw, dw)
    padded = F.pad(words, (0, 0, 0, 0, pw, pw, ph, ph))
    taps = [
        padded[:, i * dh : i * dh + sh * (out_h - 1) + 1 : sh, j * dw : j * dw + sw * (out_w - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    columns = torch.stack(taps, dim=3)  # (B, OH, OW, kh * kw, G, CWg)
    return columns.transpose(3, 4).reshape(batch, out_h, out_w, groups, kh * kw * group_words)


def conv_patch_words_reference(
    words: torch.Tensor, kernel_size: Pair, stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1
) -> torch.Tensor:
    """Specification of :func:`conv_patch_words`: unpack, pad with +1, ``F.unfold``, pack per tap."""
    batch, height, width, groups, group_words = words.shape
    bits = group_words * 32
    kernel, stride = check_pair("kernel_size", kernel_size), check_pair("stride", stride)
    padding, dilation = check_pair("padding", padding, minimum=0), check_pair("dilation", dilation)
    signs = unpack_signs_reference(words, bits, torch.float64)  # (B, H, W, G, bits), padding bits -> +1
    maps = signs.permute(0, 3, 4, 1, 2).reshape(batch, groups * bits, height, width)
    columns = F.unfold(maps - 1.0, kernel, dilation, padding, stride) + 1.0  # zero padding of (s - 1): +1
    out_h = conv_output_size(height, kernel[0], stride[0], padding[0], dilation[0])
    out_w = conv_output_size(width, kernel[1], stride[1], padding[1], dilation[1])
    taps = kernel[0] * kernel[1]
    columns = columns.reshape(batch, groups, bits, taps, out_h, out_w).permute(0, 4, 5, 1, 3, 2)
    return pack_signs(columns.contiguous(), backend="reference").reshape(batch, out_h, out_w, groups, -1)


def conv_weight_words(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """weight (O, Cg, kh, kw) real -> (G, O / G, kh * kw * CWg) int32 sign words, tap-major like the patches."""
    if weight.dim() != 4 or weight.shape[0] % groups:
        raise ValueError(f"weight must be (out_channels, in_channels / groups, kh, kw) with out_channels "
                         f"divisible by groups={groups}, got shape {tuple(weight.shape)}")  # fmt: skip
    out_channels, group_channels, kh, kw = weight.shape
    per_tap = weight.detach().permute(0, 2, 3, 1).reshape(groups, out_channels // groups, kh, kw, group_channels)
    return pack_signs(per_tap, check_nan=False).reshape(groups, out_channels // groups, -1)


def pool_packed_signs(words: torch.Tensor, window: int, and_words: torch.Tensor) -> torch.Tensor:
    """Max pooling, then sign, of ``s * c + t`` from its per-pixel sign words (see the module docstring).

    Args:
        words: (B, H, W, CW) int32 sign words of ``s * c + t`` per pixel.
        window: pooling window and stride (``nn.MaxPool2d(window)``); the remainder rows and
            columns are dropped, as ``nn.MaxPool2d`` does.
        and_words: (CW,) int32, bit set for channels with ``s >= 0`` (pooled by AND), clear
            for ``s < 0`` (pooled by OR).

    Returns:
        (B, H // window, W // window, CW) int32.
    """
    check_words_tensor("words", words, dims=4)
    check_words_tensor("and_words", and_words, dims=1)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    if and_words.shape[0] != words.shape[-1]:
        raise ValueError(f"and_words must have {words.shape[-1]} words (one per channel word), "
                         f"got shape {tuple(and_words.shape)}")  # fmt: skip
    batch, height, width, channel_words = words.shape
    out_h, out_w = height // window, width // window
    tiles = words[:, : out_h * window, : out_w * window]
    tiles = tiles.reshape(batch, out_h, window, out_w, window, channel_words).permute(0, 1, 3, 5, 2, 4)
    tiles = tiles.reshape(batch, out_h, out_w, channel_words, window * window)
    all_set, any_set = tiles[..., 0], tiles[..., 0]
    for index in range(1, window * window):
        all_set = all_set & tiles[..., index]
        any_set = any_set | tiles[..., index]
    return (all_set & and_words) | (any_set & ~and_words)


def pool_packed_signs_reference(words: torch.Tensor, window: int, and_words: torch.Tensor) -> torch.Tensor:
    """Specification of :func:`pool_packed_signs`: unpack, max-pool the signs (min where OR), pack."""
    bits = words.shape[-1] * 32
    signs = unpack_signs_reference(words, bits, torch.float64).permute(0, 3, 1, 2)  # (B, bits, H, W)
    by_and = unpack_signs_reference(and_words, bits, torch.float64) < 0  # channels pooled by AND
    pooled_max = F.max_pool2d(signs, window)  # +1 if any pixel is +1: AND of the set bits
    pooled_min = -F.max_pool2d(-signs, window)  # -1 if any pixel is -1: OR of the set bits
    pooled = torch.where(by_and.view(1, -1, 1, 1), pooled_max, pooled_min)
    return pack_signs(pooled.permute(0, 2, 3, 1).contiguous(), backend="reference")
