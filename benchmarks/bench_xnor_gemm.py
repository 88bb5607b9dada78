"""Time the XNOR-popcount GEMM against torch matmul on the same +-1 problem.

On a GPU: every method of :func:`triton_kernels.xnor_gemm` (popcount, mma, expand, auto)
against ``torch.matmul`` in float32 and bfloat16 and ``torch._int_mm`` on int8, for M in
{1, 16, 64, 256, 1024, 4096, 8192} and N = K in {4096, 8192}, timed with CUDA-graph
replays (median); inputs rotate over enough copies to exceed the L2 cache, so small
problems are timed from device memory, not from cache. Also measures the card's popcount
ceiling with a microbenchmark.

On a CPU: the compiled CPU path (numba) and the numpy fallback against ``torch.matmul`` in
float32 and bfloat16 and ``torch._int_mm`` on +-1 int8 (8x the bytes of packed weights), for M
in {1, 4, 16, 64, 256, 1024} and N = K in {4096, 8192}, on torch's thread count (every core
unless ``OMP_NUM_THREADS`` says otherwise). Every implementation rotates over enough copies of
its operands to exceed 3x the last-level cache, so weights come from memory, not from a cache
the next layer would evict; ``xnor_cpu_warm`` repeats one copy (the packed weights of a layer
fit in cache, their float and int8 forms do not). Rounds are interleaved (each round, each
implementation in turn: a 20 ms pause, one untimed and three timed calls) so that load on the machine hits
all alike. Also measures the CPU's
XOR-popcount ceiling with a microbenchmark of the GEMM's instruction mix, and the first call's
compile time in a fresh process with an empty numba cache.

Each result is checked exact against the float32 product of the same signs before it is
timed. Prints a table and writes JSON (default ``runs/bench/xnor_gemm-<device>-<time>.json``;
``--record`` writes ``benchmarks/results/xnor_gemm-<device>.json``, the recorded numbers).

    python benchmarks/bench_xnor_gemm.py                 # whatever hardware is present
    python benchmarks/bench_xnor_gemm.py --quick         # a few shapes, for a smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import torch
import triton
import triton.language as tl
from timing import add_output_arguments, machine_slug, output_path, time_cuda
from triton.language.extra import libdevice

import triton_kernels
from pyro_bdl.experiment import cpu_model, make_parser, run_main, setup, write_results
from triton_kernels import cpu, pack_signs, xnor_gemm
from triton_kernels.cpu_jit import popcount
from triton_kernels.tuning import parse_shape

GPU_ROWS = (1, 16, 64, 256, 1024, 4096, 8192)
GPU_SIDES = (8192, 4096)
CPU_ROWS = (1, 4, 16, 64, 256, 1024)
CPU_SHAPES = tuple((m, side, side) for side in (4096, 8192) for m in CPU_ROWS)
QUICK_GPU_SHAPES = ((1, 4096, 4096), (64, 4096, 4096), (1024, 4096, 4096))
QUICK_CPU_SHAPES = ((1, 4096, 4096), (64, 4096, 4096))
CALLS_PER_BLOCK = 3
"""CPU: timed calls of one implementation in a row, after one untimed call, per round."""
BLOCK_PAUSE_S = 0.02
"""CPU: idle time before each implementation's block, so none starts on cores another's threads still spin on."""
CPU_IMPLS = ("torch_fp32", "torch_bf16", "torch_int8", "xnor_numpy", "xnor_cpu", "xnor_cpu_warm")
GPU_METHODS = ("popcount", "mma", "expand", "auto")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--quick", action="store_true", help="a few small shapes only")
    add_output_arguments(parser)
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=None, help="MxNxK shapes to run instead")
    parser.add_argument("--methods", nargs="+", choices=GPU_METHODS, default=GPU_METHODS, help="GPU methods")
    parser.add_argument("--rep-ms", type=float, default=25.0, help="GPU: graph replay time per measurement")
    parser.add_argument("--cpu-reps", type=int, default=7, help="CPU: timed rounds per shape (one call of each)")
    parser.add_argument("--cpu-impls", nargs="+", choices=CPU_IMPLS, default=CPU_IMPLS, help="CPU: what to time")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- timing


def rotating(call: Callable[..., object], argument_sets: list[tuple]) -> Callable[[], object]:
    """A no-argument function that cycles ``call`` through the argument sets."""
    state = {"next": 0}

    def run() -> object:
        arguments = argument_sets[state["next"] % len(argument_sets)]
        state["next"] += 1
        return call(*arguments)

    return run


def copies_to_beat_cache(bytes_per_set: int, device: torch.device) -> int:
    """How many input copies to rotate over so that together they are 3x the L2 cache."""
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20)
    return max(1, min(64, math.ceil(3 * l2 / max(bytes_per_set, 1))))


# ----------------------------------------------------------------------------- ceiling


@triton.jit
def _popcount_throughput_kernel(x_ptr, out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    """Eight independent popc chains per element; each step is 1 popc + 2 ALU ops."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x0 = tl.load(x_ptr + offs)
    x1, x2, x3 = x0 ^ 0x1234567, x0 ^ 0x2345678, x0 ^ 0x3456789
    x4, x5, x6, x7 = x0 + 1, x0 + 2, x0 + 3, x0 + 4
    for i in range(ITERS):
        x0 = libdevice.popc(x0) + (x0 ^ i)
        x1 = libdevice.popc(x1) + (x1 ^ i)
        x2 = libdevice.popc(x2) + (x2 ^ i)
        x3 = libdevice.popc(x3) + (x3 ^ i)
        x4 = libdevice.popc(x4) + (x4 ^ i)
        x5 = libdevice.popc(x5) + (x5 ^ i)
        x6 = libdevice.popc(x6) + (x6 ^ i)
        x7 = libdevice.popc(x7) + (x7 ^ i)
    tl.store(out_ptr + offs, x0 ^ x1 ^ x2 ^ x3 ^ x4 ^ x5 ^ x6 ^ x7)


