"""Packed-domain convolution ops: patch words (im2col on words), weight words and pooling on bits.

Each op must equal its ``*_reference`` twin (unpacked +-1 values through ``torch.nn.functional``)
bit for bit, on awkward geometries (channels not a multiple of 32, groups, stride, padding,
dilation, odd sizes), and the XNOR product of patch and weight words minus the padding bits of
:func:`patch_bits` must be the float convolution with +1 padding.
"""

import pytest
import torch
import torch.nn.functional as F

from tests.triton_kernels.helpers import generator, random_values
from triton_kernels import (
    conv_patch_words,
    conv_patch_words_reference,
    conv_weight_words,
    pack_signs,
    pool_packed_signs,
    pool_packed_signs_reference,
    xnor_gemm,
)
from triton_kernels.pack import num_words
from triton_kernels.packed_conv import check_conv_input_size, conv_output_size, patch_bits

GEOMETRIES = [
    # channels, groups, kernel, stride, padding, dilation, (H, W)
    (3, 1, 3, 1, 1, 1, (5, 5)),
    (37, 1, (3, 2), (2, 1), (1, 0), 1, (7, 6)),
    (40, 2, 3, 2, 2, (2, 1), (6, 9)),
    (64, 1, 1, 1, 0, 1, (4, 3)),
    (5, 1, 2, 3, 0, 2, (8, 8)),
]


