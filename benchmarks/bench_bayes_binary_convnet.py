"""Posterior predictive of a Bayesian binary ConvNet: S packed ConvNets in one batched pass vs one by one.

For S posterior weight samples of a :class:`~pyro_bdl.models.bayes_binary.BayesBinaryConvNet`
(``(C 3x3 BN) - (2C 3x3 MP2 BN) - (2C 3x3 MP2 BN) - (hidden BN) - (10 BN)`` on 28 x 28 images):

* ``batched``: :class:`pyro_bdl.networks.PackedBinaryEnsembleConvNet`, one pass for all S
  (one float first convolution with S * C channels, batched XNOR products after it);
* ``loop``: the S :class:`~pyro_bdl.networks.PackedBinaryConvNet` run one after the other (the
  example's predictive before the batched pass);
* ``fp32``: the S float twins (``posterior_mode_convnet``: the +-1 weights as float32 in torch
  convolutions), one after the other.

Batch norms have random signs (both max-pool rules on bits run); the logits of ``batched`` and
``loop`` are checked equal (``torch.equal``) on images on a grid of 1/4, where the float first
convolution is exact. Round-robin in one process, medians (``benchmarks/timing.py``). Writes
JSON (``runs/bench/`` unless ``--record`` or ``--out``).

    python benchmarks/bench_bayes_binary_convnet.py
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import pyro
import torch
from timing import add_output_arguments, machine_slug, time_round_robin, write_rows

from pyro_bdl.bnn import BNNClassifier
from pyro_bdl.experiment import (
    add_common_arguments,
    environment,
    make_parser,
    require_positive,
    run_main,
    setup,
)
from pyro_bdl.layers.bayes_binary import bayesian_binary_layers
from pyro_bdl.models.bayes_binary import BayesBinaryConvNet, BernoulliMeanFieldGuide
from pyro_bdl.networks import export_packed_convnet, posterior_mode_convnet, stack_packed_convnets


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, data=False, device="cpu")
    parser.add_argument("--width", type=int, default=16, help="channels C of the first convolution")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--samples", type=int, default=8, help="ensemble size S")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 200])
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per batch size (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    require_positive(parser, args, "width", "hidden", "samples", "rounds")
    if args.warmup < 0 or min(args.batches) < 1:
        parser.error("--warmup must be non-negative, --batches positive")
    return args


def grid_images(batch: int) -> torch.Tensor:
    return torch.randint(-4, 5, (batch, 1, 28, 28)).float() / 4


def make_members(args: argparse.Namespace) -> list[torch.nn.Module]:
    """S float twins of sampled networks, batch norms filled by one pass and given random signs."""
    pyro.set_rng_seed(args.seed)
    net = BayesBinaryConvNet(1, args.width, args.hidden, 10)
    model = BNNClassifier(net, num_classes=10)
    guide = BernoulliMeanFieldGuide(model)
    model(grid_images(64))  # training mode: fills the batch-norm statistics
    with torch.no_grad():
        for module in net.blocks:
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(torch.randn(module.num_features))
    model.eval()
    layers = [layer for _, layer in bayesian_binary_layers(net)]
    weights = guide.by_layer(guide.sample_weights(args.samples), layers)
    return [posterior_mode_convnet(net, [w[s] for w in weights]) for s in range(args.samples)]


def main(args: argparse.Namespace) -> dict:
    device = setup(args)
    env = environment(device)
    twins = make_members(args)
    packed = [export_packed_convnet(twin) for twin in twins]
    batched = stack_packed_convnets(packed)
    probe = grid_images(8)
    with torch.no_grad():
        if not torch.equal(batched(probe), torch.stack([member(probe) for member in packed])):
            raise RuntimeError("the batched pass's logits differ from the S packed ConvNets'")
    steps = {
        "batched": lambda x: batched(x)[-1, -1, -1].item(),
        "loop": lambda x: torch.stack([member(x) for member in packed])[-1, -1, -1].item(),
        "fp32": lambda x: torch.stack([twin(x) for twin in twins])[-1, -1, -1].item(),
    }
    rows = []
    for batch in args.batches:
        images = [grid_images(batch) for _ in range(args.warmup + args.rounds)]
        with torch.no_grad():
            times = time_round_robin(steps, images, args.warmup, str(device))
        median = {name: statistics.median(values["wall"]) * 1e3 for name, values in times.items()}
        rows.append({"batch": batch, **{f"{name}_ms": value for name, value in median.items()},
                     "loop_over_batched": median["loop"] / median["batched"],
                     "fp32_over_batched": median["fp32"] / median["batched"]})  # fmt: skip
    print(f"device: {env['cpu']}  threads {torch.get_num_threads()}  ConvNet width {args.width}, S = {args.samples}")
    print(f"{'batch':>6} {'batched':>11} {'loop':>11} {'fp32':>11} {'loop/batched':>13} {'fp32/batched':>13}")
    for row in rows:
        print(f"{row['batch']:>6} {row['batched_ms']:>8.2f} ms {row['loop_ms']:>8.2f} ms {row['fp32_ms']:>8.2f} ms "
              f"{row['loop_over_batched']:>12.2f}x {row['fp32_over_batched']:>12.2f}x")  # fmt: skip
    return write_rows(args, f"bayes_binary_convnet-{machine_slug(env['cpu'])}", env, rows)


if __name__ == "__main__":
    run_main(main, parse_args)
