"""The binary-row kernels (cpu_binary_rows) against the dense torch ops they replace, and their fallbacks.

Awkward shapes: one row, rows without ones, all ones, odd widths, non-contiguous operands, a
transposed weight, float64; the dense path when switched off, without numba, for non-binary
rows, under autograd and above the density limit; rows split over threads.
"""

from types import SimpleNamespace

import pytest
import torch

from tests.triton_kernels.helpers import count_binary_row_calls, generator
from triton_kernels import cpu_binary_rows as rows_module
from triton_kernels.cpu_binary_rows import (
    binary_addmm,
    binary_columns,
    binary_kernels,
    binary_kernels_enabled,
    binary_outer_add_,
    set_binary_kernels,
)

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}

pytestmark = pytest.mark.skipif(rows_module._jit() is None, reason="numba does not import here")


@pytest.fixture
def calls(monkeypatch):
    """Counts of the compiled loops' calls (kernels forced on at any density)."""
    counts = count_binary_row_calls(monkeypatch)
    monkeypatch.setattr(rows_module, "MAX_DENSITY", 1.0)
    monkeypatch.setattr(rows_module, "MAX_DENSITY_TRANSPOSED", 1.0)
    monkeypatch.setattr(rows_module, "MIN_ADDS_PER_THREAD", 1 << 62)  # one call per product
    monkeypatch.setattr(rows_module, "MIN_MULTIPLY_ADDS", 0)
    with binary_kernels(True):
        yield counts


