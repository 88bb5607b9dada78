"""Time RBM training per epoch: Pyro's SVI with the CD loss, plain PyTorch loops, scikit-learn.

All four train a 784-``--hidden`` binary RBM by PCD-1 on the 60,000 MNIST training images
binarised once (seed 0), batch ``--batch-size``, for ``--epochs`` epochs; each step costs five
784 x batch x hidden matmuls in all three (the data's hidden probabilities, one Gibbs sweep of
the chains, the two halves of the weight gradient):

* ``pyro SVI + ContrastiveDivergence``: ``pyro.infer.SVI`` on :class:`pyro_bdl.models.RBM`
  (scaled by 1 / batch) with ``ContrastiveDivergence(1, persistent=True)`` (``--chains``
  chains, kept as their hidden states) and Pyro's ``SGD`` at ``--lr`` (default 0.02, scikit-learn's
  step) with ``--momentum`` (default 0); Pyro's validation off (the rows are binary by construction).
  With ``--fast-lr`` this row is FPCD-1 instead (Tieleman & Hinton 2009; the plain loops stay PCD-1).
* ``plain PyTorch``: the same update written by hand on the same initial weights (N(0, 0.01^2),
  visible biases at the base rates, chains drawn from ``p(v | h = 0)``): the chains' visible
  states drawn from their hidden states, the gradient of mean F(v) - mean F(chains) set on the
  tensors, the next hidden states drawn from the same pre-activations, ``torch.optim.SGD``;
  dense ``addmm`` matmuls.
* ``plain PyTorch, binary-row kernels``: the same loop with the five products by the kernels
  the Pyro loss uses (:mod:`triton_kernels.cpu_binary_rows`: sums of weight rows at the ones of
  the binary rows, the ones of the data and the chains listed once per step), so the table shows
  both what Pyro's machinery costs over a plain loop of the same kernels and the kernels' gain.
  The Pyro row runs with the kernels on (the default; ``--dense`` switches them off for it).
* ``scikit-learn BernoulliRBM``: its own PCD-1 (its chains are hidden states, one per batch
  row, in the same order of draws; its own initialisation: visible biases at 0; no momentum,
  learning rate ``--sklearn-lr``, by default the torch methods' step), one ``partial_fit`` per batch,
  which computes in float64 like ``fit`` on float64 rows. Needs the optional extra
  ``pip install -e .[bench]``; skipped (and said so) without it.

The torch rows draw their Bernoulli samples alike, by ``pyro_bdl.models.rbm.bernoulli`` (the compiled
xoshiro256** sampler of :mod:`triton_kernels.cpu_bernoulli`; torch's own draws with ``--dense``'s switch
only for the Pyro row). The methods run round-robin, one step each per round (``timing.time_round_robin``), so a shared
machine slows all alike; wall and thread-CPU seconds are both reported. With ``--block-steps N`` each method
runs N steps back to back per round instead (e.g. 600, an epoch: as in a training loop, where no other
method's work evicts a method's data from the caches between its steps). Each model is then
scored by AIS (``--ais-betas`` temperatures, ``--ais-runs`` runs, base rates of the training
data) on the 10,000 test images binarised once (seed 1), with log Z's standard error and the
effective sample size of the weights (a low ESS makes AIS flatter a model). Last, one
``BernoulliRBM.fit`` epoch on float32 rows (which ``fit`` keeps in float32) is timed alone, for
reference. Targets (issue 11): Pyro within 1.2x of the plain loop (of the same kernels), at
least 2.5x faster than scikit-learn, and a better log-likelihood.

    OMP_NUM_THREADS=1 python benchmarks/bench_rbm.py --epochs 5 --ais-runs 50 --threads 1 --record

Writes JSON to ``runs/bench/`` unless ``--record`` (``benchmarks/results/``) or ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
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
from pyro_bdl.inference import ContrastiveDivergence, ais_log_partition, base_rate_bias
from pyro_bdl.models import RBM, RBMGuide
from pyro_bdl.models.rbm import bernoulli
from triton_kernels.cpu_binary_rows import binary_addmm, binary_columns, binary_kernels, binary_outer_add_

TARGET_VS_PLAIN, TARGET_VS_SKLEARN = 1.2, 2.5
PYRO, PLAIN, SKLEARN = "pyro SVI + ContrastiveDivergence", "plain PyTorch", "scikit-learn BernoulliRBM"
PLAIN_KERNELS = "plain PyTorch, binary-row kernels"
CLOCKS = (("wall", "seconds_per_epoch"), ("cpu", "cpu_seconds_per_epoch"))
SKLEARN32 = "scikit-learn BernoulliRBM.fit, float32 rows (timed alone, 1 epoch)"


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The RBM, its training (both torch methods and scikit-learn) and its AIS scoring, as flags."""
    parser.add_argument("--hidden", type=int, default=500, help="hidden units")
    parser.add_argument("--epochs", type=int, default=5, help="epochs each method trains")
    parser.add_argument("--batch-size", type=int, default=100, help="rows per step")
    parser.add_argument("--chains", type=int, default=100, help="persistent chains of the torch methods")
    parser.add_argument("--lr", type=float, default=0.02,
                        help="the torch methods' SGD learning rate (batch mean; default: scikit-learn's)")  # fmt: skip
    parser.add_argument("--momentum", type=float, default=0.0, help="SGD momentum of the torch methods")
    parser.add_argument("--sklearn-lr", type=float, default=0.02, help="scikit-learn's learning rate (no momentum)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT training images")
    parser.add_argument("--ais-betas", type=int, default=14500, help="AIS inverse temperatures")
    parser.add_argument("--ais-runs", type=int, default=100, help="AIS runs")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, seed=0)
    add_training_arguments(parser)
    parser.add_argument("--no-sklearn", dest="sklearn", action="store_false", help="skip scikit-learn")
    parser.add_argument("--dense", action="store_true", help="the Pyro row without the binary-row kernels")
    parser.add_argument("--block-steps", type=int, default=1,
                        help="steps each method runs back to back per round (1: interleaved step by step)")  # fmt: skip
    parser.add_argument("--fast-lr", type=float, default=0.0,
                        help="the Pyro row by FPCD-1 with this fast learning rate (decay 0.95; 0: PCD-1)")  # fmt: skip
    add_output_arguments(parser)
    return parser.parse_args(argv)


