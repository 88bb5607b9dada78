"""The XNOR-popcount GEMM compiled for the host CPU by numba (LLVM, the host's own instruction set).

For a batch of ``S`` weight matrices (``S = 1`` for an ordinary layer)::

    out[s, m, n] = k - 2 * sum_w popcount(a[s, m, w] XOR b[s, n, w])

where the padding bits of the last word (beyond ``k``: the tail rule of
:mod:`triton_kernels.pack`) are counted and then taken back out, so they never count, nothing
is copied to clear them, and the loop over words keeps a trip count the vectoriser likes.

How it is fast:

* **Popcount instruction.** ``llvm.ctpop`` on 64-bit lanes; LLVM vectorises the loop over
  words for the host it runs on (``VPOPCNTQ`` on AVX-512 VPOPCNTDQ, ``CNT`` on NEON, a short
  bit-trick sequence on plain AVX2), so one source serves x86-64 and aarch64.
* **Register blocking.** A 4 x 4 tile of outputs per pass over the words: 8 loaded words feed
  16 XOR-popcount-adds, so large M is bound by popcount throughput, not by loads.
* **Cache blocking.** Each task walks a panel of ``PANEL_COLUMNS`` weight rows (a few tens of
  KiB: L1/L2 resident) over every activation row before moving on.
* **Threads.** Tasks over (batch, panel) pairs run on ``torch.get_num_threads()`` threads: the
  caller's and a pool's (the compiled functions release the GIL); problems too small to repay
  waking a thread run on the caller's alone.
* **Fused epilogue.** ``y = out * scale[n] + bias[n]`` in float32 (the same two roundings as
  the torch reference, no fused multiply-add), stored as float32 or as sign bits packed along n.

Compilation happens on first use (about a second per operand width, 64-bit words when the row
has an even number of int32 words, 32-bit otherwise) and is cached on disk by numba
(``cache=True``: next to this file, or in numba's user cache directory when that is read-only),
so later processes load the machine code instead of compiling it.
"""

from __future__ import annotations

import itertools
import math
import time

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic

from triton_kernels.cpu import thread_count, thread_pool

PANEL_COLUMNS = 64  # weight rows per task: a multiple of 32, so packed output words never straddle tasks
MIN_WORDS_PER_THREAD = 1 << 21  # a thread's share must outlast waking it (~75 us here): ~2M XOR-popcounts

OUT_INT32, OUT_FLOAT32, OUT_PACKED = 0, 1, 2

_jit = numba.njit(nogil=True, cache=True, boundscheck=False, fastmath=False)


