"""Stacked RBMs on 2-D Ising configurations at T_c (Mehta & Schwab 2014): are receptive fields blocks?

1. Sampling: ``--samples`` configurations of the ``--side`` x ``--side`` periodic lattice at
   ``--temperature`` (default Onsager's T_c = 2.269) by Swendsen-Wang, after ``--burn-in`` sweeps,
   ``--thin`` sweeps apart. The sampler is checked at T_c and at ``--check-temperatures``: mean
   energy per spin (batch-means standard error) against the exact value of the finite periodic
   lattice (Kaufman 1949) and Onsager's infinite-lattice value (``tests/pyro_bdl/data/test_ising.py``
   also checks it against exact enumeration of a 3 x 3 lattice).
2. Training: RBMs ``side^2 -> --hidden-dims`` (default 1600 -> 400 -> 100 -> 25), greedily, each by
   PCD-1 through SVI with an L1 penalty ``--l1`` on the weights (Mehta & Schwab also used L1).
3. Localisation: the linear receptive field of a unit of layer l is its column of
   ``W_1 ... W_l`` (1600,). Its *block share* is the largest fraction of its total weight
   magnitude inside any ``b x b`` periodic block, for each ``b`` of ``--blocks`` (4, 8, 16: 1%,
   4% and 16% of the 40 x 40 lattice). The control is the same fields with their weights
   shuffled over the sites (``--controls`` shuffles per unit): a localised field scores far above
   its shuffles (a smooth but spread-out one only a little). Reported per layer and block size:
   the mean block share, the controls' mean, and the fraction of units above the 99th percentile
   of their own controls. Localised is not enough: the units should tile the lattice, so each
   row also gives how many different sites the units' best blocks start at and the mean
   ``|cos|`` between two units' fields (a layer whose units all learnt one field scores 1 block
   site and ``|cos|`` near 1 however localised that field is).

Figures (``<out>/fields_layer<l>.png``) show the first 25 fields of each layer on the lattice;
``<out>/results.json`` holds the checks, the per-layer numbers, settings and machine.

    python examples/rbm_ising.py --samples 5000 --epochs 150 150 3000 --out runs/rbm_ising   # docs/rbm.md
    python examples/rbm_ising.py --samples 5000 --epochs 30 --out runs/rbm_ising_quick   # layers 2-3 undertrained
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import pyro
import torch
import torch.nn.functional as F

from pyro_bdl.data.ising import (
    CRITICAL_TEMPERATURE,
    energy_per_spin,
    exact_energy_per_spin,
    onsager_energy_per_spin,
    swendsen_wang,
)
from pyro_bdl.experiment import (
    add_common_arguments,
    arguments_record,
    environment,
    make_parser,
    require_positive,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.figures.rbm import fields_grid
from pyro_bdl.models import RBMStack, greedy_stack

RESULTS_NAME = "results.json"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/rbm_ising", data=False)
    parser.add_argument("--side", type=int, default=40, help="lattice side L (L x L, periodic)")
    parser.add_argument("--temperature", type=float, default=CRITICAL_TEMPERATURE, help="temperature of the data")
    parser.add_argument("--check-temperatures", type=float, nargs="*", default=[2.0, 2.5],
                        help="further temperatures at which the sampler is checked")  # fmt: skip
    parser.add_argument("--samples", type=int, default=5000, help="training configurations")
    parser.add_argument("--check-samples", type=int, default=1000, help="configurations per sampler check")
    parser.add_argument("--burn-in", type=int, default=200, help="Swendsen-Wang sweeps discarded first")
    parser.add_argument("--thin", type=int, default=2, help="sweeps between kept configurations")
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[400, 100, 25], help="hidden units per layer")
    parser.add_argument("--epochs", type=int, nargs="+", default=[30],
                        help="epochs per layer: one value for every layer, or one per layer")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=100, help="rows per step")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate (batch-mean gradient)")
    parser.add_argument("--momentum", type=float, default=0.5, help="SGD momentum")
    parser.add_argument("--l1", type=float, default=0.01, help="L1 penalty on the weights, per row")
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 8, 16], help="block sides for the block share")
    parser.add_argument("--controls", type=int, default=20, help="shuffled-weight controls per unit")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args(argv)
    require_positive(parser, args, "samples", "check_samples", "thin", "batch_size", "controls", "threads")
    if min(args.epochs) < 1 or len(args.epochs) not in (1, len(args.hidden_dims)):
        parser.error(f"--epochs must be >= 1, one value or one per layer ({len(args.hidden_dims)}), got {args.epochs}")
    if args.side < 2 or args.burn_in < 0 or min(args.hidden_dims) < 1 or min(args.blocks) < 1:
        parser.error("--side must be >= 2, --burn-in >= 0, every --hidden-dims and --blocks entry >= 1")
    if not args.temperature > 0 or any(not t > 0 for t in args.check_temperatures) or args.l1 < 0 or args.lr <= 0:
        parser.error("temperatures and --lr must be > 0, --l1 >= 0")
    return args


def energy_check(samples: torch.Tensor, side: int, temperature: float) -> dict[str, float]:
    """Mean energy per spin of ``samples`` (n, side^2) in {0, 1}, its 20-batch-means standard error, the exact
    finite-lattice value and Onsager's; ``z`` is (mean - exact) / stderr."""
    energies = energy_per_spin(samples.reshape(-1, side, side) * 2 - 1)
    batches = 20 if len(energies) >= 20 else len(energies)
    means = energies[: len(energies) // batches * batches].reshape(batches, -1).mean(-1)
    stderr = float(means.std() / math.sqrt(batches)) if batches > 1 else float("nan")
    exact = exact_energy_per_spin(side, side, temperature)
    mean = float(energies.mean())
    return {"temperature": temperature, "samples": len(energies), "mean": mean, "stderr": stderr, "exact": exact,
            "onsager_infinite": onsager_energy_per_spin(temperature), "z": (mean - exact) / stderr}  # fmt: skip


def block_sums(fields: torch.Tensor, side: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums (units, side^2), totals (units,))``: each field's |weight| (side^2, units) summed over the
    ``block`` x ``block`` periodic block with its corner at each site, and over the whole lattice."""
    magnitude = fields.abs().T.reshape(-1, 1, side, side)
    padded = F.pad(magnitude, (0, block - 1, 0, block - 1), mode="circular")
    sums = F.avg_pool2d(padded, block, stride=1) * block * block  # (units, 1, side, side)
    return sums.flatten(1), magnitude.flatten(1).sum(-1)


def block_shares(fields: torch.Tensor, side: int, block: int) -> torch.Tensor:
    """Largest share (units,) of each field's |weight| (side^2, units) inside a ``block`` x ``block`` periodic block."""
    sums, totals = block_sums(fields, side, block)
    return sums.amax(-1) / totals.clamp_min(1e-12)


def distinct_best_blocks(fields: torch.Tensor, side: int, block: int) -> int:
    """How many different sites the units' best ``block`` x ``block`` blocks (their largest share) start at: about
    the number of units when the fields tile the lattice, 1 when every unit has the same field."""
    return int(block_sums(fields, side, block)[0].argmax(-1).unique().numel())


def mean_abs_cosine(fields: torch.Tensor) -> float:
    """Mean ``|cos|`` between the fields (side^2, units) of two different units: 1 when all are the same field
    (up to sign and scale), near 0 for fields on disjoint blocks."""
    unit = F.normalize(fields.T, dim=1)
    cosines = (unit @ unit.T).abs()
    count = cosines.shape[0]
    return float((cosines.sum() - cosines.diagonal().sum()) / max(count * (count - 1), 1))


def localisation(stack: RBMStack, side: int, blocks: Sequence[int], controls: int,
                 generator: torch.Generator) -> list[dict]:  # fmt: skip
    """Per layer and block side: mean block share, shuffled controls' mean, share of units above their controls' 99%."""
    out = []
    for depth, layer in enumerate(stack.layers, start=1):
        fields = stack.receptive_fields(depth)  # (side^2, H)
        cosine = mean_abs_cosine(fields)
        for block in (min(side, b) for b in blocks):
            shares = block_shares(fields, side, block)
            shuffled = torch.stack(
                [
                    block_shares(fields[torch.randperm(fields.shape[0], generator=generator)], side, block)
                    for _ in range(controls)
                ]
            )  # fmt: skip  (controls, H)
            above = shares > torch.quantile(shuffled, 0.99, dim=0)
            out.append({"layer": depth, "hidden": layer.hidden_dim, "block": block,
                        "block_area_share": block * block / side**2, "mean_block_share": float(shares.mean()),
                        "control_mean_block_share": float(shuffled.mean()),
                        "control_sd_block_share": float(shuffled.std()),
                        "units_above_control_99": float(above.float().mean()),
                        "distinct_best_blocks": distinct_best_blocks(fields, side, block),
                        "mean_abs_cosine": cosine})  # fmt: skip
    return out


def main(args: argparse.Namespace) -> dict:
    setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    start = time.perf_counter()
    data = swendsen_wang(args.side, args.temperature, args.samples, burn_in=args.burn_in, thin=args.thin,
                         seed=args.seed)  # fmt: skip
    checks = [energy_check(data, args.side, args.temperature)]
    for index, temperature in enumerate(args.check_temperatures, start=1):
        samples = swendsen_wang(args.side, temperature, args.check_samples, burn_in=args.burn_in, thin=args.thin,
                                seed=args.seed + index)  # fmt: skip
        checks.append(energy_check(samples, args.side, temperature))
    for check in checks:
        print(f"T = {check['temperature']:.4f}: energy per spin {check['mean']:.4f} +- {check['stderr']:.4f} "
              f"(exact {args.side}x{args.side}: {check['exact']:.4f}, z = {check['z']:+.2f}; Onsager infinite "
              f"lattice {check['onsager_infinite']:.4f})")  # fmt: skip
    sampling_seconds = time.perf_counter() - start
    start = time.perf_counter()
    epochs = args.epochs * len(args.hidden_dims) if len(args.epochs) == 1 else args.epochs
    stack = greedy_stack(data, args.hidden_dims, seed=args.seed, epochs=epochs, batch_size=args.batch_size,
                         lr=args.lr, momentum=args.momentum, l1=args.l1, progress=args.progress)  # fmt: skip
    training_seconds = time.perf_counter() - start
    layers = localisation(stack, args.side, args.blocks, args.controls, torch.Generator().manual_seed(args.seed))
    for row in layers:
        print(f"layer {row['layer']} ({row['hidden']} units), {row['block']}x{row['block']} blocks: mean block share "
              f"{row['mean_block_share']:.3f} vs shuffled {row['control_mean_block_share']:.3f} "
              f"+- {row['control_sd_block_share']:.3f}; units above their controls' 99%: "
              f"{100 * row['units_above_control_99']:.0f}%; distinct best blocks {row['distinct_best_blocks']} of "
              f"{row['hidden']}, mean |cos| between units {row['mean_abs_cosine']:.2f}")  # fmt: skip
    for depth in range(1, len(stack.layers) + 1):
        fields_grid(stack.receptive_fields(depth), args.out / f"fields_layer{depth}.png", count=25,
                    side=args.side, columns=5, title=f"layer {depth} receptive fields")  # fmt: skip
    payload = {"sampler_checks": checks, "layers": layers, "sampling_seconds": sampling_seconds,
               "training_seconds": training_seconds, "settings": arguments_record(args),
               "environment": environment("cpu")}  # fmt: skip
    write_results(args.out / RESULTS_NAME, payload)
    return payload


if __name__ == "__main__":
    run_main(main, parse_args)
