"""Export of a trained BinaryNetMLP to packed sign words, and the packed forward.

The exported network must score like ``model.eval()`` (up to float rounding of the first
layer and the folded batch norms, 1e-4 absolute) for real inputs and for uint8 pixels, with
the same predicted classes; its hidden layers must stay in the packed domain
(``xnor_gemm(..., pack_output=True)``), and its weights must take about 1/32 of the
float32 memory.
"""

import io

import pytest
import torch
from torch import nn

import pyro_bdl.networks.packed as packed_module
from pyro_bdl.kernels import num_words
from pyro_bdl.layers import binary_sign
from pyro_bdl.networks import BinaryNetMLP, PackedBinaryMLP, export_packed_mlp, fold_batch_norm
from pyro_bdl.networks.packed import BITPLANE_MAX_ROWS
from tests.triton_kernels.helpers import generator, random_values


@pytest.fixture(autouse=True)
def seeded():
    """Layers initialise from torch's global generator: fix it, whatever ran before."""
    torch.manual_seed(0)


SCORE_ATOL = 1e-4


def trained_like(model: BinaryNetMLP, gen: torch.Generator) -> BinaryNetMLP:
    """Latent weights of both signs (some 0), random BN affine and non-trivial running stats."""
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.copy_(random_values(layer.weight.shape, gen).clamp(-1, 1))
        for norm in model.norms:
            norm.weight.copy_(random_values(norm.weight.shape, gen) + 1.5)
            norm.bias.copy_(random_values(norm.bias.shape, gen))
        model.train()
        for _ in range(5):
            model(random_values((32, model.layers[0].in_features), gen) + 0.3)
    assert not torch.equal(model.norms[1].running_mean, torch.zeros_like(model.norms[1].running_mean))
    return model.eval()


def spy_pixel_gemm(monkeypatch) -> list:
    """Record the options of every pixel_gemm (the 8-bit first layer) the packed network runs."""
    calls = []
    original = packed_module.pixel_gemm
    monkeypatch.setattr(packed_module, "pixel_gemm", lambda *a, **o: calls.append(o) or original(*a, **o))
    return calls


def spy_gemm(monkeypatch) -> list:
    """Record the options of every xnor_gemm the packed network runs."""
    calls = []
    original = packed_module.xnor_gemm

    def spy(a, b, k, **options):
        calls.append({"k": k, "pack_output": options.get("pack_output", False)})
        return original(a, b, k, **options)

    monkeypatch.setattr(packed_module, "xnor_gemm", spy)
    return calls


# --- fold_batch_norm ---------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_batch_norm_equals_eval_batch_norm(affine, with_bias):
    gen = generator(0)
    norm = nn.BatchNorm1d(37, eps=1e-4, affine=affine)
    with torch.no_grad():
        norm.running_mean.copy_(random_values((37,), gen) * 5)
        norm.running_var.copy_(random_values((37,), gen).abs() * 3 + 0.1)
        if affine:
            norm.weight.copy_(random_values((37,), gen))
            norm.bias.copy_(random_values((37,), gen))
    layer_bias = random_values((37,), gen) if with_bias else None
    y = random_values((11, 37), gen) * 10
    scale, shift = fold_batch_norm(norm.eval(), layer_bias)
    assert scale.shape == shift.shape == (37,) and scale.dtype == shift.dtype == torch.float32
    expected = norm(y if layer_bias is None else y + layer_bias)
    torch.testing.assert_close(y * scale + shift, expected.detach(), rtol=1e-5, atol=1e-5)


def test_fold_batch_norm_needs_running_stats():
    with pytest.raises(ValueError, match="track_running_stats"):
        fold_batch_norm(nn.BatchNorm1d(4, track_running_stats=False))


# --- export and the packed forward -------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 3])
def test_packed_scores_match_model_for_float_inputs(depth, monkeypatch):
    gen = generator(depth)
    model = trained_like(BinaryNetMLP(in_features=64, hidden=100, depth=depth, classes=10), gen)
    packed = export_packed_mlp(model)
    x = random_values((33, 64), gen)
    calls = spy_gemm(monkeypatch)
    with torch.no_grad():
        scores, expected = packed(x), model(x)
    assert scores.shape == (33, 10) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, rtol=0, atol=SCORE_ATOL)
    assert torch.equal(scores.argmax(1), expected.argmax(1))
    # hidden -> hidden layers read and write sign words; the last one writes float scores
    assert calls == [{"k": 100, "pack_output": True}] * (depth - 1) + [{"k": 100, "pack_output": False}]