def initial_rbm(args: argparse.Namespace, data: torch.Tensor) -> RBM:
    torch.manual_seed(args.seed)
    rbm = RBM(784, args.hidden)
    with torch.no_grad():
        rbm.visible_bias.copy_(base_rate_bias(data).float())
    return rbm


def pyro_step(rbm: RBM, args: argparse.Namespace) -> Callable[[torch.Tensor], float]:
    loss = ContrastiveDivergence(1, persistent=True, num_chains=args.chains, fast_lr=args.fast_lr)
    model = poutine.scale(rbm, scale=1.0 / args.batch_size)
    svi = SVI(model, RBMGuide(), pyro.optim.SGD({"lr": args.lr, "momentum": args.momentum}), loss)

    def step(v: torch.Tensor) -> float:
        with binary_kernels(not args.dense):
            return svi.step(v)

    return step


def plain_state(rbm: RBM, args: argparse.Namespace) -> tuple[torch.optim.SGD, torch.Tensor]:
    """The plain loops' SGD on ``rbm``'s tensors and their ``--chains`` persistent chains' first visible states,
    drawn from ``p(v | h = 0)`` as the Pyro loss's default ``init_chains="model"`` does."""
    optimizer = torch.optim.SGD([rbm.weight, rbm.visible_bias, rbm.hidden_bias], lr=args.lr, momentum=args.momentum)
    with torch.no_grad():
        return optimizer, bernoulli(torch.sigmoid(rbm.visible_bias.expand(args.chains, -1)))


def plain_step(rbm: RBM, args: argparse.Namespace) -> Callable[[torch.Tensor], float]:
    """PCD-1 by hand on the tensors of ``rbm`` (outside Pyro), the same update as the Pyro loss: the chains keep
    their hidden states; a step draws their visible states under the current parameters, sets the gradient of
    mean F(v) - mean F(chains) on the tensors, keeps the next hidden states and takes the SGD step (3 forward
    matmuls, 2 for the weight gradient)."""
    weight, visible_bias, hidden_bias = rbm.weight, rbm.visible_bias, rbm.hidden_bias
    optimizer, chains = plain_state(rbm, args)
    hidden = None

    @torch.no_grad()
    def step(v: torch.Tensor) -> float:
        nonlocal hidden
        negative_v = chains if hidden is None else bernoulli(torch.sigmoid(torch.addmm(visible_bias, hidden, weight.T)))
        positive = torch.sigmoid(torch.addmm(hidden_bias, v, weight))
        negative = torch.sigmoid(torch.addmm(hidden_bias, negative_v, weight))
        weight.grad = torch.addmm(negative_v.T @ negative, v.T, positive, beta=1 / args.chains, alpha=-1 / v.shape[0])
        visible_bias.grad = negative_v.mean(0) - v.mean(0)
        hidden_bias.grad = negative.mean(0) - positive.mean(0)
        hidden = bernoulli(negative)
        optimizer.step()
        return 0.0

    return step


