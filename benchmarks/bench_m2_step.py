"""Time one M2 training step: Pyro's enumeration against the sum over classes written by hand.

Both steps train the same networks (:class:`pyro_bdl.models.M2` decoder 50-500-784 and
:class:`pyro_bdl.models.M2Guide` classifier 784-500-10 and encoder 784+10-500-2x50, softplus) on
the same real MNIST batches: ``--labelled`` labelled rows and ``--unlabelled`` unlabelled rows,
binarised afresh, each part weighted by its count over the batch size as in
``examples/ssvae_mnist.py``, plus the classification term ``alpha log q(y | x)``.

* ``hand-written``: plain PyTorch. The unlabelled bound of Kingma et al. 2014, eq. (7),
  ``sum_y q(y|x) (-L(x, y)) + H(q(y|x))``, computed for all 10 classes in one batched pass, the
  labelled bound eq. (6), one ``backward``, one ``torch.optim.Adam`` step.
* ``pyro TraceEnum_ELBO``: ``SVI`` with :func:`pyro_bdl.models.m2.enumerated_elbo` (parallel
  enumeration of ``y``), Pyro's ``Adam``, on the mixed batch. Pyro's ``obs_mask`` enumerates the
  label of every row, labelled ones too (masked, so the result is exact), so the decoder runs
  on ``K`` copies of the labelled rows that the hand-written step evaluates once.
* ``pyro TraceEnum_ELBO, split batch``: the same batch as two SVI steps, its labelled rows
  (no enumeration) then its unlabelled rows, as ``examples/ssvae_mnist.py`` trains.

The steps run round-robin (see ``bench_dlgm_svi.py``) and the table reports the median thread
CPU time (robust on a shared machine) and wall time. Issue 10's target: Pyro within 1.3x.

    python benchmarks/bench_m2_step.py --data ../shared/data/mnist --threads 1

Writes JSON to ``runs/bench/`` unless ``--record`` (``benchmarks/results/``) or ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI
from pyro.optim import Adam
from timing import add_output_arguments, output_path, time_round_robin

from pyro_bdl.data import binarize_dynamic, load_mnist, to_float
from pyro_bdl.experiment import (
    UsageError,
    add_common_arguments,
    data_root,
    environment,
    environment_line,
    make_parser,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.models import M2, M2Guide
from pyro_bdl.models.m2 import enumerated_elbo

CLASSES, LATENT, HIDDEN, PIXELS = 10, 50, 500, 784
TARGET = 1.3
LABELLED_TOTAL, UNLABELLED_TOTAL = 100, 49900
"""The 100-label protocol's counts, which set the weights of the two parts of a batch."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, seed=None)
    parser.add_argument("--labelled", type=int, default=100, help="labelled rows per batch")
    parser.add_argument("--unlabelled", type=int, default=200, help="unlabelled rows per batch")
    parser.add_argument("--steps", type=int, default=60, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--alpha", type=float, default=50.0, help="classification weight per labelled row")
    add_output_arguments(parser)
    return parser.parse_args(argv)


def mnist_batches(args: argparse.Namespace, count: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``count`` batches ``(x, y, row_scale)`` of real training images, labelled rows first."""
    data = load_mnist(data_root(args, "mnist"), "train")
    images, labels = to_float(data.images, flatten=True), data.labels
    generator = torch.Generator().manual_seed(0)
    batches = []
    size = args.labelled + args.unlabelled
    for _ in range(count):
        rows = torch.randperm(len(images), generator=generator)[:size]
        y = torch.cat([labels[rows[: args.labelled]], torch.full((args.unlabelled,), -1, dtype=torch.long)])
        scale = torch.cat([torch.full((args.labelled,), LABELLED_TOTAL / max(args.labelled, 1)),
                           torch.full((args.unlabelled,), UNLABELLED_TOTAL / args.unlabelled)])  # fmt: skip
        batches.append((binarize_dynamic(images[rows], generator=generator), y, scale))
    return batches


def networks(alpha: float) -> tuple[M2, M2Guide]:
    model = M2(PIXELS, CLASSES, LATENT, (HIDDEN,))
    return model, M2Guide.for_model(model, alpha=alpha)


def hand_written_step(alpha: float) -> Callable:
    """Kingma et al. 2014, eqs. (6), (7), (9) in plain torch over the same networks."""
    model, guide = networks(alpha)
    optimizer = torch.optim.Adam([*model.parameters(), *guide.parameters()], lr=1e-3)
    log_prior = torch.log(torch.tensor(1.0 / CLASSES))

    def bound(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-L(x, y) with one reparameterised z: x (B, D), y broadcastable to (..., B)."""
        loc, raw = guide.encoder(x, y).chunk(2, dim=-1)
        scale = F.softplus(raw) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = model.decoder(z, y)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = -0.5 * (z**2).sum(-1)
        log_qz = (-0.5 * ((z - loc) / scale) ** 2 - scale.log()).sum(-1)
        return log_px + log_prior + log_pz - log_qz  # the 2 pi constants cancel

    def step(batch: tuple) -> float:
        x, y, row_scale = batch
        labelled = y >= 0
        xl, yl, xu = x[labelled], y[labelled], x[~labelled]
        log_q_u = guide.logits(xu).log_softmax(-1)  # (Bu, K)
        classes = torch.arange(CLASSES).unsqueeze(-1)  # (K, 1)
        unlabelled = (log_q_u.exp().T * (bound(xu, classes) - log_q_u.T)).sum(0)  # (Bu,)
        log_q_l = guide.logits(xl).log_softmax(-1).gather(-1, yl.unsqueeze(-1)).squeeze(-1)
        labelled_terms = bound(xl, yl) + alpha * log_q_l
        loss = -(row_scale[labelled] * labelled_terms).sum() - (row_scale[~labelled] * unlabelled).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


def pyro_step(alpha: float) -> Callable:
    model, guide = networks(alpha)
    svi = SVI(lambda x, y, s: poutine.scale(model, scale=s)(x, y), lambda x, y, s: poutine.scale(guide, scale=s)(x, y),
              Adam({"lr": 1e-3}), enumerated_elbo())  # fmt: skip
    return lambda batch: svi.step(*batch)


def pyro_split_step(alpha: float) -> Callable:
    """Two SVI steps on the same batch: its labelled rows (nothing to enumerate), then its unlabelled rows."""
    step = pyro_step(alpha)

    def split(batch: tuple) -> float:
        labelled = batch[1] >= 0
        loss = step(tuple(t[~labelled] for t in batch))
        return loss + (step(tuple(t[labelled] for t in batch)) if bool(labelled.any()) else 0.0)

    return split


def main(args: argparse.Namespace) -> dict:
    if min(args.unlabelled, args.steps) < 1 or min(args.labelled, args.warmup) < 0:
        raise UsageError("--unlabelled and --steps must be >= 1, --labelled and --warmup >= 0")
    setup(args)
    pyro.enable_validation(False)
    torch.distributions.Distribution.set_default_validate_args(False)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    batches = mnist_batches(args, args.warmup + args.steps)
    steps = {"hand-written": hand_written_step(args.alpha), "pyro TraceEnum_ELBO": pyro_step(args.alpha)}
    if args.labelled:
        steps["pyro TraceEnum_ELBO, split batch"] = pyro_split_step(args.alpha)
    times = time_round_robin(steps, batches, args.warmup, "cpu")  # each batch is an (x, y, scale) tuple
    medians = {name: {kind: statistics.median(values) * 1e3 for kind, values in t.items()} for name, t in times.items()}
    hand = medians["hand-written"]
    rows = [
        {"method": name, "cpu_ms": m["cpu"], "wall_ms": m["wall"], "cpu_vs_hand_written": m["cpu"] / hand["cpu"],
         "wall_vs_hand_written": m["wall"] / hand["wall"]}
        for name, m in medians.items()
    ]  # fmt: skip
    report = {
        "benchmark": f"one M2 training step, {args.labelled} labelled + {args.unlabelled} unlabelled MNIST rows",
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": environment(),
        "threads": torch.get_num_threads(), "timed_rounds": args.steps, "results": rows,
        "target_vs_hand_written": TARGET, "met": min(r["cpu_vs_hand_written"] for r in rows[1:]) <= TARGET,
    }  # fmt: skip
    print(f"{report['benchmark']}; {environment_line(report['machine'])}; median of {args.steps} rounds")
    print("| step | CPU ms | wall ms | CPU vs hand-written | wall vs hand-written |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['cpu_ms']:.1f} | {row['wall_ms']:.1f} | {row['cpu_vs_hand_written']:.2f}x "
              f"| {row['wall_vs_hand_written']:.2f}x |")  # fmt: skip
    print(f"target: Pyro within {TARGET}x of hand-written (CPU time): {report['met']}")
    write_results(output_path(args, "m2_step_cpu"), report)
    return report


if __name__ == "__main__":
    run_main(main, parse_args)
