"""The compiled S-network forward on uint8 pixels (cpu_mlp) against its plain-torch specification, bit for bit.

Awkward shapes: k not a multiple of 32 or 64, odd batches, S = 1, one-layer networks, widths
that leave partial words; padding bits set in the first layer's words; blank pixel words
(skipped planes); rows split over threads.
"""

import itertools

import pytest
import torch

from tests.triton_kernels.helpers import generator, random_channels, random_words
from triton_kernels import cpu_mlp, pixel_gemm_reference, unpack_signs_reference


def random_network(samples: int, k: int, widths: list[int], gen: torch.Generator, shared_folds: bool):
    """First-layer words (S * H, KW) with their padding bits set, folds, and the later layers."""
    first = random_words(samples * widths[0], k, gen)
    if k % 32:
        first[:, -1] |= torch.tensor(-1 << (k % 32), dtype=torch.int32)  # garbage beyond k: must never count
    units = samples * widths[0]
    pixel_scale, pixel_shift = random_channels(units, gen) / 255, 20 * random_channels(units, gen)
    layers = []
    for k_i, n in itertools.pairwise(widths):
        fold = (1, n) if shared_folds else (samples, n)
        scale = random_channels(fold[0] * n, gen).view(fold).squeeze(0)
        shift = 4 * random_channels(fold[0] * n, gen).view(fold).squeeze(0)
        layers.append((random_words((samples, n), k_i, gen), k_i, scale, shift))
    return first, pixel_scale, pixel_shift, layers


def random_pixels(batch: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 pixels over 0..255, the first third blank (whole 64-pixel words of zeros when k >= 192)."""
    pixels = torch.randint(0, 256, (batch, k), generator=gen, dtype=torch.int64).to(torch.uint8)
    pixels[:, : k // 3] = 0
    return pixels


@pytest.mark.parametrize(
    ("samples", "batch", "k", "widths"),
    [
        (1, 1, 7, [3]),  # one layer, one word, S = 1
        (3, 5, 70, [33, 5]),  # k and widths straddling words
        (2, 3, 784, [100, 65, 7]),  # MNIST pixels, three layers, odd widths
        (1, 2, 64, [64, 64]),  # exactly one 64-bit word
        (4, 7, 200, [96, 1]),  # one output unit, blank words skipped
    ],
)
@pytest.mark.parametrize("shared_folds", [True, False], ids=["shared", "per-sample"])
def test_forward_equals_reference_bitwise(samples, batch, k, widths, shared_folds):
    gen = generator(samples * 1000 + k)
    first, pixel_scale, pixel_shift, layers = random_network(samples, k, widths, gen, shared_folds)
    pixels = random_pixels(batch, k, gen)
    plan = cpu_mlp.make_packed_mlp_plan(first, k, pixel_scale, pixel_shift, layers, samples)
    got = cpu_mlp.packed_mlp_cpu(pixels, cpu_mlp.plan_arrays(plan, samples))
    expected = cpu_mlp.packed_mlp_reference(pixels, first, k, pixel_scale, pixel_shift, layers, samples)
    assert got.shape == (samples, batch, widths[-1])
    assert torch.equal(got, expected)


def test_first_layer_is_the_exact_integer_product():
    """Unit scale, zero shift, one layer: the logits are p . w itself, against a float64 product."""
    gen = generator(7)
    k, units = 99, 40
    first = random_words(units, k, gen)
    pixels = torch.randint(0, 256, (9, k), generator=gen, dtype=torch.int64).to(torch.uint8)
    plan = cpu_mlp.make_packed_mlp_plan(first, k, torch.ones(units), torch.zeros(units), [], 1)
    got = cpu_mlp.packed_mlp_cpu(pixels, cpu_mlp.plan_arrays(plan, 1))[0]
    exact = pixels.double() @ unpack_signs_reference(first, k, torch.float64).T
    assert torch.equal(got.double(), exact)
    assert torch.equal(got, pixel_gemm_reference(pixels, first, k, out_dtype=torch.float32))


def test_rows_split_over_threads_give_the_same_logits(monkeypatch):
    monkeypatch.setattr(cpu_mlp, "MIN_WORDS_PER_THREAD", 1)
    gen = generator(3)
    first, pixel_scale, pixel_shift, layers = random_network(2, 50, [40, 6], gen, True)
    pixels = random_pixels(11, 50, gen)
    arrays = cpu_mlp.plan_arrays(cpu_mlp.make_packed_mlp_plan(first, 50, pixel_scale, pixel_shift, layers, 2), 2)
    assert torch.equal(cpu_mlp.packed_mlp_cpu(pixels, arrays, threads=3), cpu_mlp.packed_mlp_cpu(pixels, arrays, 1))


def test_plan_rejects_rows_not_divisible_by_samples():
    with pytest.raises(ValueError, match="multiple of samples=2"):
        cpu_mlp.make_packed_mlp_plan(torch.zeros(3, 1, dtype=torch.int32), 5, torch.ones(3), torch.zeros(3), [], 2)


def test_forward_rejects_bad_pixels():
    plan = cpu_mlp.make_packed_mlp_plan(torch.zeros(2, 1, dtype=torch.int32), 5, torch.ones(2), torch.zeros(2), [], 1)
    arrays = cpu_mlp.plan_arrays(plan, 1)
    with pytest.raises(TypeError, match="uint8"):
        cpu_mlp.packed_mlp_cpu(torch.zeros(1, 5), arrays)
    with pytest.raises(ValueError, match=r"\(batch, k=5\)"):
        cpu_mlp.packed_mlp_cpu(torch.zeros(1, 6, dtype=torch.uint8), arrays)
