"""Timing and output helpers shared by the benchmark scripts (imported from beside them).

Where results go: a benchmark writes to ``runs/bench/<name>-<date>-<time>.json`` unless told
otherwise, so running one never overwrites the numbers recorded under version control in
``benchmarks/results/``; ``--record`` writes there on purpose, ``--out`` anywhere.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import triton

from pyro_bdl.experiment import write_results

RECORDED = Path(__file__).resolve().parent / "results"
"""The recorded numbers (under version control), cited by docs/benchmarks.md."""
RUNS = Path("runs") / "bench"


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out PATH`` and ``--record`` (mutually exclusive)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--out", type=Path, default=None, help=f"JSON path (default: {RUNS}/<name>-<date>-<time>.json)")
    group.add_argument(
        "--record", action="store_true", help=f"write into {RECORDED.name}/ beside this script, the recorded numbers"
    )


def output_path(args: argparse.Namespace, name: str) -> Path:
    """Where this run's JSON goes: ``--out``, else the recorded file ``name`` with ``--record``, else a run file."""
    if args.out is not None:
        return args.out
    if args.record:
        return RECORDED / f"{name}.json"
    return RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def machine_slug(name: str) -> str:
    """A machine's name as a file-name part: ``"AMD EPYC 9B45"`` -> ``"amd-epyc-9b45"``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def write_rows(args: argparse.Namespace, name: str, environment: dict, rows: list[dict]) -> dict:
    """Write ``{"environment", "config" (the flags), "rows"}`` to :func:`output_path`; returns it."""
    payload = {"environment": environment, "config": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    write_results(output_path(args, name), payload)
    return payload


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


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_round_robin(steps: dict[str, Callable], batches: list[torch.Tensor], warmup: int, device: str,
                     block: int = 1) -> dict:  # fmt: skip
    """Wall and thread-CPU seconds of every step of every method, ``block`` consecutive steps of each per round
    (1: one step each, interleaved), warm-up steps dropped.

    The order rotates by one method each round, so no method always runs right after the same other one. With
    ``block > 1`` each method runs that many steps back to back, as in a training loop, while machine load
    still falls on all methods alike from round to round.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in steps}
    names = list(steps)
    for round_index, start in enumerate(range(0, len(batches), block)):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            step = steps[name]
            for index in range(start, min(start + block, len(batches))):
                synchronize(device)
                wall, cpu = time.perf_counter(), time.thread_time()
                loss = step(batches[index])
                synchronize(device)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                if not loss == loss:  # NaN
                    raise RuntimeError(f"{name} produced a NaN loss at step {index}")
                if index >= warmup:
                    times[name]["wall"].append(wall)
                    times[name]["cpu"].append(cpu)
    return times