@pytest.mark.parametrize("input_range", [(-1.0, 1.0), (0.0, 1.0)], ids=["pm1", "unit"])
def test_packed_scores_match_model_for_uint8_pixels(input_range, monkeypatch):
    gen = generator(4)
    model = trained_like(BinaryNetMLP(in_features=70, hidden=96, depth=2, classes=10), gen)
    packed = export_packed_mlp(model, input_range=input_range)
    pixels = torch.randint(0, 256, (40, 70), generator=gen, dtype=torch.uint8)
    low, high = input_range
    calls, pixel_calls = spy_gemm(monkeypatch), spy_pixel_gemm(monkeypatch)
    with torch.no_grad():
        scores = packed(pixels)
        expected = model(low + (high - low) * pixels.float() / 255)
    torch.testing.assert_close(scores, expected, rtol=0, atol=SCORE_ATOL)
    assert torch.equal(scores.argmax(1), expected.argmax(1))
    # the first layer: one pixel_gemm writing sign words (bit planes on the CPU), then the hidden layers
    assert [(call["pack_output"], call["method"]) for call in pixel_calls] == [(True, "auto")]
    assert [call["pack_output"] for call in calls] == [True, False]


def test_packed_buffers_hold_signs_and_folded_norms():
    gen = generator(5)
    model = trained_like(BinaryNetMLP(in_features=40, hidden=33, depth=2, classes=3), gen)
    packed = export_packed_mlp(model)
    assert packed.widths == [40, 33, 33, 3]
    for index, (layer, norm) in enumerate(zip(model.layers, model.norms, strict=True)):
        words = getattr(packed, f"words_{index}")
        assert words.dtype == torch.int32 and words.shape == (layer.out_features, num_words(layer.in_features))
        assert torch.equal(words, layer.packed_weight())
        scale, shift = fold_batch_norm(norm)
        assert torch.equal(getattr(packed, f"scale_{index}"), scale)
        assert torch.equal(getattr(packed, f"shift_{index}"), shift)
    assert torch.equal(packed.first_row_sums, binary_sign(model.layers[0].weight.detach()).sum(1).int())


def test_packed_state_dict_round_trip():
    gen = generator(6)
    model = trained_like(BinaryNetMLP(in_features=50, hidden=64, depth=2, classes=10), gen)
    packed = export_packed_mlp(model)
    buffer = io.BytesIO()
    torch.save(packed.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    # a blank network of the same layer shapes; the input range is a constructor argument
    blank = [
        (torch.zeros_like(getattr(packed, f"words_{index}")), k, torch.ones(n), torch.zeros(n))
        for index, (k, n) in enumerate(zip(packed.widths[:-1], packed.widths[1:], strict=True))
    ]
    fresh = PackedBinaryMLP(blank)
    fresh.load_state_dict(state)
    x = random_values((9, 50), gen)
    pixels = torch.randint(0, 256, (9, 50), generator=gen, dtype=torch.uint8)
    assert torch.equal(fresh(x), packed(x))
    assert torch.equal(fresh(pixels), packed(pixels))


def test_packed_weights_are_over_25x_smaller_than_float32():
    """The paper's 784-4096x3-10 MLP: sign words take 1/32 of the fp32 latent weights (plus word padding)."""
    model = BinaryNetMLP()
    packed = export_packed_mlp(model.eval())
    word_bytes = sum(getattr(packed, f"words_{index}").nbytes for index in range(packed.depth))
    float_bytes = sum(layer.weight.nbytes for layer in model.layers)
    assert float_bytes == 4 * (784 * 4096 + 2 * 4096 * 4096 + 4096 * 10)
    assert word_bytes == 4 * (4096 * 25 + 2 * 4096 * 128 + 10 * 128)
    assert float_bytes / word_bytes >= 25


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64,), (3, 63), (3, 65), (2, 3, 64)], ids=str)
def test_packed_rejects_wrong_input_shape(shape):
    packed = export_packed_mlp(BinaryNetMLP(in_features=64, hidden=32, depth=1, classes=4).eval())
    with pytest.raises(ValueError, match=r"x must be \(batch, 64\)"):
        packed(torch.randn(shape))


def test_packed_rejects_words_that_do_not_hold_k():
    words = torch.zeros(8, 2, dtype=torch.int32)  # 2 words hold 33..64 signs
    with pytest.raises(ValueError, match="cannot hold k=70"):
        PackedBinaryMLP([(words, 70, torch.ones(8), torch.zeros(8))])


