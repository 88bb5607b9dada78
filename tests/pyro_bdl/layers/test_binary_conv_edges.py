"""``BinaryConv2d`` at the edges (issue 9, defect 4): an empty batch, an input smaller than the kernel."""

import pytest
import torch
from torch import nn

from pyro_bdl.layers import BinaryConv2d

GEOMETRIES = [
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": (3, 2), "stride": 2, "dilation": (1, 2), "groups": 2},
    {"kernel_size": 1},
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=("pad1", "strided-dilated-groups", "1x1"))
@pytest.mark.parametrize("binarize_input", (True, False))
@pytest.mark.parametrize("training", (True, False), ids=("train", "eval"))
def test_empty_batch_gives_an_empty_result_like_conv2d(geometry, binarize_input, training):
    layer = BinaryConv2d(4, 6, binarize_input=binarize_input, **geometry).train(training)
    x = torch.randn(0, 4, 7, 9, requires_grad=True)
    out = layer(x)  # the packed path raised "cannot reshape tensor of 0 elements" before
    assert out.shape == nn.Conv2d(4, 6, **geometry)(x).shape
    assert out.dtype == x.dtype
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.count_nonzero(layer.weight.grad) == 0


@pytest.mark.parametrize("binarize_input", (True, False))
@pytest.mark.parametrize("training", (True, False), ids=("train", "eval"))
@pytest.mark.parametrize(
    ("geometry", "size", "message"),
    [
        ({"kernel_size": 3}, (2, 5), r"input of 2 x 5 pixels \(padded: 2 x 5\) is smaller than the kernel_size 3 x 3"),
        ({"kernel_size": 5, "padding": 1}, (2, 2), r"\(padded: 4 x 4\) is smaller than the kernel_size 5 x 5"),
        ({"kernel_size": 3, "dilation": 3}, (6, 9), r"kernel_size 3 x 3 \(dilated: 7 x 7\)"),
    ],
)
def test_input_smaller_than_the_kernel_says_so(geometry, size, message, binarize_input, training):
    layer = BinaryConv2d(4, 6, binarize_input=binarize_input, **geometry).train(training)
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(2, 4, *size))


def test_input_as_large_as_the_dilated_kernel_runs():
    layer = BinaryConv2d(4, 6, 3, dilation=3)
    assert layer(torch.randn(2, 4, 7, 7)).shape == (2, 6, 1, 1)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"kernel_size": 0}, "kernel_size must be an int or a pair of ints, each >= 1; got 0"),
        ({"kernel_size": 3, "stride": (1, 0)}, r"stride must be an int or a pair of ints, each >= 1; got \(1, 0\)"),
        ({"kernel_size": 3, "padding": -1}, "padding must be an int or a pair of ints, each >= 0; got -1"),
        ({"kernel_size": 3, "dilation": 1.5}, "dilation must be an int or a pair of ints, each >= 1; got 1.5"),
        ({"kernel_size": 3, "groups": 0}, "groups must be an int >= 1, got 0"),
    ],
)
def test_constructor_names_the_bad_argument(options, match):
    with pytest.raises(ValueError, match=match):
        BinaryConv2d(4, 4, **options)
