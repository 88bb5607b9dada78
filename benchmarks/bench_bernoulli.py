"""Time Bernoulli sampling on the CPU: the compiled xoshiro256** loop against torch's generator, per call.

For probabilities ``p`` of each ``--shapes`` (rows x units; default the RBM's 100 x 784 visible and
100 x 500 hidden samples) in float32 and float64, one call each, round-robin, ``--calls`` rounds
(median milliseconds, 1 thread unless ``--threads``):

* ``torch rand_like < p``: ``(torch.rand_like(p) < p).to(p.dtype)``, the RBM's sampler before
  (mt19937);
* ``torch.bernoulli``: ``torch.bernoulli(p)``;
* ``compiled``: :func:`triton_kernels.cpu_bernoulli.bernoulli_bits` (one 64-bit draw of torch's
  generator as the seed, then xoshiro256** and the compare in one pass);
* ``sigmoid + compiled`` against ``sigmoid + torch rand_like < p``: the draw from pre-activations,
  as a Gibbs half-sweep makes it.

Each implementation's mean is checked against ``p``'s mean (within 6 standard errors) first.

    OMP_NUM_THREADS=1 python benchmarks/bench_bernoulli.py --out runs/bench_bernoulli.json
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import torch
from bench_binary_rows import round_robin
from timing import add_output_arguments, write_rows

from pyro_bdl.experiment import UsageError, add_common_arguments, environment, make_parser, run_main, setup
from triton_kernels import cpu_bernoulli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, data=False, seed=0)
    parser.add_argument("--shapes", nargs="+", default=["100x784", "100x500"], help="ROWSxUNITS of p")
    parser.add_argument("--calls", type=int, default=200, help="timed rounds")
    add_output_arguments(parser)
    return parser.parse_args(argv)


def _shape(text: str) -> tuple[int, int]:
    try:
        rows, units = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--shapes must be ROWSxUNITS, e.g. 100x784; got {text!r}") from None
    if min(rows, units) < 1:
        raise UsageError(f"--shapes must be positive, got {text!r}")
    return rows, units


def main(args: argparse.Namespace) -> list[dict]:
    shapes = [_shape(text) for text in args.shapes]
    if args.calls < 1:
        raise UsageError(f"--calls must be >= 1, got {args.calls}")
    setup(args)
    if not cpu_bernoulli.compiled_bernoulli_enabled():
        raise UsageError("the compiled sampler is off here (numba missing or TRITON_KERNELS_BINARY_ROWS=off)")
    cpu_bernoulli.warm_up()
    gen = torch.Generator().manual_seed(args.seed + 1)  # not the global generator's seed: its mt19937 stream
    rows = []
    for (batch, units), dtype in [(shape, dtype) for shape in shapes for dtype in (torch.float32, torch.float64)]:
        activation = torch.randn(batch, units, generator=gen, dtype=dtype) * 2
        p = torch.sigmoid(activation)
        ops = {
            "torch rand_like < p": lambda p=p: (torch.rand_like(p) < p).to(p.dtype),
            "torch.bernoulli": lambda p=p: torch.bernoulli(p),
            "compiled": lambda p=p: cpu_bernoulli.bernoulli_bits(p),
            "sigmoid + torch rand_like < p": lambda a=activation: (torch.rand_like(a) < torch.sigmoid(a)).to(a.dtype),
            "sigmoid + compiled": lambda a=activation: cpu_bernoulli.bernoulli_bits(torch.sigmoid(a)),
        }
        bound = 6 * math.sqrt(float((p * (1 - p)).sum())) / p.numel()
        for name, op in ops.items():
            mean = sum(float(op().double().mean()) for _ in range(20)) / 20
            if abs(mean - float(p.double().mean())) > bound / math.sqrt(20):
                raise RuntimeError(f"{name}: mean {mean:.5f} against p's {float(p.mean()):.5f}")
        times = round_robin(ops, args.calls)
        for name, ms in times.items():
            reference = times["sigmoid + torch rand_like < p" if name.startswith("sigmoid") else "torch rand_like < p"]
            rows.append({"shape": f"{batch} x {units}", "dtype": str(dtype).removeprefix("torch."),
                         "implementation": name, "ms": ms, "ns_per_element": ms * 1e6 / (batch * units),
                         "speedup": reference / ms})  # fmt: skip
    print(f"Bernoulli sampling, {torch.get_num_threads()} thread(s)")
    print("| p | dtype | implementation | ms | ns / element | torch / this |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['shape']} | {row['dtype']} | {row['implementation']} | {row['ms']:.3f} | "
              f"{row['ns_per_element']:.2f} | {row['speedup']:.2f}x |")  # fmt: skip
    write_rows(args, "bernoulli", environment(), rows)
    return rows


if __name__ == "__main__":
    run_main(main, parse_args)