def plain_kernel_step(rbm: RBM, args: argparse.Namespace) -> Callable[[torch.Tensor], float]:
    """:func:`plain_step` with its products by the binary-row kernels: ``b + v.W`` and ``b + chains.W`` as sums of
    weight rows, the two gradient halves as scatter-adds of probability rows (the ones of ``v`` and of the chains
    listed once each), the chains' ``a + h.W^T`` likewise on a transposed copy when ``h`` is sparse enough."""
    weight, visible_bias, hidden_bias = rbm.weight, rbm.visible_bias, rbm.hidden_bias
    optimizer, chains = plain_state(rbm, args)
    hidden = None

    @torch.no_grad()
    def step(v: torch.Tensor) -> float:
        nonlocal hidden
        with binary_kernels(True):
            negative_v = chains if hidden is None else bernoulli(torch.sigmoid(
                binary_addmm(visible_bias, hidden, weight.T)))  # fmt: skip
            rows, ones = binary_columns(v), binary_columns(negative_v)
            positive = torch.sigmoid(binary_addmm(hidden_bias, v, weight, rows))
            negative = torch.sigmoid(binary_addmm(hidden_bias, negative_v, weight, ones))
            grad = binary_outer_add_(torch.zeros_like(weight), negative_v, negative, 1 / args.chains, ones)
            weight.grad = binary_outer_add_(grad, v, positive, -1 / v.shape[0], rows)
            visible_bias.grad = negative_v.mean(0) - v.mean(0)
            hidden_bias.grad = negative.mean(0) - positive.mean(0)
            hidden = bernoulli(negative)
        optimizer.step()
        return 0.0

    return step


def sklearn_step(args: argparse.Namespace) -> tuple[object, Callable[[torch.Tensor], float]] | None:
    """scikit-learn's ``BernoulliRBM`` and a step doing one ``partial_fit`` on a batch (its PCD-1 update, in
    float64: ``partial_fit`` converts), or None (said so) without scikit-learn."""
    try:
        from sklearn.neural_network import BernoulliRBM
    except ImportError:
        print("scikit-learn is not installed (pip install -e .[bench]): its row is skipped")
        return None
    model = BernoulliRBM(n_components=args.hidden, learning_rate=args.sklearn_lr, batch_size=args.batch_size,
                         random_state=args.seed)  # fmt: skip

    def step(v: torch.Tensor) -> float:
        model.partial_fit(v.numpy())
        return 0.0

    return model, step


def sklearn_fit_float32(args: argparse.Namespace, data: torch.Tensor) -> float:
    """Seconds per epoch of one ``BernoulliRBM.fit`` epoch on float32 rows (``fit`` keeps float32; timed alone)."""
    from sklearn.neural_network import BernoulliRBM

    model = BernoulliRBM(n_components=args.hidden, learning_rate=args.sklearn_lr, batch_size=args.batch_size,
                         n_iter=1, random_state=args.seed)  # fmt: skip
    start = time.perf_counter()
    model.fit(data.numpy())
    return time.perf_counter() - start


def as_rbm(model: object) -> RBM:
    """A fitted ``BernoulliRBM``'s parameters as an :class:`RBM` (float32, like the others)."""
    rbm = RBM(model.components_.shape[1], model.components_.shape[0])
    with torch.no_grad():
        rbm.weight.copy_(torch.from_numpy(model.components_.T))
        rbm.visible_bias.copy_(torch.from_numpy(model.intercept_visible_))
        rbm.hidden_bias.copy_(torch.from_numpy(model.intercept_hidden_))
    return rbm


