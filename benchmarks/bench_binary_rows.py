"""Time the binary-row kernels against the dense torch ops they replace, per op, at RBM shapes.

For random binary rows ``x`` (``--batch`` x K) at each ``--densities`` fraction of ones, a weight
(``--visible`` x ``--hidden``) and probabilities ``P``, one call each, round-robin, ``--calls``
rounds (median milliseconds, 1 thread unless ``--threads``):

* ``b + v.W`` (K = visible): ``torch.addmm`` against ``binary_addmm`` (listing included) and its
  loop alone given the listing;
* ``a + h.W^T`` (K = hidden): ``torch.addmm`` on the transposed view against ``binary_addmm``
  on the view (a transposed copy each call, as in a training step) and on a contiguous copy
  (made once, as in AIS);
* ``G += c v^T P``: ``addmm_`` against ``binary_outer_add_``;
* the listing ``binary_columns(v)`` alone.

Every kernel result is checked against the dense op (rtol = atol = 1e-5) before it is timed; the
kernels run at any density and size here (the limits that send dense or small products to the
GEMM are lifted).

    OMP_NUM_THREADS=1 python benchmarks/bench_binary_rows.py --out runs/bench_binary_rows.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from timing import add_output_arguments, write_rows

from pyro_bdl.experiment import UsageError, add_common_arguments, environment, make_parser, run_main, setup
from triton_kernels import cpu_binary_rows as kernels


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, data=False, seed=0)
    parser.add_argument("--batch", type=int, default=100, help="rows of x")
    parser.add_argument("--visible", type=int, default=784, help="visible units (the weight's rows)")
    parser.add_argument("--hidden", type=int, default=500, help="hidden units (the weight's columns)")
    parser.add_argument("--densities", type=float, nargs="+", default=[0.13, 0.23], help="fractions of ones")
    parser.add_argument("--calls", type=int, default=40, help="timed rounds")
    add_output_arguments(parser)
    return parser.parse_args(argv)


def round_robin(ops: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """Median milliseconds per call of each op, one call of each per round (one untimed round first)."""
    times: dict[str, list[float]] = {name: [] for name in ops}
    for round_ in range(calls + 1):
        for name, op in ops.items():
            start = time.perf_counter()
            op()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def products(v, h, listed, weight, weight_t, hidden_bias, visible_bias, probs, grad) -> dict:
    """The timed calls, keyed ``(op, implementation)``."""
    return {
        ("b + v.W", "dense addmm"): lambda: torch.addmm(hidden_bias, v, weight),
        ("b + v.W", "kernel"): lambda: kernels.binary_addmm(hidden_bias, v, weight),
        ("b + v.W", "kernel given the listing"): lambda: kernels.binary_addmm(hidden_bias, v, weight, listed),
        ("a + h.W^T", "dense addmm"): lambda: torch.addmm(visible_bias, h, weight.T),
        ("a + h.W^T", "kernel, transposed copy"): lambda: kernels.binary_addmm(visible_bias, h, weight.T),
        ("a + h.W^T", "kernel, W^T made once"): lambda: kernels.binary_addmm(visible_bias, h, weight_t),
        ("G += c v^T P", "dense addmm_"): lambda: grad.addmm_(v.T, probs, alpha=0.5),
        ("G += c v^T P", "kernel"): lambda: kernels.binary_outer_add_(grad, v, probs, 0.5),
        ("G += c v^T P", "kernel given the listing"): lambda: kernels.binary_outer_add_(grad, v, probs, 0.5, listed),
        ("listing of v", "binary_columns"): lambda: kernels.binary_columns(v),
    }


def main(args: argparse.Namespace) -> list[dict]:
    if min(args.batch, args.visible, args.hidden, args.calls) < 1 or not all(0 <= d <= 1 for d in args.densities):
        raise UsageError("--batch, --visible, --hidden, --calls must be >= 1 and --densities in [0, 1]")
    setup(args)
    if not kernels.binary_kernels_enabled():
        raise UsageError("the binary-row kernels are off here (numba missing or TRITON_KERNELS_BINARY_ROWS=off)")
    kernels.MAX_DENSITY = kernels.MAX_DENSITY_TRANSPOSED = 1.0
    kernels.MIN_MULTIPLY_ADDS = 0
    kernels.warm_up()
    gen = torch.Generator().manual_seed(args.seed)
    weight = torch.randn(args.visible, args.hidden, generator=gen) * 0.01
    hidden_bias, visible_bias = torch.randn(args.hidden, generator=gen), torch.randn(args.visible, generator=gen)
    probs, grad = torch.rand(args.batch, args.hidden, generator=gen), torch.zeros(args.visible, args.hidden)
    weight_t = weight.T.contiguous()
    rows = []
    for density in args.densities:
        v = (torch.rand(args.batch, args.visible, generator=gen) < density).float()
        h = (torch.rand(args.batch, args.hidden, generator=gen) < density).float()
        listed = kernels.binary_columns(v)
        checks = [
            (kernels.binary_addmm(hidden_bias, v, weight), torch.addmm(hidden_bias, v, weight)),
            (kernels.binary_addmm(visible_bias, h, weight.T), torch.addmm(visible_bias, h, weight.T)),
            (kernels.binary_outer_add_(torch.zeros_like(grad), v, probs, 0.5), 0.5 * v.T @ probs),
        ]  # fmt: skip
        for got, expected in checks:
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        ops = products(v, h, listed, weight, weight_t, hidden_bias, visible_bias, probs, grad)
        times = round_robin(ops, args.calls)
        dense = {op: ms for (op, impl), ms in times.items() if impl.startswith("dense")}
        for (op, impl), ms in times.items():
            rows.append({"density": density, "op": op, "implementation": impl, "ms": ms,
                         "speedup": dense[op] / ms if op in dense else None})  # fmt: skip
    shape = f"{args.batch} x {args.visible} x {args.hidden}"
    print(f"binary-row kernels against dense torch ops, {shape}, {torch.get_num_threads()} thread(s)")
    print("| ones | op | implementation | ms | dense / this |")
    print("|---|---|---|---|---|")
    for row in rows:
        speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        print(f"| {row['density']:.0%} | {row['op']} | {row['implementation']} | {row['ms']:.3f} | {speedup} |")
    write_rows(args, "binary_rows", environment(), rows)
    return rows


if __name__ == "__main__":
    run_main(main, parse_args)
