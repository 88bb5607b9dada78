"""Time the XNOR-popcount GEMM against torch matmul on the same +-1 problem.

On a GPU: every method of :func:`triton_kernels.xnor_gemm` (popcount, mma, expand, auto)
against ``torch.matmul`` in float32 and bfloat16 and ``torch._int_mm`` on int8, for M in
{1, 16, 64, 256, 1024, 4096, 8192} and N = K in {4096, 8192}, timed with CUDA-graph
replays (median); inputs rotate over enough copies to exceed the L2 cache, so small
problems are timed from device memory, not from cache. Also measures the card's popcount
ceiling with a microbenchmark. On a CPU: the fast CPU path against float32 and int8 torch.

Each result is checked exact against the float32 product of the same signs before it is
timed. Prints a table and writes JSON (default ``runs/bench/xnor_gemm-<device>-<time>.json``;
``--record`` writes ``benchmarks/results/xnor_gemm-<device>.json``, the recorded numbers).

    python benchmarks/bench_xnor_gemm.py                 # whatever hardware is present
    python benchmarks/bench_xnor_gemm.py --quick         # a few shapes, for a smoke run
"""

from __future__ import annotations

import argparse
import math
import platform
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import triton
import triton.language as tl
from timing import add_output_arguments, output_path, time_cpu, time_cuda
from triton.language.extra import libdevice

import triton_kernels
from pyro_bdl.experiment import cpu_model, make_parser, run_main, setup, write_results
from triton_kernels import pack_signs, xnor_gemm
from triton_kernels.tuning import parse_shape

GPU_ROWS = (1, 16, 64, 256, 1024, 4096, 8192)
GPU_SIDES = (8192, 4096)
CPU_SHAPES = ((1, 8192, 8192), (64, 8192, 8192), (1, 4096, 4096), (16, 4096, 4096), (256, 4096, 4096))
QUICK_GPU_SHAPES = ((1, 4096, 4096), (64, 4096, 4096), (1024, 4096, 4096))
QUICK_CPU_SHAPES = ((1, 4096, 4096), (64, 4096, 4096))
GPU_METHODS = ("popcount", "mma", "expand", "auto")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--quick", action="store_true", help="a few small shapes only")
    add_output_arguments(parser)
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=None, help="MxNxK shapes to run instead")
    parser.add_argument("--methods", nargs="+", choices=GPU_METHODS, default=GPU_METHODS, help="GPU methods")
    parser.add_argument("--rep-ms", type=float, default=25.0, help="GPU: graph replay time per measurement")
    parser.add_argument("--cpu-reps", type=int, default=7, help="CPU: timed repetitions per measurement")
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


def bench_cpu_shape(m: int, n: int, k: int, reps: int) -> list[dict]:
    generator = torch.Generator().manual_seed(m * 31 + n * 7 + k)
    x = random_signs(m, k, torch.device("cpu"), generator)
    w = random_signs(n, k, torch.device("cpu"), generator)
    expected = (x @ w.T).round().to(torch.int32)
    a, b = pack_signs(x), pack_signs(w)
    x8, w8 = x.to(torch.int8), w.to(torch.int8)
    rows = []
    impls = {
        "torch_fp32": (lambda: x @ w.T, None),
        "torch_int8": (lambda: torch._int_mm(x8, w8.t()), None),
        "xnor_cpu": (lambda: xnor_gemm(a, b, k), lambda: xnor_gemm(a, b, k)),
    }
    for impl, (call, check) in impls.items():
        row = {"m": m, "n": n, "k": k, "impl": impl}
        if check is not None:
            row["exact"] = bool(torch.equal(check(), expected))
        row["ms"] = time_cpu(call, reps)
        row["tops"] = tops(m, n, k, row["ms"])
        rows.append(row)
        print(f"  {impl:>14}  {row['ms']:10.2f} ms", flush=True)
    return rows


# ----------------------------------------------------------------------------- report


def add_speedups(rows: list[dict]) -> None:
    """Speed-up of every row over torch fp32 and bf16 of the same shape."""
    baselines = {}
    for row in rows:
        if row["impl"] in ("torch_fp32", "torch_bf16") and "ms" in row:
            baselines[(row["m"], row["n"], row["k"], row["impl"])] = row["ms"]
    for row in rows:
        for name in ("fp32", "bf16"):
            base = baselines.get((row["m"], row["n"], row["k"], f"torch_{name}"))
            if base is not None and "ms" in row:
                row[f"speedup_vs_{name}"] = base / row["ms"]


def format_table(rows: list[dict]) -> str:
    header = f"{'M':>5} {'N':>5} {'K':>5}  {'impl':<14} {'time':>11} {'TOP/s':>8} {'vs fp32':>8} {'vs bf16':>8}  exact"
    lines = [header, "-" * len(header)]
    for row in rows:
        if "ms" not in row:
            lines.append(f"{row['m']:>5} {row['n']:>5} {row['k']:>5}  {row['impl']:<14} {row.get('error', '')}")
            continue
        time_text = f"{row['ms'] * 1e3:8.1f} us" if row["ms"] < 1 else f"{row['ms']:8.3f} ms"
        vs32 = f"{row['speedup_vs_fp32']:7.2f}x" if "speedup_vs_fp32" in row else " " * 8
        vs16 = f"{row['speedup_vs_bf16']:7.2f}x" if "speedup_vs_bf16" in row else " " * 8
        exact = {True: "yes", False: "NO", None: ""}[row.get("exact")]
        lines.append(
            f"{row['m']:>5} {row['n']:>5} {row['k']:>5}  {row['impl']:<14} {time_text:>11} "
            f"{row['tops']:8.2f} {vs32} {vs16}  {exact}"
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
        shapes = QUICK_CPU_SHAPES if args.quick else CPU_SHAPES
    slug = re.sub(r"[^A-Za-z0-9]+", "-", env["device"]).strip("-").lower() or device.type
    out = output_path(args, f"xnor_gemm-{slug}")
    shapes = args.shapes or shapes
    for m, n, k in shapes:
        print(f"M={m} N={n} K={k}", flush=True)
        if device.type == "cuda":
            result["rows"] += bench_gpu_shape(m, n, k, device, args.rep_ms, args.methods)
            torch.cuda.empty_cache()
        else:
            result["rows"] += bench_cpu_shape(m, n, k, args.cpu_reps)
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
