"""Posterior predictive of a Bayesian binary MLP: S packed networks in one pass vs the same ensemble in fp32 torch.

For S posterior weight samples of a ``784 - hidden x depth - 10`` Bayesian binary MLP, on
uint8 pixels (random bytes 0..255: no blank image borders to skip, the kernels' worst case):

* ``packed``: :class:`pyro_bdl.networks.packed_ensemble.PackedBinaryEnsembleMLP` on the uint8
  pixels: the first layer BinaryNet's bit planes (8 AND-popcount products with the S stacked
  packed weight matrices, exact in integers), every later layer an XNOR-popcount product over
  the S stacked sign words, folded batch norms and sign packing fused; on the CPU the whole
  S-network forward is one compiled call (:mod:`triton_kernels.cpu_mlp`).
* ``packed_float``: the same ensemble given the pixels as floats: the first layer one float
  product with the S weight matrices stacked (the route before the bit planes).
* ``fp32``: the same S networks as dense float32 torch on the same pixel values as floats (the
  +-1 weights as floats, one ``x @ W^T`` for the first layer, ``torch.bmm`` over the samples
  for the others, scale, shift and sign between layers).

The pixels stand for themselves (``input_range=(0, 255)``), so every float product is an exact
integer and the three give identical logits, which is checked (``torch.equal``) before timing.
All run round-robin in one process (``benchmarks/timing.py``), so load from other processes hits
them alike; the medians are reported (batches up to 16 get 10x the rounds: they are cheap and
noisier). The headline ratio compares the packed ensemble of S networks with ONE fp32 forward
pass of the same network at the same batch (issue 13's target: S = 8 packed below one fp32
forward at batch 1). Weights are random draws and the batch norms random but plausible: the
cost does not depend on their values. Writes JSON (``runs/bench/`` unless ``--record`` or ``--out``).

    python benchmarks/bench_bayes_binary.py
    python benchmarks/bench_bayes_binary.py --hidden 4096 --depth 3 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from timing import add_output_arguments, machine_slug, time_round_robin, write_rows

from pyro_bdl.experiment import (
    add_common_arguments,
    environment,
    make_parser,
    require_positive,
    run_main,
    setup,
)
from pyro_bdl.kernels import unpack_signs
from pyro_bdl.models.bayes_binary import BayesBinaryMLP
from pyro_bdl.networks.packed_ensemble import PackedBinaryEnsembleMLP, export_packed_ensemble

PIXEL_SPREAD = 74.0  # standard deviation of a uniform byte: first-layer sums are this much wider than +-1 sums


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, data=False, device="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 8, 32], help="ensemble sizes S")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--rounds", type=int, default=15,
                        help="timed rounds per batch size (after --warmup); 10x for batches up to 16")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5,
                        help=f"back-to-back calls per method and round for batches up to {SMALL_BATCH}")  # fmt: skip
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    require_positive(parser, args, "hidden", "depth", "rounds", "repeats")
    if args.warmup < 0 or min(args.samples) < 1 or min(args.batches) < 1:
        parser.error("--warmup must be non-negative, --samples and --batches positive")
    return args


class DenseEnsembleMLP(torch.nn.Module):
    """The ensemble of a :class:`PackedBinaryEnsembleMLP` as float32 torch (the baseline); logits (S, B, classes)."""

    def __init__(self, packed: PackedBinaryEnsembleMLP) -> None:
        super().__init__()
        self.samples, self.widths, self.depth = packed.num_samples, packed.widths, packed.depth
        self.first = packed.first_weight.float()
        self.weights = [unpack_signs(getattr(packed, f"words_{i}"), packed.widths[i - 1], dtype=torch.float32)
                        .transpose(1, 2).contiguous() for i in range(1, packed.depth)]  # fmt: skip
        self.folds = [(getattr(packed, f"scale_{i}").unsqueeze(-2), getattr(packed, f"shift_{i}").unsqueeze(-2))
                      for i in range(packed.depth)]  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x @ self.first.T).reshape(x.shape[0], self.samples, -1).transpose(0, 1)
        for index in range(self.depth):
            if index > 0:
                h = torch.bmm(h, self.weights[index - 1])
            scale, shift = self.folds[index]
            h = h * scale + shift
            if index < self.depth - 1:
                h = torch.where(h < 0, -1.0, 1.0)
        return h


def make_ensemble(args: argparse.Namespace, samples: int, device: torch.device) -> PackedBinaryEnsembleMLP:
    torch.manual_seed(samples)
    net = BayesBinaryMLP(784, args.hidden, args.depth, 10)
    for index, norm in enumerate(net.norms):  # random but plausible statistics of the pre-activations
        spread = norm.num_features**0.5 * (PIXEL_SPREAD if index == 0 else 1.0)  # first layer: pixel sums
        norm.running_mean.normal_(0.0, 0.5 * spread)
        norm.running_var.uniform_(0.5, 2.0).mul_(spread**2)
    weights = [torch.where(torch.rand(samples, *layer.weight_shape) < 0.5, -1.0, 1.0) for layer in net.layers]
    return export_packed_ensemble(net, weights, input_range=(0.0, 255.0)).to(device)


SMALL_BATCH = 16  # batches up to this get 10x the rounds and --repeats calls per round


def ratio(median: dict[str, float], numerator: str, denominator: str) -> float | None:
    return median[numerator] / median[denominator] if denominator in median else None


def rounds_for(args: argparse.Namespace, batch: int) -> int:
    return args.rounds * (10 if batch <= SMALL_BATCH else 1)


class Repeated:
    """A timed step that calls ``call`` ``repeats`` times back to back on one batch.

    Keeps, per round, the first call's wall seconds (``cold``: the other methods ran just
    before and evicted its weights from the caches) and the median of the others (``warm``:
    one network serving request after request). One call per round: both are that call.
    """

    def __init__(self, call: Callable[[tuple], float], repeats: int) -> None:
        self.call, self.repeats = call, repeats
        self.cold: list[float] = []
        self.warm: list[float] = []

    def __call__(self, x: tuple) -> float:
        seconds = []
        for _ in range(self.repeats):
            start = time.perf_counter()
            value = self.call(x)
            seconds.append(time.perf_counter() - start)
        self.cold.append(seconds[0])
        self.warm.append(statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0])
        return value


def main(args: argparse.Namespace) -> dict:
    device = setup(args)
    env = environment(device)
    env["device"] = env.get("gpu", env["cpu"])
    calls = {}  # each takes (pixels uint8, the same pixels as float32)
    for samples in args.samples:
        packed = make_ensemble(args, samples, device)
        dense = DenseEnsembleMLP(packed)
        probe = torch.randint(0, 256, (64, 784), dtype=torch.uint8, device=device)
        with torch.no_grad():
            expected = dense(probe.float())
            for route, logits in (("bit planes", packed(probe)), ("float", packed(probe.float()))):
                if not torch.equal(logits, expected):
                    raise RuntimeError(f"S={samples}: the packed {route} route's logits differ from fp32's")
        calls[f"packed_S{samples}"] = lambda x, net=packed: net(x[0])[-1, -1, -1].item()
        calls[f"packed_float_S{samples}"] = lambda x, net=packed: net(x[1])[-1, -1, -1].item()
        calls[f"fp32_S{samples}"] = lambda x, net=dense: net(x[1])[-1, -1, -1].item()
    rows = []
    for batch in args.batches:
        repeats = args.repeats if batch <= SMALL_BATCH else 1
        steps = {name: Repeated(call, repeats) for name, call in calls.items()}
        pixels = [torch.randint(0, 256, (batch, 784), dtype=torch.uint8, device=device)
                  for _ in range(args.warmup + rounds_for(args, batch))]  # fmt: skip
        with torch.no_grad():
            time_round_robin(steps, [(p, p.float()) for p in pixels], args.warmup, str(device))
        warm = {name: statistics.median(step.warm[args.warmup :]) * 1e3 for name, step in steps.items()}
        cold = {name: statistics.median(step.cold[args.warmup :]) * 1e3 for name, step in steps.items()}
        for samples in args.samples:
            packed, fp32, single = (f"packed_S{samples}", f"fp32_S{samples}", "fp32_S1")
            rows.append({"batch": batch, "samples": samples, "repeats": repeats, "packed_ms": warm[packed],
                         "packed_float_ms": warm[f"packed_float_S{samples}"], "fp32_ms": warm[fp32],
                         "packed_cold_ms": cold[packed], "fp32_cold_ms": cold[fp32],
                         "fp32_over_packed": warm[fp32] / warm[packed],
                         "packed_over_one_fp32_forward": ratio(warm, packed, single),
                         "cold_packed_over_one_fp32_forward": ratio(cold, packed, single)})  # fmt: skip
    print(f"device: {env['device']}  threads {torch.get_num_threads()}  MLP 784-{args.hidden}x{args.depth}-10")
    print("warm: median of back-to-back calls; cold: each round's first call, after the other methods ran")
    print(f"{'batch':>6} {'S':>4} {'packed':>11} {'packed float':>13} {'fp32':>11} {'fp32/packed':>12} "
          f"{'packed / one fp32 pass':>23} {'(cold)':>7}")  # fmt: skip
    for row in rows:
        versus, cold = (row[key] for key in ("packed_over_one_fp32_forward", "cold_packed_over_one_fp32_forward"))
        versus, cold = ("" if value is None else f"{value:.2f}" for value in (versus, cold))
        print(f"{row['batch']:>6} {row['samples']:>4} {row['packed_ms']:>8.3f} ms {row['packed_float_ms']:>10.3f} ms "
              f"{row['fp32_ms']:>8.3f} ms {row['fp32_over_packed']:>11.2f}x {versus:>23} {cold:>7}")  # fmt: skip
    return write_rows(args, f"bayes_binary-{machine_slug(env['device'])}", env, rows)


if __name__ == "__main__":
    run_main(main, parse_args)