def binary(shape, density: float, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Random bits at ``density``, the first row without ones and (with two or more rows) the last all ones."""
    x = (torch.rand(shape, generator=gen) < density).to(dtype)
    if shape[0] > 1:
        x[0], x[-1] = 0, 1
    return x


SHAPES = [(1, 1, 1), (1, 7, 3), (2, 5, 1), (3, 64, 33), (17, 131, 65), (100, 784, 500)]


@pytest.mark.parametrize("batch,width,columns", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.13, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_equal_the_dense_ops(calls, batch, width, columns, density, dtype):
    gen = generator(batch * width + columns)
    x = binary((batch, width), density, gen, dtype)
    weight = torch.randn(width, columns, generator=gen, dtype=dtype) * 0.3
    bias = torch.randn(columns, generator=gen, dtype=dtype)
    p = torch.rand(batch, columns, generator=gen, dtype=dtype)
    torch.testing.assert_close(binary_addmm(bias, x, weight), torch.addmm(bias, x, weight), **TOLERANCE)
    torch.testing.assert_close(binary_addmm(None, x, weight), x @ weight, **TOLERANCE)
    start = torch.randn(width, columns, generator=gen, dtype=dtype)
    got = binary_outer_add_(start.clone(), x, p, -0.37)
    torch.testing.assert_close(got, start.clone().addmm_(x.T, p, alpha=-0.37), **TOLERANCE)
    assert calls == {"rows_sum": 2, "outer_add": 1}


def test_listing_is_shared_and_exact(calls):
    gen = generator(1)
    x = binary((9, 40), 0.2, gen)
    listed = binary_columns(x)
    assert listed.nnz == int(x.sum()) and listed.shape == (9, 40)
    for k in range(40):
        assert listed.rows[listed.ptr[k] : listed.ptr[k + 1] - 1].tolist() == x[:, k].nonzero().flatten().tolist()
    weight, p = torch.randn(40, 6, generator=gen), torch.rand(9, 6, generator=gen)
    torch.testing.assert_close(binary_addmm(None, x, weight, listed), x @ weight, **TOLERANCE)
    torch.testing.assert_close(binary_outer_add_(torch.zeros(40, 6), x, p, 1.0, listed), x.T @ p, **TOLERANCE)
    with pytest.raises(ValueError, match="columns list the ones of a"):
        binary_addmm(None, x[:5], weight, listed)


def test_non_contiguous_operands_and_transposed_weight(calls):
    gen = generator(2)
    base = binary((30, 50), 0.2, gen)
    x = base[::2, 1::2]  # (15, 25), strided both ways
    xt = binary((25, 15), 0.2, gen).T  # a transposed view
    weight = torch.randn(40, 25, generator=gen).T  # (25, 40), column-major: copied for the kernel
    bias = torch.randn(80, generator=gen)[::2]
    p = torch.rand(15, 80, generator=gen)[:, ::2]
    for rows in (x, xt):
        torch.testing.assert_close(binary_addmm(bias, rows, weight), torch.addmm(bias, rows, weight), **TOLERANCE)
        got = binary_outer_add_(torch.zeros(25, 40), rows, p, 2.0)
        torch.testing.assert_close(got, 2.0 * rows.T @ p, **TOLERANCE)
    assert calls == {"rows_sum": 2, "outer_add": 2}


def test_rows_split_over_threads(calls, monkeypatch):
    monkeypatch.setattr(rows_module, "MIN_ADDS_PER_THREAD", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(rows_module.os, "cpu_count", lambda: 2)
    assert len(rows_module._ranges(33, 10**6)) == 2
    gen = generator(3)
    x, weight, p = binary((12, 31), 0.3, gen), torch.randn(31, 33, generator=gen), torch.rand(12, 33, generator=gen)
    torch.testing.assert_close(binary_addmm(None, x, weight), x @ weight, **TOLERANCE)
    torch.testing.assert_close(binary_outer_add_(torch.zeros(31, 33), x, p), x.T @ p, **TOLERANCE)


def test_dense_path_when_the_kernels_cannot_run(calls):
    gen = generator(4)
    x, weight, bias = binary((6, 10), 0.3, gen), torch.randn(10, 4, generator=gen), torch.randn(4, generator=gen)
    p = torch.rand(6, 4, generator=gen)
    dense = torch.addmm(bias, x, weight)
    with binary_kernels(False):  # switched off: the dense ops themselves
        assert not binary_kernels_enabled() and binary_columns(x) is None
        assert torch.equal(binary_addmm(bias, x, weight), dense)
        assert torch.equal(binary_outer_add_(torch.zeros(10, 4), x, p), torch.zeros(10, 4).addmm_(x.T, p))
    half = x.clone()
    half[2, 3] = 0.5  # not binary: found in the listing pass
    assert binary_columns(half) is None
    assert torch.equal(binary_addmm(bias, half, weight), torch.addmm(bias, half, weight))
    assert torch.equal(binary_outer_add_(torch.zeros(10, 4), half, p), torch.zeros(10, 4).addmm_(half.T, p))
    rows = x.clone().requires_grad_()  # autograd needs the product's gradient in x: the dense op
    binary_addmm(bias, rows, weight).sum().backward()
    torch.testing.assert_close(rows.grad, weight.sum(1).expand(6, 10))
    ints = x.to(torch.int64)
    assert torch.equal(binary_addmm(bias.long(), ints, weight.long()), torch.addmm(bias.long(), ints, weight.long()))
    assert calls == {"rows_sum": 0, "outer_add": 0}


def test_gradients_in_weight_and_bias_by_the_kernels(calls):
    """With the weight and bias requiring grad (an RBM's parameters under autograd) the product and both
    gradients run compiled, and equal the dense op's; the values are the same as without autograd."""
    gen = generator(6)
    x, upstream = binary((7, 33), 0.2, gen), torch.randn(7, 5, generator=gen)
    weight, bias = torch.randn(33, 5, generator=gen), torch.randn(5, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (weight, bias)]
    dense = [t.clone().requires_grad_() for t in (weight, bias)]
    out = binary_addmm(leaves[1], x, leaves[0])
    (out * upstream).sum().backward()
    (torch.addmm(dense[1], x, dense[0]) * upstream).sum().backward()
    assert out.requires_grad and calls == {"rows_sum": 1, "outer_add": 1}
    with torch.no_grad():
        assert torch.equal(binary_addmm(bias, x, weight), out)
    for leaf, reference in zip(leaves, dense, strict=True):
        torch.testing.assert_close(leaf.grad, reference.grad, **TOLERANCE)
    only_bias = bias.clone().requires_grad_()
    binary_addmm(only_bias, x, weight).sum().backward()
    torch.testing.assert_close(only_bias.grad, torch.full((5,), 7.0))
    assert calls == {"rows_sum": 3, "outer_add": 1}


def test_size_and_density_limits(monkeypatch):
    gen = generator(5)
    weight = torch.randn(20, 8, generator=gen)
    dense_rows, sparse_rows = binary((10, 20), 0.9, gen), binary((10, 20), 0.05, gen)
    sparse_rows[-1] = 0  # 5% ones
    counts = []
    jit = rows_module._jit()
    spy = SimpleNamespace(count_columns=jit.count_columns, list_columns=jit.list_columns, outer_add=jit.outer_add,
                          rows_sum=lambda *args: counts.append(1) or jit.rows_sum(*args))  # fmt: skip
    monkeypatch.setattr(rows_module, "_jit", lambda: spy)
    with binary_kernels(True):
        binary_addmm(None, sparse_rows, weight)
        assert not counts  # 10 x 20 x 8 < MIN_MULTIPLY_ADDS: the GEMM
        monkeypatch.setattr(rows_module, "MIN_MULTIPLY_ADDS", 0)
        binary_addmm(None, dense_rows, weight)
        assert not counts  # above MAX_DENSITY: the GEMM
        torch.testing.assert_close(binary_addmm(None, sparse_rows, weight), sparse_rows @ weight, **TOLERANCE)
        assert len(counts) == 1


def test_warm_up_compiles_the_loops_for_both_dtypes():
    rows_module.warm_up()
    jit = rows_module._jit()
    for loop in (jit.count_columns, jit.list_columns, jit.rows_sum, jit.outer_add):
        assert len(loop.signatures) >= 2  # float32 and float64


def test_switches(monkeypatch):
    previous = set_binary_kernels(None)
    try:
        monkeypatch.setenv("TRITON_KERNELS_BINARY_ROWS", "off")
        assert not binary_kernels_enabled()
        monkeypatch.setenv("TRITON_KERNELS_BINARY_ROWS", "on")
        assert binary_kernels_enabled()
        with binary_kernels(False):
            assert not binary_kernels_enabled()
        assert binary_kernels_enabled()
        monkeypatch.setenv("TRITON_KERNELS_BINARY_ROWS", "maybe")
        with pytest.raises(ValueError, match="TRITON_KERNELS_BINARY_ROWS must be on or off"):
            binary_kernels_enabled()
        with pytest.raises(ValueError, match="enabled must be a bool or None"):
            set_binary_kernels("yes")
        monkeypatch.setattr(rows_module, "_jit", lambda: None)  # numba missing: the dense ops
        with binary_kernels(True):
            assert not binary_kernels_enabled()
            x = torch.eye(3)
            assert torch.equal(binary_addmm(None, x, torch.ones(3, 2)), torch.ones(3, 2))
    finally:
        set_binary_kernels(previous)


def test_max_density_skips_the_listing(monkeypatch):
    """Rows denser than ``max_density`` give None after the counting pass (no listing pass), and a product of
    such rows runs the dense op with the same result."""
    gen = generator(5)
    dense_rows = (torch.rand(40, 300, generator=gen) < 0.5).float()
    sparse_rows = (torch.rand(40, 300, generator=gen) < 0.05).float()
    listed = []
    jit = rows_module._jit()
    monkeypatch.setattr(rows_module, "_jit", lambda: SimpleNamespace(
        count_columns=jit.count_columns, list_columns=lambda *a: listed.append(1) or jit.list_columns(*a),
        rows_sum=jit.rows_sum, outer_add=jit.outer_add))  # fmt: skip
    assert binary_columns(dense_rows, 0.3) is None and not listed
    columns = binary_columns(sparse_rows, 0.3)
    assert columns is not None and columns.density <= 0.3 and listed == [1]
    assert binary_columns(dense_rows) is not None  # no limit: listed whatever the density
    weight = torch.randn(300, 1000, generator=gen)
    torch.testing.assert_close(binary_addmm(None, dense_rows, weight), dense_rows @ weight, **TOLERANCE)
    assert listed == [1, 1]  # the unlimited call above listed; the product's call stopped after counting