def test_export_rejects_non_binary_layers():
    model = BinaryNetMLP(in_features=8, hidden=16, depth=1, classes=2)
    model.layers[0] = nn.Linear(8, 16, bias=False)
    with pytest.raises(TypeError, match="expected BinaryLinear layers, got Linear"):
        export_packed_mlp(model)


def test_large_pixel_batches_take_the_float_first_layer_with_the_same_scores(monkeypatch):
    gen = generator(41)
    model = trained_like(BinaryNetMLP(in_features=70, hidden=96, depth=2, classes=10), gen)
    packed = export_packed_mlp(model)
    pixels = torch.randint(0, 256, (BITPLANE_MAX_ROWS + 1, 70), generator=gen, dtype=torch.uint8)
    calls, pixel_calls = spy_gemm(monkeypatch), spy_pixel_gemm(monkeypatch)
    with torch.no_grad():
        large = packed(pixels)
        assert pixel_calls == []  # the large batch took the float first layer
        assert calls[0]["pack_output"] is True and calls[0]["k"] == 96
        small = torch.cat([packed(pixels[:BITPLANE_MAX_ROWS]), packed(pixels[BITPLANE_MAX_ROWS:])])
    torch.testing.assert_close(large, small, rtol=0, atol=SCORE_ATOL)
    assert len(pixel_calls) == 2


# --- the 8-bit first layer: pixel_gemm's methods --------------------------------------------


@pytest.mark.parametrize("depth", [1, 3])
def test_first_layer_methods_score_alike(device, depth):
    """``fused`` (CUDA) and ``bitplane`` give one exact ``p . w`` and one folded epilogue."""
    gen = generator(43)
    model = trained_like(BinaryNetMLP(in_features=70, hidden=96, depth=depth, classes=10), gen).to(device)
    pixels = torch.randint(0, 256, (5, 70), generator=gen, dtype=torch.uint8).to(device)
    with torch.no_grad():
        expected = model(pixels.float() * (2 / 255) - 1.0)
        by_method = {method: export_packed_mlp(model, first_layer=method)(pixels) for method in ("auto", "bitplane")}
        if device == "cuda":
            by_method["fused"] = export_packed_mlp(model, first_layer="fused")(pixels)
    for scores in by_method.values():
        torch.testing.assert_close(scores, expected, rtol=0, atol=SCORE_ATOL)
        assert torch.equal(scores.argmax(1), expected.argmax(1))


def test_fused_first_layer_needs_the_triton_backend():
    model = BinaryNetMLP(in_features=40, hidden=64, depth=2, classes=10).eval()
    packed = export_packed_mlp(model, first_layer="fused")
    with pytest.raises(ValueError, match="method='fused' is a Triton kernel, but the backend is 'cpu'"):
        packed(torch.zeros(2, 40, dtype=torch.uint8))


def test_pixel_first_layer_follows_a_loaded_state_dict():
    """The folded first-layer affine is derived from the buffers, so loading new ones refreshes it."""
    gen = generator(44)
    model = trained_like(BinaryNetMLP(in_features=40, hidden=64, depth=2, classes=10), gen)
    packed = export_packed_mlp(model)
    other = export_packed_mlp(BinaryNetMLP(in_features=40, hidden=64, depth=2, classes=10).eval())
    other.load_state_dict(packed.state_dict())
    pixels = torch.randint(0, 256, (3, 40), generator=gen, dtype=torch.uint8)
    assert torch.equal(other(pixels), packed(pixels))


def test_export_reuses_the_layers_packed_words():
    """In eval mode the exporter takes the words the layers cached, the same tensors, not a repack."""
    model = trained_like(BinaryNetMLP(in_features=40, hidden=64, depth=2, classes=10), generator(45))
    cached = [layer.packed_weight() for layer in model.layers]
    packed = export_packed_mlp(model)
    assert all(getattr(packed, f"words_{index}") is words for index, words in enumerate(cached))


def test_export_rejects_nan_weights():
    model = BinaryNetMLP(in_features=8, hidden=16, depth=1, classes=2).eval()
    with torch.no_grad():
        model.layers[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN latent weights"):
        export_packed_mlp(model)


def test_unknown_first_layer_route():
    with pytest.raises(ValueError, match="first_layer must be one of"):
        export_packed_mlp(BinaryNetMLP(in_features=8, hidden=16, depth=1, classes=2).eval(), first_layer="fast")
