"""Matrix products with a binary {0, 1} operand on the CPU: gather-sums of rows instead of a GEMM.

An RBM's training step and its AIS scoring multiply by binary matrices almost everywhere (data
rows, the chains' visible and hidden samples). For ``x`` (B, K) with entries in {0, 1}::

    binary_addmm(bias, x, w)          bias + x @ w         (B, N): out[r] = bias + sum_{k: x[r, k] = 1} w[k]
    binary_outer_add_(out, x, p, a)   out += a * x^T @ p   (K, N): out[k] += a * sum_{r: x[r, k] = 1} p[r]

``nnz(x) * N`` adds instead of ``B * K * N`` multiply-adds (binarised MNIST: 13% ones, about
2.5x faster than a one-thread float32 GEMM here; see ``docs/rbm.md``). The compiled loops are in
:mod:`triton_kernels.cpu_binary_rows_jit` (numba, imported and compiled on first use, cached on
disk); the ones of ``x`` are listed once (:func:`binary_columns`, which also checks that every
entry is 0 or 1) and the listing can serve both products of the same rows.

The dense torch op (``torch.addmm``, ``Tensor.addmm_``) is the fallback and gives the same numbers
up to rounding (the sums run in another order). It runs when the kernels are switched off
(:func:`set_binary_kernels`, :func:`binary_kernels`, or ``TRITON_KERNELS_BINARY_ROWS=off``), when
numba does not import, when autograd needs the gradient in ``x`` (grad mode on and ``x``
requiring grad; gradients in ``w`` and the bias are the kernels' own), for non-CPU or
non-float32/64 tensors, when ``x`` holds anything but 0 and 1, when ``x`` is dense enough that
the GEMM wins (more than :data:`MAX_DENSITY` ones, or :data:`MAX_DENSITY_TRANSPOSED` when ``w``
needs a transposed copy first, e.g. ``w = W.T``), or when the product is small (under
:data:`MIN_MULTIPLY_ADDS`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from functools import cache
from typing import NamedTuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

MAX_DENSITY = 0.3
"""Most ones per entry of ``x`` at which the kernels run with a row-contiguous ``w``. Measured crossover against a
one-thread float32 GEMM at 100 x 784 x 500 (the listing included) on the 2-core AMD EPYC of docs/rbm.md: about 0.33
for either product (0.45 for 100 x 500 x 784)."""

MAX_DENSITY_TRANSPOSED = 0.25
"""The same when ``w`` is not row-contiguous (a transposed view) and is copied first (crossover about 0.3)."""

MIN_MULTIPLY_ADDS = 1 << 18
"""Smallest product ``B * K * N`` the kernels take: below it the GEMM's few microseconds beat the kernels'
call overhead (about 10 us from Python)."""

MIN_ADDS_PER_THREAD = 1 << 21
"""Adds a thread's share of the columns must reach before a product is split over threads."""

_enabled: bool | None = None  # None: read TRITON_KERNELS_BINARY_ROWS at each call


class BinaryColumns(NamedTuple):
    """The ones of a binary ``x`` (B, K), column by column: column ``k``'s rows are
    ``rows[ptr[k] : ptr[k + 1] - 1]`` (numpy arrays, int64 and int32; one spare slot per column)."""

    ptr: np.ndarray
    rows: np.ndarray
    nnz: int
    shape: tuple[int, int]

    @property
    def density(self) -> float:
        """Ones per entry, in [0, 1]."""
        return self.nnz / max(1, self.shape[0] * self.shape[1])


def set_binary_kernels(enabled: bool | None) -> bool | None:
    """Switch the kernels on (True), off (False: the dense torch ops always), or back to the environment
    (None: ``TRITON_KERNELS_BINARY_ROWS``, ``on`` by default); returns the previous setting."""
    global _enabled
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"enabled must be a bool or None, got {enabled!r}")
    previous, _enabled = _enabled, enabled
    return previous


@contextlib.contextmanager
def binary_kernels(enabled: bool) -> Iterator[None]:
    """Within the block, the kernels on or off (:func:`set_binary_kernels`); restored after."""
    previous = set_binary_kernels(enabled)
    try:
        yield
    finally:
        set_binary_kernels(previous)


def binary_kernels_enabled() -> bool:
    """Whether the compiled kernels run here: switched on and numba importable."""
    if _enabled is None:
        choice = os.environ.get("TRITON_KERNELS_BINARY_ROWS", "on").strip().lower() or "on"
        if choice not in ("on", "off"):
            raise ValueError(f"TRITON_KERNELS_BINARY_ROWS must be on or off; got {choice!r}")
        if choice == "off":
            return False
    elif not _enabled:
        return False
    return _jit() is not None


@cache
def _jit():
    """The compiled module, or None when numba does not import."""
    try:
        from triton_kernels import cpu_binary_rows_jit
    except ImportError:
        return None
    return cpu_binary_rows_jit


