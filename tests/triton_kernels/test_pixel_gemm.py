"""``pixel_gemm``: uint8 pixels times packed sign weights, exact, with the xnor_gemm epilogue.

Every backend and method must equal the integer product ``pixels.int() @ signs.T`` on awkward shapes
(one row, K not a multiple of 32, N not a multiple of the block, strided pixels, leading
batch dims), and its scale/bias/float/packed outputs must equal the plain-torch epilogue.
"""

import importlib

import pytest
import torch

from tests.triton_kernels.helpers import generator, random_channels, random_words
from triton_kernels import pixel_gemm, pixel_gemm_reference, unpack_signs_reference
from triton_kernels.xnor_gemm import apply_epilogue

pixel_gemm_module = importlib.import_module("triton_kernels.pixel_gemm")  # the package exports the function


@pytest.fixture(params=("auto", "bitplane"))
def pixel_method(request, backend):
    """``auto`` (fused on Triton, bit planes on the CPU path) and, on Triton, the bit planes too."""
    if request.param == "bitplane" and backend != "triton":
        pytest.skip("the CPU path's auto method is bitplane; the reference has one method")
    return request.param


def random_pixels(shape, gen: torch.Generator) -> torch.Tensor:
    """uint8 pixels with many 0 and 255 (MNIST-like) and everything between."""
    values = torch.randint(0, 256, shape, generator=gen, dtype=torch.int32)
    values[torch.rand(shape, generator=gen) < 0.3] = 0
    values[torch.rand(shape, generator=gen) < 0.1] = 255
    return values.to(torch.uint8)


def exact_product(pixels: torch.Tensor, words: torch.Tensor, k: int) -> torch.Tensor:
    signs = unpack_signs_reference(words, k, dtype=torch.int64)
    return (pixels.to(torch.int64) @ signs.T).to(torch.int32)


@pytest.mark.parametrize(("m", "n", "k"), [(1, 1, 1), (1, 64, 784), (3, 70, 33), (5, 129, 100), (17, 31, 64)])
def test_equals_the_integer_product(device, backend, pixel_method, m, n, k):
    gen = generator(m * 1000 + n + k)
    pixels, words = random_pixels((m, k), gen), random_words(n, k, gen)
    got = pixel_gemm(pixels.to(device), words.to(device), k, backend=backend, method=pixel_method)
    assert got.dtype == torch.int32 and got.shape == (m, n)
    assert torch.equal(got.cpu(), exact_product(pixels, words, k))


def test_strided_pixels_and_leading_dims(device, backend, pixel_method):
    gen = generator(7)
    k, n = 90, 40
    wide = random_pixels((2, 3, 2 * k), gen)
    pixels = wide[..., ::2]  # non-contiguous last dimension
    words = random_words(n, k, gen)
    got = pixel_gemm(pixels.to(device), words.to(device), k, backend=backend, method=pixel_method)
    assert got.shape == (2, 3, n)
    assert torch.equal(got.cpu(), exact_product(pixels.reshape(-1, k), words, k).reshape(2, 3, n))


def test_largest_products_do_not_overflow(device, backend, pixel_method):
    """All pixels 255 against all -1 weights: -255 * K, the extreme of the int32 range used."""
    k, n = 4096, 64
    pixels = torch.full((2, k), 255, dtype=torch.uint8)
    words = random_words(n, k, generator(0))
    words.fill_(-1)  # every bit set: every weight -1
    got = pixel_gemm(pixels.to(device), words.to(device), k, backend=backend, method=pixel_method)
    assert torch.equal(got.cpu(), torch.full((2, n), -255 * k, dtype=torch.int32))


@pytest.mark.parametrize("pack_output", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_epilogue_equals_plain_torch(device, backend, pixel_method, pack_output, with_bias):
    gen = generator(11)
    m, n, k = 3, 100, 784
    pixels, words = random_pixels((m, k), gen), random_words(n, k, gen)
    scale = random_channels(n, gen) / 1000
    bias = random_channels(n, gen) * 50 if with_bias else None
    on = {"scale": scale.to(device), "bias": None if bias is None else bias.to(device)}
    got = pixel_gemm(
        pixels.to(device), words.to(device), k, pack_output=pack_output, backend=backend, method=pixel_method, **on
    )
    expected = apply_epilogue(exact_product(pixels, words, k), scale, bias, torch.float32, pack_output)
    if pack_output:
        assert got.shape == (m, 4) and torch.equal(got.cpu(), expected)
    else:
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-6, atol=1e-5)


def test_reference_matches_the_exact_product_with_epilogue():
    gen = generator(3)
    pixels, words = random_pixels((4, 50), gen), random_words(9, 50, gen)
    out = pixel_gemm_reference(pixels, words, 50, out_dtype=torch.float32)
    assert torch.equal(out, exact_product(pixels, words, 50).float())


@pytest.mark.parametrize(
    ("pixels", "words", "k", "error", "match"),
    [
        (torch.zeros(2, 33), torch.zeros(4, 2, dtype=torch.int32), 33, TypeError, "pixels must be uint8"),
        (torch.zeros(2, 30, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.int32), 33, ValueError, "k=33"),
        (torch.zeros(2, 33, dtype=torch.uint8), torch.zeros(4, 1, dtype=torch.int32), 33, ValueError, "words"),
        (torch.zeros(2, 33, dtype=torch.uint8), torch.zeros(4, 2), 33, TypeError, "int32"),
    ],
)
def test_bad_inputs(pixels, words, k, error, match):
    with pytest.raises(error, match=match):
        pixel_gemm(pixels, words, k)


def test_bad_epilogue():
    pixels, words = torch.zeros(2, 33, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="scale"):
        pixel_gemm(pixels, words, 33, scale=torch.ones(5))
    with pytest.raises(ValueError, match="floating out_dtype"):
        pixel_gemm(pixels, words, 33, bias=torch.ones(4), out_dtype=torch.int32)


def test_backend_means_what_it_means_for_xnor_gemm(monkeypatch):
    """``cpu`` is the fast CPU path (bit planes on the CPU XNOR GEMM), ``reference`` plain torch."""
    gen = generator(12)
    pixels, words = random_pixels((2, 70), gen), random_words(9, 70, gen)
    calls = []
    original = pixel_gemm_module.xnor_gemm
    monkeypatch.setattr(pixel_gemm_module, "xnor_gemm", lambda *a, **o: calls.append(o["backend"]) or original(*a, **o))
    expected = exact_product(pixels, words, 70)
    assert torch.equal(pixel_gemm(pixels, words, 70), expected)
    assert torch.equal(pixel_gemm(pixels, words, 70, backend="cpu", method="bitplane"), expected)
    assert calls == ["cpu", "cpu"]
    assert torch.equal(pixel_gemm(pixels, words, 70, backend="reference"), expected)
    assert calls == ["cpu", "cpu"]


@pytest.mark.parametrize(
    ("backend", "method", "match"),
    [
        ("cpu", "fused", "method='fused' is a Triton kernel, but the backend is 'cpu'"),
        ("reference", "bitplane", "method='bitplane' selects an implementation, but the backend is 'reference'"),
        ("auto", "fast", "method must be one of .* got 'fast'"),
        ("gpu", "auto", "backend must be one of .* got 'gpu'"),
    ],
)
def test_bad_method_or_backend(backend, method, match):
    pixels, words = torch.zeros(2, 33, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match=match):
        pixel_gemm(pixels, words, 33, method=method, backend=backend)
