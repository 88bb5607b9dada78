"""Export of a trained binary ConvNet to packed sign words, and the packed forward.

The exported ConvNet must score like ``model.eval()`` (up to the float rounding of the
folded batch norms) with the same predicted classes; its hidden convolutions and linear
layers must read and write sign words (``xnor_gemm(..., pack_output=True)``), max pooling
must be done on the packed bits, and its weights take about 1/32 of the float32 memory.
"""

import pytest
import torch
from torch import nn

import pyro_bdl.networks.packed_convnet as packed_module
from pyro_bdl.layers import BinaryConv2d, BinaryLinear
from pyro_bdl.networks import PackedBinaryConvNet, binarynet_convnet, export_packed_convnet
from tests.triton_kernels.helpers import generator, random_values

SCORE_ATOL = 1e-3


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def trained_like(model: nn.Sequential, gen: torch.Generator, image: tuple[int, int, int]) -> nn.Sequential:
    """Latent weights of both signs, BN affine of both signs, running stats from a few training passes."""
    with torch.no_grad():
        for module in model:
            if isinstance(module, BinaryConv2d | BinaryLinear):
                module.weight.copy_(random_values(module.weight.shape, gen).clamp(-1, 1))
            elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.weight.copy_(random_values(module.weight.shape, gen) + 0.5)  # some negative scales
                module.bias.copy_(random_values(module.bias.shape, gen))
        model.train()
        for _ in range(3):
            model(random_values((16, *image), gen))
    return model.eval()


def spy_gemm(monkeypatch) -> list:
    calls = []
    original = packed_module.xnor_gemm

    def spy(a, b, k, **options):
        calls.append({"pack_output": options.get("pack_output", False), "out_dtype": options.get("out_dtype")})
        return original(a, b, k, **options)

    monkeypatch.setattr(packed_module, "xnor_gemm", spy)
    return calls


# --- export of BinaryNet's ConvNet -----------------------------------------------------------


def test_exported_binarynet_convnet_scores_like_the_model_and_stays_packed(monkeypatch):
    """Width 8 gives 8/16/32 channels: word padding inside every tap and after the flatten."""
    gen = generator(2)
    model = trained_like(binarynet_convnet(in_channels=3, width=8, image_size=16, hidden=48), gen, (3, 16, 16))
    packed = export_packed_convnet(model)
    x = random_values((5, 3, 16, 16), gen)
    calls = spy_gemm(monkeypatch)
    scores = packed(x)
    expected = model(x).detach()
    assert scores.dtype == torch.float32 and scores.shape == (5, 10)
    torch.testing.assert_close(scores, expected, rtol=0, atol=SCORE_ATOL)
    assert torch.equal(scores.argmax(1), expected.argmax(1))
    # 5 binary convolutions and 2 hidden linear layers write sign words; the output layer writes floats.
    assert [call["pack_output"] for call in calls] == [True] * 7 + [False]
    assert calls[-1]["out_dtype"] == torch.float32


def test_exported_convnet_with_binary_first_layer_stride_and_unpooled_blocks():
    """A network that binarises its input from the start, with stride 2, padding 2 and 40 channels."""
    gen = generator(3)
    model = nn.Sequential(
        BinaryConv2d(40, 40, 3, stride=2, padding=2, bias=True),
        nn.BatchNorm2d(40),
        BinaryConv2d(40, 33, 2, dilation=2, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(33),
        nn.Flatten(),
        BinaryLinear(33 * 2 * 2, 7, bias=True),
        nn.BatchNorm1d(7),
    )
    model = trained_like(model, gen, (40, 9, 9))
    x = random_values((4, 40, 9, 9), gen)
    torch.testing.assert_close(export_packed_convnet(model)(x), model(x).detach(), rtol=0, atol=SCORE_ATOL)


def test_packed_convnet_weights_take_about_a_32nd_of_float32():
    model = binarynet_convnet(in_channels=3, width=32, image_size=16, hidden=256).eval()
    packed = export_packed_convnet(model)
    float_bytes = sum(p.numel() * 4 for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1)
    word_bytes = sum(b.numel() * b.element_size() for name, b in packed.named_buffers() if name.startswith("words"))
    assert float_bytes / word_bytes > 30


def test_packed_convnet_state_dict_round_trips():
    gen = generator(4)
    model = trained_like(binarynet_convnet(in_channels=1, width=8, image_size=8, hidden=16), gen, (1, 8, 8))
    packed = export_packed_convnet(model)
    clone = export_packed_convnet(binarynet_convnet(in_channels=1, width=8, image_size=8, hidden=16).eval())
    clone.load_state_dict(packed.state_dict())
    x = random_values((2, 1, 8, 8), gen)
    assert torch.equal(clone(x), packed(x))


# --- what the export refuses -----------------------------------------------------------------


def test_export_refuses_grouped_convolutions():
    model = nn.Sequential(BinaryConv2d(4, 4, 3, groups=2), nn.BatchNorm2d(4), nn.Flatten(), BinaryLinear(4, 2),
                          nn.BatchNorm1d(2)).eval()  # fmt: skip
    with pytest.raises(ValueError, match="groups=1"):
        export_packed_convnet(model)


def test_export_refuses_overlapping_pools_and_unknown_modules():
    pooled = nn.Sequential(BinaryConv2d(4, 4, 3), nn.MaxPool2d(3, stride=1), nn.BatchNorm2d(4)).eval()
    with pytest.raises(ValueError, match="MaxPool2d"):
        export_packed_convnet(pooled)
    relu = nn.Sequential(BinaryConv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with pytest.raises(TypeError, match="ReLU"):
        export_packed_convnet(relu)
    no_norm = nn.Sequential(BinaryConv2d(4, 4, 3), nn.Flatten()).eval()
    with pytest.raises(TypeError, match="BatchNorm2d"):
        export_packed_convnet(no_norm)
    no_head = nn.Sequential(BinaryConv2d(4, 4, 3), nn.BatchNorm2d(4)).eval()
    with pytest.raises(ValueError, match="end with BinaryLinear"):
        export_packed_convnet(no_head)


def test_packed_convnet_rejects_bad_input():
    packed = export_packed_convnet(binarynet_convnet(in_channels=1, width=8, image_size=8, hidden=16).eval())
    assert isinstance(packed, PackedBinaryConvNet)
    with pytest.raises(ValueError, match=r"x must be \(batch, 1, height, width\)"):
        packed(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="float"):
        packed(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


def test_export_reuses_the_layers_packed_words():
    """Binary convolutions and linear layers hand over the words they cached in eval mode."""
    model = trained_like(binarynet_convnet(in_channels=3, width=8, image_size=16, hidden=48), generator(9), (3, 16, 16))
    packed = export_packed_convnet(model)
    binary = [module for module in model if isinstance(module, BinaryConv2d | BinaryLinear)]
    conv = binary[1]  # binary input: packed path (the first takes real pixels)
    assert packed.words_1.data_ptr() == conv.packed_weight().data_ptr()
    last = binary[-1]  # not after the flatten: its words need no permutation
    assert packed.words_8 is last.packed_weight()