def _eligible(*tensors: torch.Tensor, graph: tuple[torch.Tensor, ...] = ()) -> bool:
    """CPU float32/float64 tensors of one dtype, no autograd graph wanted through ``tensors`` (``graph``:
    tensors that may require grad)."""
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    grad = torch.is_grad_enabled()
    return all(t.device.type == "cpu" and t.dtype == dtype for t in (*tensors, *graph)) and not any(
        grad and t.requires_grad for t in tensors)  # fmt: skip


def binary_columns(x: torch.Tensor, max_density: float | None = None) -> BinaryColumns | None:
    """The ones of ``x`` (B, K) column by column, or None if the kernels cannot take ``x``: switched off,
    numba missing, not a 2-D CPU float32/float64 table, requiring grad in grad mode, or any entry that is
    neither 0 nor 1 (checked exactly, in the same pass). ``max_density``: None too when ``x`` has more ones
    per entry than that (decided after the counting pass, before the listing pass)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not _eligible(x) or not binary_kernels_enabled():
        return None
    return _listing(x, max_density)


def _listing(x: torch.Tensor, max_density: float | None) -> BinaryColumns | None:
    """:func:`binary_columns` of an ``x`` already found eligible (2-D, CPU float32/64, kernels on)."""
    batch, width = x.shape
    if batch >= 2**31:
        return None  # (row numbers are int32)
    array, ptr = x.detach().contiguous().numpy(), np.empty(width + 1, np.int64)
    nnz = _jit().count_columns(array, ptr)
    if nnz < 0 or (max_density is not None and nnz > max_density * batch * width):
        return None
    rows = np.empty(nnz + width, np.int32)
    _jit().list_columns(array, ptr, rows)
    return BinaryColumns(ptr, rows, nnz, (batch, width))


def _ranges(columns: int, adds: int) -> list[tuple[int, int]]:
    """Column ranges ``n0:n1``, one per thread used (one unless each share reaches MIN_ADDS_PER_THREAD)."""
    workers = max(1, min(torch.get_num_threads(), adds // MIN_ADDS_PER_THREAD, columns))
    if workers > 1:  # (os.cpu_count is slow in some containers: only asked when threads are wanted)
        from triton_kernels.cpu import thread_count

        workers = min(workers, thread_count())
    bounds = [columns * t // workers for t in range(workers + 1)]
    return list(itertools.pairwise(bounds))


def _run(kernel, ranges: list[tuple[int, int]], *args) -> None:
    """``kernel(*args, n0, n1)`` for each range, on the CPU path's pool beyond the first (the loops release
    the GIL)."""
    if len(ranges) == 1:  # (one thread: no pool, no import per call)
        kernel(*args, *ranges[0])
        return
    from triton_kernels.cpu import thread_pool

    futures = [thread_pool(len(ranges) - 1).submit(kernel, *args, n0, n1) for n0, n1 in ranges[1:]]
    kernel(*args, *ranges[0])
    for future in futures:
        future.result()


def _columns_for(x: torch.Tensor, columns: BinaryColumns | None, transposed: bool) -> BinaryColumns | None:
    """``columns`` (checked against ``x``'s shape) or a fresh listing (not made when ``x`` is too dense), None if
    the dense op should run."""
    limit = MAX_DENSITY_TRANSPOSED if transposed else MAX_DENSITY
    if columns is None:
        columns = _listing(x, limit)  # (the callers checked x, the operands and the switch)
    elif tuple(columns.shape) != tuple(x.shape):
        raise ValueError(f"columns list the ones of a {columns.shape} table, x is {tuple(x.shape)}")
    return None if columns is None or columns.density > limit else columns


def binary_addmm(bias: torch.Tensor | None, x: torch.Tensor, weight: torch.Tensor,
                 columns: BinaryColumns | None = None) -> torch.Tensor:  # fmt: skip
    """``bias + x @ weight`` (B, N) for ``x`` (B, K) binary, ``weight`` (K, N), ``bias`` (N,) or None.

    ``out[r] = bias + sum_{k: x[r, k] = 1} weight[k]`` by the compiled gather-sum where the kernels can
    take it (module docstring), else ``torch.addmm``. ``columns``: :func:`binary_columns` of ``x`` if
    already listed (its binary check is then trusted). Differentiable: in ``weight`` and ``bias`` by the
    kernels too (``dW = x^T g`` by :func:`binary_outer_add_`, ``db = sum_rows g``), so a product rounds
    the same with or without autograd; in ``x`` by the dense op.
    """
    if bias is None:
        bias = torch.zeros(weight.shape[-1], dtype=weight.dtype)
    if (x.dim() != 2 or weight.dim() != 2 or not _eligible(x, graph=(weight, bias))
            or not binary_kernels_enabled()):  # fmt: skip
        return torch.addmm(bias, x, weight)
    if x.shape[1] != weight.shape[0] or bias.shape != (weight.shape[1],):
        return torch.addmm(bias, x, weight)  # torch's own shape error
    if x.shape[0] * x.shape[1] * weight.shape[1] < MIN_MULTIPLY_ADDS:
        return torch.addmm(bias, x, weight)
    transposed = weight.stride(-1) != 1 or weight.stride(0) != weight.shape[1]
    listed = _columns_for(x, columns, transposed)
    if listed is None:
        return torch.addmm(bias, x, weight)
    if torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad):
        return _BinaryAddmm.apply(bias, x, weight, listed)
    return _rows_sum(bias, weight, listed)


def _rows_sum(bias: torch.Tensor, weight: torch.Tensor, listed: BinaryColumns) -> torch.Tensor:
    """``bias + x @ weight`` (B, N) by the compiled loop, ``x`` given by its listing."""
    w = weight.detach().contiguous().numpy()
    out = torch.empty(listed.shape[0], weight.shape[1], dtype=weight.dtype)
    ranges = _ranges(weight.shape[1], listed.nnz * weight.shape[1])
    _run(_jit().rows_sum, ranges, listed.ptr, listed.rows, w, bias.detach().contiguous().numpy(), out.numpy())
    return out


class _BinaryAddmm(torch.autograd.Function):
    """:func:`binary_addmm` with gradients in ``bias`` and ``weight``: ``dW = x^T g``, ``db = sum_rows g``."""

    @staticmethod
    def forward(ctx, bias, x, weight, listed):
        ctx.save_for_backward(x)
        ctx.listed, ctx.weight_shape = listed, weight.shape
        return _rows_sum(bias, weight, listed)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_bias = grad.sum(0) if needs[0] else None
        grad_weight = None
        if needs[2]:
            zeros = torch.zeros(ctx.weight_shape, dtype=grad.dtype)
            grad_weight = binary_outer_add_(zeros, x, grad, 1.0, ctx.listed)
        return grad_bias, None, grad_weight, None


def binary_outer_add_(out: torch.Tensor, x: torch.Tensor, p: torch.Tensor, alpha: float = 1.0,
                      columns: BinaryColumns | None = None) -> torch.Tensor:  # fmt: skip
    """``out += alpha * x^T @ p`` in place; ``out`` (K, N), ``x`` (B, K) binary, ``p`` (B, N); returns ``out``.

    ``out[k] += alpha * sum_{r: x[r, k] = 1} p[r]`` by the compiled scatter-add where the kernels can
    take it (and ``out`` is contiguous), else ``out.addmm_(x.T, p, alpha=alpha)``. ``columns`` as in
    :func:`binary_addmm`.
    """
    dense = (x.dim() != 2 or p.dim() != 2 or out.dim() != 2 or not out.is_contiguous()
             or not _eligible(out, x, p) or not binary_kernels_enabled()
             or out.shape != (x.shape[1], p.shape[1]) or x.shape[0] != p.shape[0]
             or x.shape[0] * out.numel() < MIN_MULTIPLY_ADDS)  # fmt: skip
    listed = None if dense else _columns_for(x, columns, False)
    if listed is None:
        return out.addmm_(x.T, p, alpha=alpha)
    target = out.detach().numpy()
    scale = target.dtype.type(alpha)
    ranges = _ranges(out.shape[1], listed.nnz * out.shape[1])
    _run(_jit().outer_add, ranges, listed.ptr, listed.rows, p.detach().contiguous().numpy(), scale, target)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) the four loops for float32 and float64 (about 2 s per dtype
    when compiled; the products below :data:`MIN_MULTIPLY_ADDS` never reach them, so they are called here
    directly). Does nothing without numba."""
    jit = _jit()
    if jit is None:
        return
    for dtype in (np.float32, np.float64):
        x, ptr, rows = np.array([[1.0, 0.0]], dtype), np.empty(3, np.int64), np.empty(3, np.int32)
        jit.count_columns(x, ptr)
        jit.list_columns(x, ptr, rows)
        jit.rows_sum(ptr, rows, np.ones((2, 3), dtype), np.zeros(3, dtype), np.zeros((1, 3), dtype), 0, 3)
        jit.outer_add(ptr, rows, np.ones((1, 3), dtype), dtype(1.0), np.zeros((2, 3), dtype), 0, 3)


__all__ = [
    "MAX_DENSITY", "MAX_DENSITY_TRANSPOSED", "MIN_MULTIPLY_ADDS", "BinaryColumns", "binary_addmm", "binary_columns",
    "binary_kernels", "binary_kernels_enabled", "binary_outer_add_", "set_binary_kernels", "warm_up",
]  # fmt: skip
