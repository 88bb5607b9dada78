"""Timing helpers shared by the benchmark scripts (imported from beside them)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import triton


def time_cuda(fn: Callable[[], object], rep_ms: float) -> float:
    """Median milliseconds per call, from CUDA-graph replays (launch overhead excluded)."""
    return float(triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))


def time_cpu(fn: Callable[[], object], reps: int) -> float:
    """Median milliseconds per call of ``reps`` timed calls after one warm-up."""
    fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3