def feature_words(channels: int, groups: int, size, gen, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Real feature maps (B, C, H, W) and their per-pixel, per-group sign words (B, H, W, G, CWg)."""
    x = random_values((batch, channels, *size), gen)
    per_pixel = x.permute(0, 2, 3, 1).reshape(batch, *size, groups, channels // groups)
    return x, pack_signs(per_pixel)


@pytest.mark.parametrize(("channels", "groups", "kernel", "stride", "padding", "dilation", "size"), GEOMETRIES)
def test_patch_words_equal_the_reference(channels, groups, kernel, stride, padding, dilation, size):
    _, words = feature_words(channels, groups, size, generator(channels))
    got = conv_patch_words(words, kernel, stride, padding, dilation)
    assert torch.equal(got, conv_patch_words_reference(words, kernel, stride, padding, dilation))


@pytest.mark.parametrize(("channels", "groups", "kernel", "stride", "padding", "dilation", "size"), GEOMETRIES)
def test_patch_product_is_the_conv_with_plus_one_padding(channels, groups, kernel, stride, padding, dilation, size):
    gen = generator(100 + channels)
    x, words = feature_words(channels, groups, size, gen)
    weight = random_values(
        (4 * groups, channels // groups, *((kernel, kernel) if isinstance(kernel, int) else kernel)), gen
    )
    columns = conv_patch_words(words, kernel, stride, padding, dilation)  # (B, OH, OW, G, P)
    weight_words = conv_weight_words(weight, groups)
    bits, spare = patch_bits(channels // groups, weight.shape[2] * weight.shape[3])
    assert columns.shape[-1] * 32 == bits == weight_words.shape[-1] * 32
    out = torch.cat([xnor_gemm(columns[..., g, :], weight_words[g], bits) - spare for g in range(groups)], dim=-1)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    signs = F.pad(torch.where(x < 0, -1.0, 1.0), (pw, pw, ph, ph), value=1.0)
    expected = F.conv2d(signs, torch.where(weight < 0, -1.0, 1.0), None, stride, 0, dilation, groups)
    assert torch.equal(out.permute(0, 3, 1, 2).float(), expected)


def test_patch_words_of_an_empty_batch():
    words = torch.zeros(0, 5, 5, 1, 2, dtype=torch.int32)
    assert conv_patch_words(words, 3, padding=1).shape == (0, 5, 5, 1, 18)


@pytest.mark.parametrize(
    ("size", "kernel", "padding", "dilation", "message"),
    [
        ((2, 5), 3, 0, 1, r"input of 2 x 5 pixels \(padded: 2 x 5\) is smaller than the kernel_size 3 x 3"),
        ((4, 4), 3, 0, 2, r"\(dilated: 5 x 5\)"),
    ],
)
def test_input_smaller_than_the_kernel(size, kernel, padding, dilation, message):
    words = torch.zeros(1, *size, 1, 1, dtype=torch.int32)
    with pytest.raises(ValueError, match=message):
        conv_patch_words(words, kernel, 1, padding, dilation)
    with pytest.raises(ValueError, match=message):
        check_conv_input_size(*size, kernel, padding, dilation)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ((torch.zeros(1, 3, 3, 1, dtype=torch.int32), 1), ValueError, "words must have 5 dimensions"),
        ((torch.zeros(1, 3, 3, 1, 1), 1), TypeError, "int32"),
        (
            (torch.zeros(1, 3, 3, 1, 1, dtype=torch.int32), 0),
            ValueError,
            "kernel_size must be an int or a pair of ints, each >= 1",
        ),
        (
            (torch.zeros(1, 3, 3, 1, 1, dtype=torch.int32), 1, 1, -1),
            ValueError,
            "padding must be an int or a pair of ints, each >= 0",
        ),
        (
            (torch.zeros(1, 3, 3, 1, 1, dtype=torch.int32), 1, (1, 2, 3)),
            ValueError,
            "stride must be an int or a pair of ints, each >= 1",
        ),
    ],
)
def test_patch_words_reject_bad_arguments(arguments, error, match):
    with pytest.raises(error, match=match):
        conv_patch_words(*arguments)


def test_conv_output_size_is_conv2d_s():
    for size, kernel, stride, padding, dilation in ((5, 3, 1, 1, 1), (9, 3, 2, 2, 2), (4, 4, 3, 0, 1)):
        x = torch.zeros(1, 1, size, size)
        expected = F.conv2d(x, torch.zeros(1, 1, kernel, kernel), None, stride, padding, dilation).shape[-1]
        assert conv_output_size(size, kernel, stride, padding, dilation) == expected


# --- pooling on packed bits ----------------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "window"), [(4, 4, 2), (5, 7, 2), (6, 6, 3), (3, 3, 1)])
def test_pool_equals_sign_of_pooled_folded_values(height, width, window):
    """sign(s * maxpool(c) + t) for integer c, scales of both signs and zero, 37 channels (padding bits)."""
    gen = generator(1)
    channels = 37
    counts = torch.randint(-20, 21, (3, channels, height, width), generator=gen).float()
    scale = random_values((channels,), gen)
    scale[:3] = 0.0
    shift = random_values((channels,), gen) * 5
    folded = counts * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    pooled = F.max_pool2d(counts, window) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    expected = pack_signs(pooled.permute(0, 2, 3, 1))
    and_words = pack_signs(torch.where(scale >= 0, -1.0, 1.0))
    words = pack_signs(folded.permute(0, 2, 3, 1))
    got = pool_packed_signs(words, window, and_words)
    assert got.shape == expected.shape == (3, height // window, width // window, num_words(channels))
    assert torch.equal(got, expected)
    assert torch.equal(pool_packed_signs_reference(words, window, and_words), expected)


def test_pool_equals_the_reference_on_random_words():
    gen = generator(2)
    words = torch.randint(-(2**31), 2**31 - 1, (2, 7, 5, 3), generator=gen, dtype=torch.int32)
    and_words = torch.randint(-(2**31), 2**31 - 1, (3,), generator=gen, dtype=torch.int32)
    for window in (1, 2, 3):
        expected = pool_packed_signs_reference(words, window, and_words)
        assert torch.equal(pool_packed_signs(words, window, and_words), expected)


@pytest.mark.parametrize(
    ("window", "and_words", "match"),
    [(0, torch.zeros(2, dtype=torch.int32), "window must be an int >= 1"),
     (2, torch.zeros(3, dtype=torch.int32), "and_words must have 2 words"),
     (2, torch.zeros(2), "and_words must hold int32")],
)  # fmt: skip
def test_pool_rejects_bad_arguments(window, and_words, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pool_packed_signs(torch.zeros(1, 4, 4, 2, dtype=torch.int32), window, and_words)
