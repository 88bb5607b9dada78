"""CPU path for packing and the XNOR GEMM (no Triton, no interpreter).

The GEMM runs compiled by numba (:mod:`triton_kernels.cpu_jit`: register- and cache-blocked
XOR-popcount for the host's instruction set, threaded, epilogue fused) whenever numba
imports. :func:`cpu_gemm_path` says which path runs; ``TRITON_KERNELS_CPU_GEMM=numpy`` forces
the fallback below, which needs nothing beyond numpy and torch.

The fallback has two strategies, picked by the number of activation rows M:

* few rows (M <= ``POPCOUNT_MAX_ROWS``): XOR the packed words and count bits with
  ``numpy.bitwise_count`` (the CPU's popcount instruction), 64 bits at a time. This reads
  the packed weights once per row: 32x fewer bytes than a float32 GEMV.
* more rows: expand both operands to {0, 1} int8 with ``numpy.unpackbits`` and run
  ``torch._int_mm`` (oneDNN's int8 GEMM, VNNI where the CPU has it), then recover the
  +-1 dot product from the {0, 1} one::

      sum_k sa_k * sb_k = K - 2 * (|a| + |b|) + 4 * (a . b)      with s = 1 - 2 * bit

  where |a| and |b| are the popcounts of the rows. The bits of the last word beyond ``k``
  are cleared first (the tail rule of :mod:`triton_kernels.pack`), so they add nothing
  to any term.

The bit layout is the one documented in :mod:`triton_kernels.pack`; unpacking through a
uint8 view relies on a little-endian host, which is checked.
"""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import torch

POPCOUNT_MAX_ROWS = 8
CPU_GEMM_PATHS = ("auto", "numba", "numpy")

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
    raise ImportError("triton_kernels.cpu assumes a little-endian host")


def cpu_gemm_path() -> str:
    """``"numba"`` (the compiled GEMM) or ``"numpy"`` (the fallback), per ``TRITON_KERNELS_CPU_GEMM``.

    ``auto`` (the default) takes numba when it imports; ``numba`` demands it (ImportError if
    absent); ``numpy`` forces the fallback.
    """
    choice = os.environ.get("TRITON_KERNELS_CPU_GEMM", "auto").strip().lower() or "auto"
    if choice not in CPU_GEMM_PATHS:
        raise ValueError(f"TRITON_KERNELS_CPU_GEMM must be one of {', '.join(CPU_GEMM_PATHS)}; got {choice!r}")
    if choice == "numpy":
        return "numpy"
    if choice == "numba" or _numba_importable():
        return "numba"
    return "numpy"


@cache
def _numba_importable() -> bool:
    try:
        import triton_kernels.cpu_jit  # noqa: F401 - the import is the check
    except ImportError:
        return False
    return True


def describe_cpu_gemm() -> str:
    """One line naming the CPU GEMM path that runs here, for ``triton-kernels info``."""
    if cpu_gemm_path() == "numba":
        from triton_kernels import cpu_jit

        return f"compiled ({cpu_jit.describe()})"
    reason = "forced by TRITON_KERNELS_CPU_GEMM" if _numba_importable() else "numba does not import here"
    return f"numpy fallback ({reason}): numpy.bitwise_count up to {POPCOUNT_MAX_ROWS} rows, else torch._int_mm"


def thread_count() -> int:
    """Threads the CPU path may use: ``torch.get_num_threads()`` (read at each call), at most the cores."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """The CPU path's pool of ``workers`` threads, one per process: a forked child (a DataLoader
    worker) gets its own, as the parent's threads do not exist there and work given to them would
    never run."""
    return _pool(workers, os.getpid())


@cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xnor-cpu")


def _as_numpy_words(words2d: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(words2d.detach().numpy())


def pack_signs_cpu(x2d: torch.Tensor) -> torch.Tensor:
    """(R, K) signed values -> (R, ceil(K/32)) int32 sign words."""
    rows, k = x2d.shape
    kw = math.ceil(k / 32)
    bits = (x2d < 0).numpy()
    packed = np.packbits(bits, axis=1, bitorder="little")  # (R, ceil(K/8)) uint8
    padded = np.zeros((rows, kw * 4), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return torch.from_numpy(padded.view(np.int32))


def _unpack_bits(words: np.ndarray, count: int) -> np.ndarray:
    """(R, KW) int32 -> (R, count) uint8 bits, count <= 32 * KW."""
    return np.unpackbits(words.view(np.uint8), axis=1, count=count, bitorder="little")


def unpack_signs_cpu(words2d: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """(R, KW) int32 -> (R, k) +-1 in ``dtype``."""
    bits = torch.from_numpy(_unpack_bits(_as_numpy_words(words2d), k).view(np.int8))
    return (1 - 2 * bits).to(dtype)


def _row_popcounts(words: np.ndarray) -> np.ndarray:
    return np.bitwise_count(words.view(np.uint32)).sum(axis=1, dtype=np.int32)


def _popcount_rows(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Few activation rows: count mismatching bits row by row, split over threads by N."""
    lane = np.uint64 if a.shape[1] % 2 == 0 else np.uint32
    a_lanes, b_lanes = a.view(lane), b.view(lane)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    threads = thread_count()
    pool = thread_pool(threads)
    chunk = max(256, math.ceil(b.shape[0] / threads))

    def run(start: int) -> None:
        block = b_lanes[start : start + chunk]
        for i in range(a_lanes.shape[0]):
            mismatches = np.bitwise_count(block ^ a_lanes[i]).sum(axis=1, dtype=np.int32)
            out[i, start : start + chunk] = k - 2 * mismatches

    list(pool.map(run, range(0, b.shape[0], chunk)))
    return out


def _int8_rows(a: np.ndarray, b: np.ndarray, k: int) -> torch.Tensor:
    """Many activation rows: {0,1} int8 GEMM plus popcount correction."""
    kp = a.shape[1] * 32
    a01 = torch.from_numpy(_unpack_bits(a, kp).view(np.int8))
    b01 = torch.from_numpy(_unpack_bits(b, kp).view(np.int8))
    both = torch._int_mm(a01, b01.t())
    pa = torch.from_numpy(_row_popcounts(a))
    pb = torch.from_numpy(_row_popcounts(b))
    return k - 2 * (pa[:, None] + pb[None, :]) + 4 * both


def _masked_words(words2d: torch.Tensor, k: int) -> np.ndarray:
    """(R, KW) int32 words as numpy, the bits beyond ``k`` cleared (copied only if one is set)."""
    words = _as_numpy_words(words2d)
    tail = k % 32
    if tail == 0 or words.size == 0:
        return words
    mask = np.int32((1 << tail) - 1)
    if np.any(words[:, -1] & ~mask):
        words = words.copy()
        words[:, -1] &= mask
    return words


def xnor_gemm_numpy(a_words: torch.Tensor, b_words: torch.Tensor, k: int) -> torch.Tensor:
    """The fallback: a (M, KW), b (N, KW) int32 sign words -> (M, N) int32, sum over the first k signs."""
    a, b = _masked_words(a_words, k), _masked_words(b_words, k)
    if a.shape[0] <= POPCOUNT_MAX_ROWS:
        return torch.from_numpy(_popcount_rows(a, b, k))
    return _int8_rows(a, b, k)