def test_log_likelihood(rbm: RBM, base: torch.Tensor, test: torch.Tensor, args: argparse.Namespace) -> dict:
    result = ais_log_partition(rbm, num_betas=args.ais_betas, num_runs=args.ais_runs, base_bias=base,
                               generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    return {"test_ll": float(rbm.log_likelihood(test, result.log_z).double().mean()), "ais": result.as_dict()}


def main(args: argparse.Namespace) -> dict:
    if min(args.hidden, args.epochs, args.batch_size, args.chains, args.ais_runs, args.block_steps) < 1 \
            or args.ais_betas < 10:  # fmt: skip
        raise UsageError("--hidden, --epochs, --batch-size, --chains, --ais-runs, --block-steps must be >= 1, "
                         "--ais-betas >= 10")  # fmt: skip
    setup(args)
    pyro.enable_validation(False)
    pyro.clear_param_store()
    root = data_root(args, "mnist")
    images = to_float(load_mnist(root, "train", limit=args.limit).images, flatten=True)
    data = binarize_dynamic(images, torch.Generator().manual_seed(0))
    test = binarize_dynamic(to_float(load_mnist(root, "test").images, flatten=True), torch.Generator().manual_seed(1))
    rbms = {name: initial_rbm(args, data) for name in (PYRO, PLAIN, PLAIN_KERNELS)}
    steps = {PYRO: pyro_step(rbms[PYRO], args), PLAIN: plain_step(rbms[PLAIN], args),
             PLAIN_KERNELS: plain_kernel_step(rbms[PLAIN_KERNELS], args)}  # fmt: skip
    sklearn = sklearn_step(args) if args.sklearn else None
    if sklearn is not None:
        steps[SKLEARN] = sklearn[1]
    shuffle = torch.Generator().manual_seed(args.seed)
    batches = [
        b for _ in range(args.epochs) for b in data[torch.randperm(len(data), generator=shuffle)].split(args.batch_size)
    ]
    times = time_round_robin(steps, batches, 0, "cpu", block=args.block_steps)
    per_epoch = len(batches) / args.epochs
    rows = {
        name: {"seconds_per_epoch": statistics.fmean(t["wall"]) * per_epoch,
               "cpu_seconds_per_epoch": statistics.fmean(t["cpu"]) * per_epoch}
        for name, t in times.items()
    }  # fmt: skip
    if sklearn is not None:
        rbms[SKLEARN] = as_rbm(sklearn[0])
    base = base_rate_bias(data)
    for name, rbm in rbms.items():
        rows[name].update(test_log_likelihood(rbm, base, test, args))
    if sklearn is not None:
        rows[SKLEARN32] = {"seconds_per_epoch": sklearn_fit_float32(args, data), "cpu_seconds_per_epoch": None}
    pyro_row = rows[PYRO]
    ratios = {f"pyro_over_plain_{kind}": pyro_row[key] / rows[PLAIN][key] for kind, key in CLOCKS}
    ratios.update({f"pyro_over_plain_kernels_{kind}": pyro_row[key] / rows[PLAIN_KERNELS][key] for kind, key in CLOCKS})
    ratios.update({f"plain_over_plain_kernels_{kind}": rows[PLAIN][key] / rows[PLAIN_KERNELS][key]
                   for kind, key in CLOCKS})  # fmt: skip
    if SKLEARN in rows:
        ratios.update({f"sklearn_over_pyro_{kind}": rows[SKLEARN][key] / pyro_row[key] for kind, key in CLOCKS})
    met = {f"within_1.2x_of_plain_{kind}": ratios[f"pyro_over_plain_{kind}"] <= TARGET_VS_PLAIN for kind, _ in CLOCKS}
    met.update({f"within_1.2x_of_plain_kernels_{kind}": ratios[f"pyro_over_plain_kernels_{kind}"] <= TARGET_VS_PLAIN
                for kind, _ in CLOCKS})  # fmt: skip
    if SKLEARN in rows:
        met.update({f"2.5x_faster_than_sklearn_{kind}": ratios[f"sklearn_over_pyro_{kind}"] >= TARGET_VS_SKLEARN
                    for kind, _ in CLOCKS})  # fmt: skip
        met["better_ll_than_sklearn"] = pyro_row["test_ll"] > rows[SKLEARN]["test_ll"]
    method = "PCD-1 (Pyro row: FPCD-1)" if args.fast_lr else "PCD-1"
    report = {
        "benchmark": f"RBM 784-{args.hidden} {method} training on MNIST, batch {args.batch_size}, {args.epochs} epochs",
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": environment(),
        "threads": torch.get_num_threads(), "pyro_kernels": not args.dense, "block_steps": args.block_steps,
        "results": rows, "ratios": ratios,
        "targets_met": met,
    }  # fmt: skip
    print(f"{report['benchmark']}; {environment_line(report['machine'])}")
    print("| method | s / epoch (wall) | CPU s / epoch | vs plain (wall) | AIS test LL | log Z +- se | AIS ESS |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        ratio = row["seconds_per_epoch"] / rows[PLAIN]["seconds_per_epoch"]
        cpu = "-" if row["cpu_seconds_per_epoch"] is None else f"{row['cpu_seconds_per_epoch']:.2f}"
        ais = row.get("ais")
        scores = "- | - | -" if ais is None else (f"{row['test_ll']:.2f} | {ais['log_z']:.2f} +- {ais['stderr']:.2f} "
                                                  f"| {ais['ess']:.0f} of {ais['num_runs']}")  # fmt: skip
        print(f"| {name} | {row['seconds_per_epoch']:.2f} | {cpu} | {ratio:.2f}x | {scores} |")  # fmt: skip
    print("ratios: " + ", ".join(f"{name} {value:.3f}" for name, value in ratios.items()))
    print(f"targets: {met}")
    write_results(output_path(args, "rbm_cpu"), report)
    return report


if __name__ == "__main__":
    run_main(main, parse_args)
