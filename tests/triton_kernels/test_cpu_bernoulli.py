"""The compiled Bernoulli sampler (cpu_bernoulli): frequencies, independence, seeding, shapes, fallback.

Statistical bounds are 5.5 standard deviations per tested quantity (a false failure has probability
under 1e-7 each): a sampler biased by 0.01 in probability, one whose two uniforms of an output, adjacent
outputs, rows or successive calls repeat or correlate, or one that ignores its seed fails them.
"""

import math

import pytest
import torch

from triton_kernels import cpu_bernoulli
from triton_kernels.cpu_bernoulli import bernoulli_bits, compiled_bernoulli_enabled
from triton_kernels.cpu_binary_rows import binary_kernels

pytestmark = pytest.mark.skipif(cpu_bernoulli._jit() is None, reason="numba does not import here")

SIGMAS = 5.5


def _z(count: torch.Tensor, n: int, p: torch.Tensor) -> torch.Tensor:
    """Binomial z-scores of ``count`` successes in ``n`` trials at probabilities ``p``."""
    return (count - n * p) / torch.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frequencies_match_probabilities(dtype):
    torch.manual_seed(0)
    assert compiled_bernoulli_enabled(torch.zeros(1, dtype=dtype))
    p = torch.tensor([0.001, 0.01, 0.1, 0.25, 0.5, 0.7, 0.9, 0.999, 1 / 3, 0.123456], dtype=dtype)
    n = 200_000
    bits = bernoulli_bits(p.expand(n, -1))
    assert bits.dtype == dtype and bits.shape == (n, p.numel())
    assert bool(((bits == 0) | (bits == 1)).all())
    z = _z(bits.double().sum(0), n, p.double())
    assert float(z.abs().max()) < SIGMAS, z
    # chi-square over the 10 cells (10 degrees of freedom: mean 10, sd 4.5)
    assert float((z**2).sum()) < 10 + SIGMAS * math.sqrt(20)


def test_edges_zero_and_one():
    torch.manual_seed(1)
    assert not bool(bernoulli_bits(torch.zeros(300, 1000)).any())  # u >= 0 = p: never 1
    assert bool(bernoulli_bits(torch.ones(300, 1000)).all())  # u < 1 always
    assert not bool(bernoulli_bits(torch.full((300, 1000), -0.5)).any())


def test_neighbours_and_successive_calls_independent():
    """Correlations of bits at p = 1/2 between neighbours (the two uniforms of one 64-bit output, and
    adjacent outputs), between rows, and between two successive calls: each within 5.5 / sqrt(n) of 0."""
    torch.manual_seed(2)
    half = torch.full((400, 1000), 0.5)
    first, second = bernoulli_bits(half), bernoulli_bits(half)
    n = first.numel()

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.reshape(-1).double() - 0.5, b.reshape(-1).double() - 0.5
        return float((a * b).mean() / 0.25)

    flat = first.reshape(-1)
    pairs = [(flat[0::2], flat[1::2]), (flat[1:-1:2], flat[2::2]), (first[:-1], first[1:]), (first, second)]
    for a, b in pairs:
        assert abs(corr(a, b)) < SIGMAS / math.sqrt(a.numel()), corr(a, b)
    assert abs(float(first.mean()) - 0.5) < SIGMAS * 0.5 / math.sqrt(n)
    # runs of equal bits: for independent fair bits a run continues with probability 1/2
    same = float((flat[1:] == flat[:-1]).double().mean())
    assert abs(same - 0.5) < SIGMAS * 0.5 / math.sqrt(n - 1)


def test_seeding_follows_torch_generator():
    p = torch.rand(50, 70, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    a = bernoulli_bits(p)
    b = bernoulli_bits(p)
    torch.manual_seed(4)
    assert torch.equal(bernoulli_bits(p), a)  # same torch seed, same bits
    assert not torch.equal(a, b)  # the next call draws another seed
    torch.manual_seed(5)
    assert not torch.equal(bernoulli_bits(p), a)  # another torch seed
    state = torch.get_rng_state()  # what a checkpoint saves
    c = bernoulli_bits(p)
    torch.set_rng_state(state)
    assert torch.equal(bernoulli_bits(p), c)
    # an explicit generator, and each call takes exactly one draw from it
    g = torch.Generator().manual_seed(6)
    d = bernoulli_bits(p, generator=g)
    g.manual_seed(6)
    assert torch.equal(bernoulli_bits(p, generator=g), d)
    after = torch.empty((), dtype=torch.int64).random_(generator=g)
    fresh = torch.Generator().manual_seed(6)
    torch.empty((), dtype=torch.int64).random_(generator=fresh)
    assert int(after) == int(torch.empty((), dtype=torch.int64).random_(generator=fresh))


@pytest.mark.parametrize("shape", [(), (0,), (0, 5), (7,), (3, 5, 7), (1, 1)])
def test_shapes(shape):
    torch.manual_seed(7)
    p = torch.rand(shape)
    bits = bernoulli_bits(p)
    assert bits.shape == p.shape and bits.dtype == p.dtype and bits.is_contiguous()


def test_non_contiguous_and_grad():
    p = torch.rand(30, 40, requires_grad=True)
    torch.manual_seed(8)
    bits = bernoulli_bits(p.T)
    assert bits.shape == (40, 30) and not bits.requires_grad
    torch.manual_seed(8)
    assert torch.equal(bits, bernoulli_bits(p.detach().T.contiguous()))  # a view samples as its contiguous copy


def test_fallback_equals_torch_path():
    p = torch.rand(60, 80, generator=torch.Generator().manual_seed(9))
    with binary_kernels(False):
        assert not compiled_bernoulli_enabled(p)
        torch.manual_seed(10)
        got = bernoulli_bits(p)
        torch.manual_seed(10)
        assert torch.equal(got, (torch.rand_like(p) < p).to(p.dtype))
        g = torch.Generator().manual_seed(11)
        got = bernoulli_bits(p.double(), generator=g)
        g.manual_seed(11)
        assert torch.equal(got, (torch.rand(p.shape, dtype=torch.float64, generator=g) < p.double()).double())
    half = p.half()  # not float32/64: the torch path even with the kernels on
    assert not compiled_bernoulli_enabled(half)
    torch.manual_seed(12)
    got = bernoulli_bits(half)
    torch.manual_seed(12)
    assert got.dtype == torch.float16 and torch.equal(got, (torch.rand_like(half) < half).half())


def test_without_numba(monkeypatch):
    monkeypatch.setattr(cpu_bernoulli, "_jit", lambda: None)
    p = torch.rand(20, 30)
    assert not compiled_bernoulli_enabled(p)
    torch.manual_seed(13)
    got = bernoulli_bits(p)
    torch.manual_seed(13)
    assert torch.equal(got, (torch.rand_like(p) < p).float())