def popcount_ceiling(device: torch.device, rep_ms: float) -> dict:
    """Measured 32-bit popcounts per second; x 32 bits x 2 ops gives binary TOP/s."""
    block, iters = 1024, 4096
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    elements = sms * 16 * block
    x = torch.randint(-(2**31), 2**31 - 1, (elements,), dtype=torch.int32, device=device)
    out = torch.empty_like(x)

    def run() -> None:
        _popcount_throughput_kernel[(elements // block,)](x, out, ITERS=iters, BLOCK=block, num_warps=8)

    ms = time_cuda(run, rep_ms)
    popc_per_s = elements * iters * 8 / (ms * 1e-3)
    return {"ms": ms, "popc_per_s": popc_per_s, "binary_tops": popc_per_s * 32 * 2 / 1e12}


# ----------------------------------------------------------------------------- problems


def random_signs(rows: int, cols: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    values = torch.randint(0, 2, (rows, cols), generator=generator, device="cpu", dtype=torch.int8)
    return (values * 2 - 1).to(device=device, dtype=torch.float32)


def tops(m: int, n: int, k: int, ms: float) -> float:
    """Tera-operations per second, 2 per multiply-accumulate."""
    return 2 * m * n * k / (ms * 1e-3) / 1e12


def bench_gpu_shape(
    m: int, n: int, k: int, device: torch.device, rep_ms: float, methods: Sequence[str] = GPU_METHODS
) -> list[dict]:
    generator = torch.Generator().manual_seed(m * 31 + n * 7 + k)
    x = random_signs(m, k, device, generator)
    w = random_signs(n, k, device, generator)
    expected = (x @ w.T).round().to(torch.int32)  # exact: |entries| <= K < 2**24
    a, b = pack_signs(x), pack_signs(w)
    rows = []

    def measure(impl: str, call: Callable[..., object], sets: list[tuple], bytes_per_set: int, check=None) -> None:
        row = {"m": m, "n": n, "k": k, "impl": impl}
        try:
            if check is not None:
                row["exact"] = bool(torch.equal(check(), expected))
            copies = copies_to_beat_cache(bytes_per_set, device)
            sets = [tuple(t.clone() for t in sets[0]) for _ in range(copies)]
            row["ms"] = time_cuda(rotating(call, sets), rep_ms)
            row["tops"] = tops(m, n, k, row["ms"])
        except Exception as error:  # report and go on: one failing variant must not hide the rest
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        rows.append(row)
        print(f"  {impl:>14}  " + (f"{row['ms'] * 1e3:10.1f} us" if "ms" in row else row["error"]), flush=True)

    measure("torch_fp32", torch.matmul, [(x, w.T)], x.nbytes + w.nbytes)
    xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)
    measure("torch_bf16", torch.matmul, [(xb, wb.T)], xb.nbytes + wb.nbytes)
    del xb, wb
    if m > 16:
        x8, w8 = x.to(torch.int8), w.to(torch.int8)
        measure("torch_int8", lambda p, q: torch._int_mm(p, q.t()), [(x8, w8)], x8.nbytes + w8.nbytes)
        del x8, w8
    packed_bytes = a.nbytes + b.nbytes
    for method in methods:
        if method == "expand" and not (m > 16 and n % 8 == 0):
            continue

        def call(p, q, method=method):
            return xnor_gemm(p, q, k, method=method)

        measure(f"xnor_{method}", call, [(a, b)], packed_bytes, check=lambda c=call: c(a, b))
    return rows


def last_level_cache_bytes() -> int:
    """The largest CPU cache (Linux sysfs), else 32 MiB."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * scale)
    return max(sizes, default=32 * 2**20)


def cpu_operands(m: int, n: int, k: int) -> tuple[dict[str, tuple], torch.Tensor]:
    """One operand set per implementation (signs as each consumes them) and the exact product."""
    generator = torch.Generator().manual_seed(m * 31 + n * 7 + k)
    x = random_signs(m, k, torch.device("cpu"), generator)
    w = random_signs(n, k, torch.device("cpu"), generator)
    expected = (x @ w.T).round().to(torch.int32)
    packed = (pack_signs(x), pack_signs(w))
    sets = {
        "torch_fp32": (x, w),
        "torch_bf16": (x.to(torch.bfloat16), w.to(torch.bfloat16)),
        "torch_int8": (x.to(torch.int8), w.to(torch.int8)),
        "xnor_numpy": packed,
        "xnor_cpu": packed,
        "xnor_cpu_warm": packed,
    }
    return sets, expected


def cpu_call(impl: str, k: int) -> Callable[..., torch.Tensor]:
    if impl == "torch_int8":
        return lambda p, q: torch._int_mm(p, q.t())
    if impl.startswith("torch"):
        return lambda p, q: p @ q.T
    if impl == "xnor_numpy":
        return lambda p, q: cpu.xnor_gemm_numpy(p, q, k)
    return lambda p, q: xnor_gemm(p, q, k)


def bench_cpu_shape(m: int, n: int, k: int, rounds: int, impls: Sequence[str] = CPU_IMPLS) -> list[dict]:
    """Median wall ms of each implementation, operands rotated past the cache.

    Each round runs every implementation in turn (the order rotating): a pause of
    ``BLOCK_PAUSE_S``, one untimed call, then ``CALLS_PER_BLOCK`` timed ones, so that a layer's
    steady state is timed, not the cost of sharing the cores with the previous implementation's
    still-spinning OpenMP threads, and load on the machine still falls on all alike.
    """
    sets, expected = cpu_operands(m, n, k)
    cache_bytes = last_level_cache_bytes()
    runs, rows = {}, []
    for impl in impls:
        operands = sets[impl]
        set_bytes = sum(t.nbytes for t in operands)
        copies = 1 if impl == "xnor_cpu_warm" else max(1, min(64, math.ceil(3 * cache_bytes / set_bytes)))
        call = cpu_call(impl, k)
        runs[impl] = rotating(call, [tuple(t.clone() for t in operands) for _ in range(copies)])
        exact = None
        if impl != "torch_bf16":  # bf16 rounds K-term sums; it is a speed baseline, not an exact one
            exact = bool(torch.equal(call(*operands).round().to(torch.int32), expected))
        rows.append({"m": m, "n": n, "k": k, "impl": impl, "exact": exact, "operand_copies": copies})
    for run in runs.values():  # warm-up: compile, first-touch the copies
        run()
    samples = {impl: [] for impl in runs}
    for round_index in range(rounds):
        order = list(runs)[round_index % len(runs) :] + list(runs)[: round_index % len(runs)]
        for impl in order:
            time.sleep(BLOCK_PAUSE_S)  # let the previous implementation's threads (torch's OpenMP ones spin) go idle
            runs[impl]()  # untimed
            for _ in range(CALLS_PER_BLOCK):
                start = time.perf_counter()
                runs[impl]()
                samples[impl].append(time.perf_counter() - start)
    for row in rows:
        row["ms"] = statistics.median(samples[row["impl"]]) * 1e3
        row["tops"] = tops(m, n, k, row["ms"])
        print(f"  {row['impl']:>14}  {row['ms']:10.3f} ms", flush=True)
    return rows


@numba.njit(nogil=True, cache=True)
def _xor_popcount_loop(words: np.ndarray, rounds: int) -> int:
    """The GEMM's inner instruction mix (XOR, popcount, add) on L1-resident words, vectorised."""
    total = 0
    for r in range(rounds):
        key = np.uint64(r)
        acc = 0
        for w in range(words.shape[0]):
            acc += np.int64(popcount(words[w] ^ key))
        total += acc
    return total


def cpu_popcount_ceiling(threads: int, seconds: float = 0.5, trials: int = 5) -> dict:
    """XOR-popcounts of 64-bit words per second on ``threads`` threads at once: the CPU GEMM's roofline.

    The best of ``trials`` runs of at least ``seconds`` each (a ceiling: interference only lowers it).
    """
    words = np.random.default_rng(0).integers(0, 2**63, size=1024, dtype=np.uint64)  # 8 KiB: L1
    _xor_popcount_loop(words, 1)
    rounds = 64
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(trials):
            while True:
                start = time.perf_counter()
                list(pool.map(_xor_popcount_loop, [words] * threads, [rounds] * threads))
                elapsed = time.perf_counter() - start
                if elapsed > seconds:
                    break
                rounds *= 2
            best = max(best, threads * rounds * words.size / elapsed)
    return {"threads": threads, "word_popcounts_per_s": best, "binary_tops": best * 64 * 2 / 1e12}


COMPILE_PROBE = "from triton_kernels import cpu_jit; print(cpu_jit.warm_up())"


def cpu_compile_seconds() -> dict:
    """Seconds of the first call's compilation in a fresh process (empty numba cache), and of a cached load."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        times = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", COMPILE_PROBE], env=env, capture_output=True, text=True)
            times.append(float(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else float("nan"))
    return {"compile_s": times[0], "cached_load_s": times[1]}


# ----------------------------------------------------------------------------- report


def add_speedups(rows: list[dict]) -> None:
    """Speed-up of every row over torch fp32, bf16 and int8 of the same shape."""
    baselines = {}
    for row in rows:
        if row["impl"] in ("torch_fp32", "torch_bf16", "torch_int8") and "ms" in row:
            baselines[(row["m"], row["n"], row["k"], row["impl"])] = row["ms"]
    for row in rows:
        for name in ("fp32", "bf16", "int8"):
            base = baselines.get((row["m"], row["n"], row["k"], f"torch_{name}"))
            if base is not None and "ms" in row:
                row[f"speedup_vs_{name}"] = base / row["ms"]


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'M':>5} {'N':>5} {'K':>5}  {'impl':<14} {'time':>11} {'TOP/s':>8} {'vs fp32':>8} {'vs bf16':>8} "
        f"{'vs int8':>8}  exact"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        if "ms" not in row:
            lines.append(f"{row['m']:>5} {row['n']:>5} {row['k']:>5}  {row['impl']:<14} {row.get('error', '')}")
            continue
        time_text = f"{row['ms'] * 1e3:8.1f} us" if row["ms"] < 1 else f"{row['ms']:8.3f} ms"
        vs32 = f"{row['speedup_vs_fp32']:7.2f}x" if "speedup_vs_fp32" in row else " " * 8
        vs16 = f"{row['speedup_vs_bf16']:7.2f}x" if "speedup_vs_bf16" in row else " " * 8
        vs8 = f"{row['speedup_vs_int8']:7.2f}x" if "speedup_vs_int8" in row else " " * 8
        exact = {True: "yes", False: "NO", None: ""}[row.get("exact")]
        lines.append(
            f"{row['m']:>5} {row['n']:>5} {row['k']:>5}  {row['impl']:<14} {time_text:>11} "
            f"{row['tops']:8.2f} {vs32} {vs16} {vs8}  {exact}"
        )
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "triton_kernels_cache": str(triton_kernels.default_cache_path()),
    }
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
        info["sm_count"] = torch.cuda.get_device_properties(device).multi_processor_count
    else:
        info["device"] = "CPU " + cpu_model()
        info["threads"] = torch.get_num_threads()
        info["cpu_gemm"] = cpu.describe_cpu_gemm()
        info["last_level_cache_bytes"] = last_level_cache_bytes()
    return info


def main(args: argparse.Namespace) -> dict:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = setup(args)
    env = environment(device)
    print(f"device: {env['device']}  torch {env['torch']}  triton {env['triton']}", flush=True)
    result: dict = {"environment": env, "rows": []}
    if device.type == "cuda":
        try:
            ceiling = popcount_ceiling(device, args.rep_ms)
            result["popcount_ceiling"] = ceiling
            rate = ceiling["popc_per_s"] / 1e12
            print(f"popcount ceiling: {rate:.2f} T popc/s = {ceiling['binary_tops']:.0f} binary TOP/s")
        except Exception as error:  # the ceiling is context; the GEMM numbers must still come
            result["popcount_ceiling_error"] = f"{type(error).__name__}: {error}"
            print("popcount ceiling failed:", result["popcount_ceiling_error"])
        shapes = QUICK_GPU_SHAPES if args.quick else [(m, s, s) for s in GPU_SIDES for m in GPU_ROWS]
    else:
        ceiling = cpu_popcount_ceiling(torch.get_num_threads())
        result["popcount_ceiling"] = ceiling
        print(f"popcount ceiling: {ceiling['word_popcounts_per_s'] / 1e9:.1f} G 64-bit XOR-popcounts/s = "
              f"{ceiling['binary_tops']:.2f} binary TOP/s on {ceiling['threads']} threads")  # fmt: skip
        if not args.quick:
            result["compile"] = cpu_compile_seconds()
            print(f"first call compiles in {result['compile']['compile_s']:.2f} s; "
                  f"later processes load it in {result['compile']['cached_load_s']:.2f} s")  # fmt: skip
        shapes = QUICK_CPU_SHAPES if args.quick else CPU_SHAPES
    slug = machine_slug(env["device"]) or device.type
    out = output_path(args, f"xnor_gemm-{slug}")
    shapes = args.shapes or shapes
    for m, n, k in shapes:
        print(f"M={m} N={n} K={k}", flush=True)
        if device.type == "cuda":
            result["rows"] += bench_gpu_shape(m, n, k, device, args.rep_ms, args.methods)
            torch.cuda.empty_cache()
        else:
            result["rows"] += bench_cpu_shape(m, n, k, args.cpu_reps, args.cpu_impls)
        write_json(result, out)  # after every shape, so an interrupted run keeps its rows
    print(format_table(result["rows"]))
    print(f"results written to {out}")
    return result


def write_json(result: dict, out: Path) -> None:
    """Add speed-ups and ceiling fractions, then write atomically."""
    add_speedups(result["rows"])
    if "popcount_ceiling" in result:
        for row in result["rows"]:
            if "tops" in row and row["impl"].startswith("xnor"):
                row["fraction_of_popcount_ceiling"] = row["tops"] / result["popcount_ceiling"]["binary_tops"]
    write_results(out, result, quiet=True)


if __name__ == "__main__":
    run_main(main, parse_args)
