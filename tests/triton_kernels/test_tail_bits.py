"""The tail rule: only the first ``k`` bits of a row of sign words count, on every backend.

Regression tests for words whose last word has bits set beyond ``k`` (issue 9, defect 1):
``xnor_gemm(pack_signs(x70), pack_signs(w70), 65)`` used to sum over 70 columns on the CPU
path and the Triton kernels while the reference summed over 65.
"""

import pytest
import torch

from tests.triton_kernels.helpers import generator, random_words
from triton_kernels import pack_signs, pixel_gemm, pixel_gemm_reference, unpack_signs, xnor_gemm, xnor_gemm_reference
from triton_kernels.pack import last_word_mask, mask_tail

AWKWARD_K = (1, 31, 33, 65, 100)


def with_garbage_padding(words: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """The same words with random bits set beyond ``k`` in the last word (at least one)."""
    garbage = torch.randint(-(2**31), 2**31 - 1, words.shape[:-1], generator=gen, dtype=torch.int32)
    garbage = (garbage | (1 << 31)) & ~last_word_mask(k)  # bit 31 is always padding for these k
    dirty = words.clone()
    dirty[..., -1] |= garbage
    assert not torch.equal(dirty, words)
    return dirty


def test_last_word_mask():
    assert [last_word_mask(k) for k in (1, 31, 32, 33, 64, 65)] == [1, 2**31 - 1, -1, 1, -1, 1]
    words = torch.tensor([[-1, -1]], dtype=torch.int32)
    assert torch.equal(mask_tail(words, 33), torch.tensor([[-1, 1]], dtype=torch.int32))
    assert mask_tail(words, 64) is words
    clean = torch.tensor([[-1, 1]], dtype=torch.int32)
    assert mask_tail(clean, 33) is clean  # nothing to clear: no copy


@pytest.mark.parametrize("m", (3, 9))  # 9: past the CPU path's popcount threshold (int8 GEMM)
def test_issue_example_sums_over_k_columns(device, backend, method, m):
    gen = generator(90)
    x70, w70 = torch.randn(m, 70, generator=gen), torch.randn(24, 70, generator=gen)
    expected = (torch.where(x70[:, :65] < 0, -1, 1) @ torch.where(w70[:, :65] < 0, -1, 1).T).to(torch.int32)
    a, b = pack_signs(x70).to(device), pack_signs(w70).to(device)
    assert torch.equal(xnor_gemm_reference(a, b, 65).cpu(), expected)
    assert torch.equal(xnor_gemm(a, b, 65, backend=backend, method=method).cpu(), expected)


@pytest.mark.parametrize("k", AWKWARD_K)
@pytest.mark.parametrize("m", (2, 17))
def test_garbage_padding_is_ignored(device, backend, method, k, m):
    gen = generator(91 + k)
    clean_a, clean_b = random_words((m,), k, gen), random_words((24,), k, gen)
    a, b = with_garbage_padding(clean_a, k, gen), with_garbage_padding(clean_b, k, gen)
    expected = xnor_gemm_reference(clean_a, clean_b, k)
    assert torch.equal(xnor_gemm_reference(a, b, k), expected)
    got = xnor_gemm(a.to(device), b.to(device), k, backend=backend, method=method)
    assert torch.equal(got.cpu(), expected)
    scale, bias = torch.linspace(-1, 1, 24), torch.linspace(-3, 3, 24)
    packed = xnor_gemm(a.to(device), b.to(device), k, scale=scale.to(device), bias=bias.to(device),
                       pack_output=True, backend=backend, method=method)  # fmt: skip
    assert torch.equal(packed.cpu(), xnor_gemm_reference(clean_a, clean_b, k, scale=scale, bias=bias, pack_output=True))


@pytest.mark.parametrize("k", AWKWARD_K)
def test_unpack_ignores_garbage_padding(device, backend, k):
    gen = generator(92)
    clean = random_words((3,), k, gen)
    dirty = with_garbage_padding(clean, k, gen)
    expected = unpack_signs(clean, k, backend="reference")
    assert torch.equal(unpack_signs(dirty.to(device), k, backend=backend).cpu(), expected)


@pytest.mark.parametrize("k", AWKWARD_K)
def test_pixel_gemm_ignores_garbage_padding(device, backend, k):
    gen = generator(93)
    clean = random_words((20,), k, gen)
    dirty = with_garbage_padding(clean, k, gen)
    pixels = torch.randint(0, 256, (3, k), generator=gen, dtype=torch.uint8)
    expected = pixel_gemm_reference(pixels, clean, k)
    assert torch.equal(pixel_gemm_reference(pixels, dirty, k), expected)
    assert torch.equal(pixel_gemm(pixels.to(device), dirty.to(device), k, backend=backend).cpu(), expected)