@intrinsic
def popcount(typingctx, word):
    """``llvm.ctpop`` on one unsigned word, of the word's own width."""
    if not isinstance(word, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.call(builder.module.declare_intrinsic("llvm.ctpop", [args[0].type]), args)

    return word(word), codegen


@_jit
def _tile_4x4(a, b, i, j, words, last, pad, k, counts):
    """counts[i:i+4, j:j+4] = k - 2 popcount(a[i:i+4] ^ b[j:j+4]), summed over words, padding bits taken out."""
    a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
    b0, b1, b2, b3 = b[j], b[j + 1], b[j + 2], b[j + 3]
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.int64(0)
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.int64(0)
    for w in range(words):
        x0, x1, x2, x3 = a0[w], a1[w], a2[w], a3[w]
        y0, y1, y2, y3 = b0[w], b1[w], b2[w], b3[w]
        s00 += np.int64(popcount(x0 ^ y0))
        s01 += np.int64(popcount(x0 ^ y1))
        s02 += np.int64(popcount(x0 ^ y2))
        s03 += np.int64(popcount(x0 ^ y3))
        s10 += np.int64(popcount(x1 ^ y0))
        s11 += np.int64(popcount(x1 ^ y1))
        s12 += np.int64(popcount(x1 ^ y2))
        s13 += np.int64(popcount(x1 ^ y3))
        s20 += np.int64(popcount(x2 ^ y0))
        s21 += np.int64(popcount(x2 ^ y1))
        s22 += np.int64(popcount(x2 ^ y2))
        s23 += np.int64(popcount(x2 ^ y3))
        s30 += np.int64(popcount(x3 ^ y0))
        s31 += np.int64(popcount(x3 ^ y1))
        s32 += np.int64(popcount(x3 ^ y2))
        s33 += np.int64(popcount(x3 ^ y3))
    counts[i, j] = k - 2 * (s00 - np.int64(popcount((a0[last] ^ b0[last]) & pad)))
    counts[i, j + 1] = k - 2 * (s01 - np.int64(popcount((a0[last] ^ b1[last]) & pad)))
    counts[i, j + 2] = k - 2 * (s02 - np.int64(popcount((a0[last] ^ b2[last]) & pad)))
    counts[i, j + 3] = k - 2 * (s03 - np.int64(popcount((a0[last] ^ b3[last]) & pad)))
    counts[i + 1, j] = k - 2 * (s10 - np.int64(popcount((a1[last] ^ b0[last]) & pad)))
    counts[i + 1, j + 1] = k - 2 * (s11 - np.int64(popcount((a1[last] ^ b1[last]) & pad)))
    counts[i + 1, j + 2] = k - 2 * (s12 - np.int64(popcount((a1[last] ^ b2[last]) & pad)))
    counts[i + 1, j + 3] = k - 2 * (s13 - np.int64(popcount((a1[last] ^ b3[last]) & pad)))
    counts[i + 2, j] = k - 2 * (s20 - np.int64(popcount((a2[last] ^ b0[last]) & pad)))
    counts[i + 2, j + 1] = k - 2 * (s21 - np.int64(popcount((a2[last] ^ b1[last]) & pad)))
    counts[i + 2, j + 2] = k - 2 * (s22 - np.int64(popcount((a2[last] ^ b2[last]) & pad)))
    counts[i + 2, j + 3] = k - 2 * (s23 - np.int64(popcount((a2[last] ^ b3[last]) & pad)))
    counts[i + 3, j] = k - 2 * (s30 - np.int64(popcount((a3[last] ^ b0[last]) & pad)))
    counts[i + 3, j + 1] = k - 2 * (s31 - np.int64(popcount((a3[last] ^ b1[last]) & pad)))
    counts[i + 3, j + 2] = k - 2 * (s32 - np.int64(popcount((a3[last] ^ b2[last]) & pad)))
    counts[i + 3, j + 3] = k - 2 * (s33 - np.int64(popcount((a3[last] ^ b3[last]) & pad)))


@_jit
def _tile_1x4(a, b, i, j, words, last, pad, k, counts):
    """One activation row against four weight rows (the batch-1 GEMV and the row remainder)."""
    a0 = a[i]
    b0, b1, b2, b3 = b[j], b[j + 1], b[j + 2], b[j + 3]
    s0 = s1 = s2 = s3 = np.int64(0)
    for w in range(words):
        x = a0[w]
        s0 += np.int64(popcount(x ^ b0[w]))
        s1 += np.int64(popcount(x ^ b1[w]))
        s2 += np.int64(popcount(x ^ b2[w]))
        s3 += np.int64(popcount(x ^ b3[w]))
    x = a0[last]
    counts[i, j] = k - 2 * (s0 - np.int64(popcount((x ^ b0[last]) & pad)))
    counts[i, j + 1] = k - 2 * (s1 - np.int64(popcount((x ^ b1[last]) & pad)))
    counts[i, j + 2] = k - 2 * (s2 - np.int64(popcount((x ^ b2[last]) & pad)))
    counts[i, j + 3] = k - 2 * (s3 - np.int64(popcount((x ^ b3[last]) & pad)))


@_jit
def _tile_1x1(a, b, i, j, words, last, pad, k, counts):
    """One output (the column remainder)."""
    s = np.int64(0)
    for w in range(words):
        s += np.int64(popcount(a[i, w] ^ b[j, w]))
    counts[i, j] = k - 2 * (s - np.int64(popcount((a[i, last] ^ b[j, last]) & pad)))


@_jit
def _panel(a, b, n0, n1, pad, k, counts):
    """counts[:, n0:n1] for one weight panel: 4 x 4 tiles, then the row and column remainders."""
    m, words = a.shape
    last = words - 1
    m4 = m - m % 4
    n4 = n0 + (n1 - n0) - (n1 - n0) % 4
    for i in range(0, m4, 4):
        for j in range(n0, n4, 4):
            _tile_4x4(a, b, i, j, words, last, pad, k, counts)
    for i in range(m4, m):
        for j in range(n0, n4, 4):
            _tile_1x4(a, b, i, j, words, last, pad, k, counts)
    for i in range(m):
        for j in range(n4, n1):
            _tile_1x1(a, b, i, j, words, last, pad, k, counts)


@_jit
def _epilogue(counts, n0, n1, scale, bias, has_scale, has_bias, out_kind, out_float, out_words):
    """Columns n0:n1 of y = counts * scale + bias (float32, two roundings) stored as floats or sign bits."""
    m = counts.shape[0]
    for i in range(m):
        for j0 in range(n0, n1, 32):
            word = np.uint32(0)
            for j in range(j0, min(j0 + 32, n1)):
                y = np.float32(counts[i, j])
                if has_scale:
                    y = y * scale[j]
                if has_bias:
                    y = y + bias[j]
                if out_kind == 1:
                    out_float[i, j] = y
                elif y < 0:
                    word |= np.uint32(1) << np.uint32(j - j0)
            if out_kind == 2:
                out_words[i, j0 // 32] = np.int32(word)


@_jit
def _run_tasks(a, b, k, pad, first, stop, scale, bias, has_scale, has_bias, out_kind, counts, out_float, out_words):
    """Work items first..stop-1 of the flattened (batch, panel) grid; one call per thread."""
    n = b.shape[1]
    panels = (n + PANEL_COLUMNS - 1) // PANEL_COLUMNS
    for item in range(first, stop):
        s = item // panels
        n0 = (item % panels) * PANEL_COLUMNS
        n1 = min(n0 + PANEL_COLUMNS, n)
        _panel(a[s], b[s], n0, n1, pad, k, counts[s])
        if out_kind != 0:
            scale_s = scale[min(s, scale.shape[0] - 1)]
            bias_s = bias[min(s, bias.shape[0] - 1)]
            _epilogue(counts[s], n0, n1, scale_s, bias_s, has_scale, has_bias, out_kind, out_float[s], out_words[s])


def _lanes(words: torch.Tensor) -> np.ndarray:
    """(..., KW) int32 -> numpy unsigned lanes: 64-bit when KW is even, else 32-bit (no copy if contiguous)."""
    array = np.ascontiguousarray(words.detach().numpy())
    return array.view(np.uint64 if array.shape[-1] % 2 == 0 else np.uint32)


def _padding_bits(k: int, lane_bits: int) -> int:
    """The bits of the last lane beyond ``k`` (0 when ``k`` fills it)."""
    tail = k % lane_bits
    return ((1 << lane_bits) - 1) ^ ((1 << tail) - 1) if tail else 0


def _vector_per_batch(vector: torch.Tensor | None, s: int, n: int) -> np.ndarray:
    if vector is None:
        return np.zeros((1, n), dtype=np.float32)
    return np.ascontiguousarray(vector.detach().to(torch.float32).reshape(-1, n).numpy())


def xnor_gemm_jit(
    a: torch.Tensor,
    b: torch.Tensor,
    k: int,
    scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    out_kind: int = OUT_INT32,
    threads: int | None = None,
) -> torch.Tensor:
    """a (S, M, KW), b (S, N, KW) int32 sign words, k >= 1 -> (S, M, N) int32 or float32, or (S, M, ceil(N/32)) words.

    ``scale``/``bias``: None, (N,) or (S, N). ``out_kind``: ``OUT_INT32`` (exact counts),
    ``OUT_FLOAT32`` (``counts * scale + bias``) or ``OUT_PACKED`` (its sign bits along n).
    ``threads``: worker count (default ``torch.get_num_threads()``).
    """
    s, m, _ = a.shape
    n = b.shape[1]
    a_lanes, b_lanes = _lanes(a), _lanes(b)
    pad = a_lanes.dtype.type(_padding_bits(k, a_lanes.dtype.itemsize * 8))
    counts = np.empty((s, m, n), dtype=np.int32)
    out_float = np.empty((s, m, n) if out_kind == OUT_FLOAT32 else (1, 1, 1), dtype=np.float32)
    out_words = np.zeros((s, m, math.ceil(n / 32)) if out_kind == OUT_PACKED else (1, 1, 1), dtype=np.int32)
    scale_np, bias_np = _vector_per_batch(scale, s, n), _vector_per_batch(bias, s, n)
    items = s * math.ceil(n / PANEL_COLUMNS)
    work = s * m * n * a_lanes.shape[-1]
    workers = max(1, min(threads or thread_count(), items, work // MIN_WORDS_PER_THREAD))
    args = (scale_np, bias_np, scale is not None, bias is not None, out_kind, counts, out_float, out_words)
    bounds = [items * t // workers for t in range(workers + 1)]
    futures = [  # every run but the first goes to the pool; the calling thread runs the first meanwhile
        thread_pool(workers - 1).submit(_run_tasks, a_lanes, b_lanes, k, pad, lo, hi, *args)
        for lo, hi in itertools.pairwise(bounds[1:])
    ]
    _run_tasks(a_lanes, b_lanes, k, pad, bounds[0], bounds[1], *args)
    for future in futures:
        future.result()
    result = {OUT_INT32: counts, OUT_FLOAT32: out_float, OUT_PACKED: out_words}[out_kind]
    return torch.from_numpy(result)


def warm_up() -> float:
    """Compile (or load from numba's disk cache) every specialisation; returns the seconds it took."""
    start = time.perf_counter()
    for kw in (1, 2):  # 32-bit and 64-bit lanes
        words = torch.zeros(1, 4, kw, dtype=torch.int32)
        for kind in (OUT_INT32, OUT_FLOAT32, OUT_PACKED):
            xnor_gemm_jit(words, words, 32 * kw, torch.ones(4), torch.zeros(4), kind, threads=1)
    return time.perf_counter() - start


def describe() -> str:
    """One line: numba version, the CPU LLVM compiles for, and whether it has a vector popcount."""
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    vector_popcount = features.get("avx512vpopcntdq", False) or features.get("neon", False)
    threads = thread_count()
    return (
        f"numba {numba.__version__} JIT for {binding.get_host_cpu_name()} "
        f"(vector popcount: {'yes' if vector_popcount else 'no'}), {threads} thread{'s' * (threads != 1)}"
    )
