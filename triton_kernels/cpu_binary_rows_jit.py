"""The compiled loops of :mod:`triton_kernels.cpu_binary_rows` (numba; imported on first use only).

For a binary matrix ``x`` (B, K) with entries in {0, 1}, its ones are listed column by column
(:func:`count_columns`, then :func:`list_columns`): column ``k``'s rows ``r`` with ``x[r, k] = 1`` are
``rows[ptr[k] : ptr[k + 1] - 1]`` (one spare slot per column: the listing is branch-free, the
slot takes the writes of the zeros). Then, for a column range ``n0:n1``::

    rows_sum     out[r, n]  = bias[n] + sum_{k: x[r, k] = 1} w[k, n]          = (bias + x @ w)[r, n]
    outer_add    out[k, n] += alpha * sum_{r: x[r, k] = 1} p[r, n]             = (out + alpha x^T @ p)[k, n]

Both walk ``k`` in the outer loop, so each weight row ``w[k]`` (or each output row ``out[k]``) is
read once, and adds it (a row of ``p``) into the rows of ``out`` (into a scratch row) that have a
one in column ``k``: ``nnz(x) * (n1 - n0)`` adds instead of ``B * K * (n1 - n0)`` multiply-adds,
contiguous rows the vectoriser turns into SIMD adds. Sums run in float (the operands' dtype), in
the order bias first, then ``k`` ascending: the dense GEMM's result up to rounding.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(nogil=True, cache=True, boundscheck=False, fastmath=False)


@_jit
def count_columns(x, ptr):
    """Fill ``ptr`` (K + 1,) int64 for ``x`` (B, K) C-contiguous (module docstring: ``ptr[K] = nnz + K``);
    returns ``nnz``, or -1 (``ptr`` left unfilled) if an entry is neither 0 nor 1."""
    batch, width = x.shape
    count = np.zeros(width, np.int64)
    bad = 0
    for r in range(batch):
        row = x[r]
        for k in range(width):
            value = row[k]
            count[k] += value != 0
            bad |= (value != 0) & (value != 1)
    if bad:
        return -1
    ptr[0] = 0
    for k in range(width):
        ptr[k + 1] = ptr[k] + count[k] + 1
    return ptr[width] - width


@_jit
def list_columns(x, ptr, rows):
    """Fill ``rows`` (nnz + K,) int32 with the rows of each column's ones, in ``ptr``'s layout (branch-free:
    every entry writes its row into its column's next slot, a one moves the slot on)."""
    batch, width = x.shape
    fill = ptr[:-1].copy()
    for r in range(batch):
        row = x[r]
        for k in range(width):
            slot = fill[k]
            rows[slot] = r
            fill[k] = slot + (row[k] != 0)


@_jit
def rows_sum(ptr, rows, weight, bias, out, n0, n1):
    """``out[r, n0:n1] = bias[n0:n1] + sum_{k: x[r, k] = 1} weight[k, n0:n1]``; weight (K, N), out (B, N)."""
    width = n1 - n0  # loops over range(width) on slices: indices numba knows are >= 0, so the adds vectorise
    start = bias[n0:n1]
    for r in range(out.shape[0]):
        target = out[r, n0:n1]
        for n in range(width):
            target[n] = start[n]
    for k in range(weight.shape[0]):
        source = weight[k, n0:n1]
        for t in range(ptr[k], ptr[k + 1] - 1):
            target = out[rows[t], n0:n1]
            for n in range(width):
                target[n] += source[n]


@_jit
def outer_add(ptr, rows, p, alpha, out, n0, n1):
    """``out[k, n0:n1] += alpha * sum_{r: x[r, k] = 1} p[r, n0:n1]``; p (B, N), out (K, N)."""
    width = n1 - n0
    total = np.empty(width, out.dtype)
    for k in range(out.shape[0]):
        if ptr[k + 1] - 1 == ptr[k]:
            continue
        total[:] = 0
        for t in range(ptr[k], ptr[k + 1] - 1):
            source = p[rows[t], n0:n1]
            for n in range(width):
                total[n] += source[n]
        target = out[k, n0:n1]
        for n in range(width):
            target[n] += alpha * total[n]
