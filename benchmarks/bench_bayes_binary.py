"""Posterior predictive of a Bayesian binary MLP: S packed networks in one pass vs the same ensemble in fp32 torch.

For S posterior weight samples of a ``784 - hidden x depth - 10`` Bayesian binary MLP:

* ``packed``: :class:`pyro_bdl.networks.packed_ensemble.PackedBinaryEnsembleMLP`, the weights
  packed once; the first layer (real pixels, shared by the samples) one float product with the S
  weight matrices stacked, every later layer one batched ``xnor_gemm`` over the stacked sign
  words with the folded batch norm and sign packing in its epilogue.
* ``fp32``: the same S networks as dense float32 torch (the +-1 weights as floats, one
  ``x @ W^T`` for the first layer, ``torch.bmm`` over the samples for the others, scale,
  shift and sign between layers).

Both run round-robin in one process (``benchmarks/timing.py``), so load from other processes
hits them alike; the medians are reported. The headline ratio compares the packed ensemble of S
networks with ONE fp32 forward pass of the same network at the same batch (issue 13's target:
S = 8 packed below one fp32 forward at batch 1). Weights are random draws and the batch norms
random but plausible: the cost does not depend on the values, and both paths are checked to
give the same logits. Writes JSON (``runs/bench/`` unless ``--record`` or ``--out``).

    python benchmarks/bench_bayes_binary.py
    python benchmarks/bench_bayes_binary.py --hidden 4096 --depth 3 --rounds 20
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections.abc import Sequence

import torch
from timing import add_output_arguments, output_path, time_round_robin

from pyro_bdl.experiment import (
    add_common_arguments,
    environment,
    make_parser,
    require_positive,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.kernels import unpack_signs
from pyro_bdl.models.bayes_binary import BayesBinaryMLP
from pyro_bdl.networks.packed_ensemble import PackedBinaryEnsembleMLP, export_packed_ensemble


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, data=False, device="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 8, 32], help="ensemble sizes S")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per batch size (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    require_positive(parser, args, "hidden", "depth", "rounds")
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
    for norm in net.norms:  # random but plausible batch-norm statistics (pre-activations of +-1 sums)
        norm.running_mean.normal_(0.0, 0.5 * norm.num_features**0.5)
        norm.running_var.uniform_(0.5, 2.0).mul_(norm.num_features)
    weights = [torch.where(torch.rand(samples, *layer.weight_shape) < 0.5, -1.0, 1.0) for layer in net.layers]
    return export_packed_ensemble(net, weights).to(device)


def main(args: argparse.Namespace) -> dict:
    device = setup(args)
    env = environment(device)
    env["device"] = env.get("gpu", env["cpu"])
    implementations = {}
    for samples in args.samples:
        packed = make_ensemble(args, samples, device)
        dense = DenseEnsembleMLP(packed)
        probe = torch.rand(64, 784, device=device) * 2 - 1
        with torch.no_grad():
            torch.testing.assert_close(packed(probe), dense(probe), atol=1e-3, rtol=1e-4)
        implementations[f"packed_S{samples}"] = packed
        implementations[f"fp32_S{samples}"] = dense
    rows = []
    for batch in args.batches:
        steps = {name: (lambda x, net=net: float(net(x).sum())) for name, net in implementations.items()}
        inputs = [torch.rand(batch, 784, device=device) * 2 - 1 for _ in range(args.warmup + args.rounds)]
        with torch.no_grad():
            times = time_round_robin(steps, inputs, args.warmup, str(device))
        median = {name: statistics.median(values["wall"]) * 1e3 for name, values in times.items()}
        single = median.get("fp32_S1")
        for samples in args.samples:
            packed_ms, fp32_ms = median[f"packed_S{samples}"], median[f"fp32_S{samples}"]
            rows.append({"batch": batch, "samples": samples, "packed_ms": packed_ms, "fp32_ms": fp32_ms,
                         "fp32_over_packed": fp32_ms / packed_ms,
                         "packed_over_one_fp32_forward": None if single is None else packed_ms / single})  # fmt: skip
    print(f"device: {env['device']}  threads {torch.get_num_threads()}  MLP 784-{args.hidden}x{args.depth}-10")
    print(f"{'batch':>6} {'S':>4} {'packed':>11} {'fp32':>11} {'fp32/packed':>12} {'packed / one fp32 pass':>23}")
    for row in rows:
        versus = row["packed_over_one_fp32_forward"]
        print(f"{row['batch']:>6} {row['samples']:>4} {row['packed_ms']:>8.3f} ms {row['fp32_ms']:>8.3f} ms "
              f"{row['fp32_over_packed']:>11.2f}x {'' if versus is None else f'{versus:.2f}':>23}")  # fmt: skip
    slug = re.sub(r"[^A-Za-z0-9]+", "-", env["device"]).strip("-").lower()
    payload = {"environment": env, "config": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    write_results(output_path(args, f"bayes_binary-{slug}"), payload)
    return payload


if __name__ == "__main__":
    run_main(main, parse_args)
