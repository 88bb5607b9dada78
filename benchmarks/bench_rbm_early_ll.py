"""Test log-likelihood of a 784-500 RBM after a few epochs, over several training seeds.

The training benchmark (``bench_rbm.py``) scores each method once after 5 epochs; one run says
little, because at that stage two runs that differ only in rounding differ by up to 15 nats.
This script repeats the training for ``--seeds`` seeds per variant (the seed sets the initial
weights, the batch order, the chains' draws, scikit-learn's ``random_state`` and the AIS seed)
and reports mean and standard deviation of the AIS test log-likelihood:

* ``pyro``: Pyro's ``SVI`` with ``ContrastiveDivergence(1, persistent=True)`` (PCD-1), SGD at
  ``--lr`` with ``--momentum`` (the training benchmark's settings: by default scikit-learn's step,
  0.02 without momentum);
* ``pyro-data-chains``: as ``pyro`` with the persistent chains started at copies of the first
  batch (``init_chains="data"``) instead of draws from the initial model (the default);
* ``pyro-fpcd``: as ``pyro`` with fast weights (FPCD-1, fast learning rate ``--sklearn-lr``,
  decay 0.95; Tieleman & Hinton 2009);
* ``plain``: the training benchmark's hand-written PyTorch PCD-1 loop at ``--lr``, ``--momentum``;
* ``sklearn``: scikit-learn's ``BernoulliRBM`` (PCD-1 in float64, learning rate ``--sklearn-lr``).

Same data as the training benchmark (the 60,000 MNIST training images binarised once with seed 0,
batch ``--batch-size``; the 10,000 test images binarised with seed 1), AIS from the training base
rates. Paired differences against scikit-learn (same seed) are printed too.

    OMP_NUM_THREADS=1 python benchmarks/bench_rbm_early_ll.py --seeds 5 --record

Writes JSON to ``runs/bench/`` unless ``--record`` (``benchmarks/results/``) or ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from collections.abc import Callable, Sequence

import pyro
import torch
from bench_rbm import add_training_arguments, as_rbm, initial_rbm, plain_step, sklearn_step, test_log_likelihood
from pyro import poutine
from pyro.infer import SVI
from timing import add_output_arguments, write_rows
from tqdm import tqdm

from pyro_bdl.data import binarize_dynamic, load_mnist, to_float
from pyro_bdl.experiment import UsageError, add_common_arguments, data_root, environment, make_parser, run_main, setup
from pyro_bdl.inference import ContrastiveDivergence, base_rate_bias
from pyro_bdl.models import RBM, RBMGuide

VARIANTS = ("pyro", "pyro-data-chains", "pyro-fpcd", "plain", "sklearn")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, seed=0)
    parser.add_argument("--seeds", type=int, default=5, help="training seeds per variant (0 .. SEEDS - 1)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="what to train")
    add_training_arguments(parser)
    add_output_arguments(parser)
    return parser.parse_args(argv)


def train(variant: str, args: argparse.Namespace, data: torch.Tensor) -> RBM:
    """One ``--epochs`` training of ``variant`` from seed ``args.seed``; the trained parameters as an RBM."""
    pyro.clear_param_store()
    rbm = initial_rbm(args, data)
    model: object = None
    if variant.startswith("pyro"):
        lr, momentum = args.lr, args.momentum
        loss = ContrastiveDivergence(1, persistent=True, num_chains=args.chains,
                                     fast_lr=args.sklearn_lr if variant == "pyro-fpcd" else 0.0,
                                     init_chains="data" if variant == "pyro-data-chains" else "model")  # fmt: skip
        svi = SVI(poutine.scale(rbm, scale=1.0 / args.batch_size), RBMGuide(),
                  pyro.optim.SGD({"lr": lr, "momentum": momentum}), loss)  # fmt: skip
        step: Callable = svi.step
    elif variant == "plain":
        step = plain_step(rbm, args)
    else:
        model, step = sklearn_step(args)
    shuffle = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        for batch in data[torch.randperm(len(data), generator=shuffle)].split(args.batch_size):
            step(batch)
    return as_rbm(model) if model is not None else rbm


def main(args: argparse.Namespace) -> dict:
    if min(args.seeds, args.hidden, args.epochs, args.batch_size, args.chains, args.ais_runs) < 1:
        raise UsageError("--seeds, --hidden, --epochs, --batch-size, --chains, --ais-runs must be >= 1")
    setup(args)
    pyro.enable_validation(False)
    root = data_root(args, "mnist")
    data = binarize_dynamic(to_float(load_mnist(root, "train", limit=args.limit).images, flatten=True),
                            torch.Generator().manual_seed(0))  # fmt: skip
    test = binarize_dynamic(to_float(load_mnist(root, "test").images, flatten=True), torch.Generator().manual_seed(1))
    base = base_rate_bias(data)
    if "sklearn" in args.variants and importlib.util.find_spec("sklearn") is None:
        print("scikit-learn is not installed (pip install -e .[bench]): its runs are skipped")
        args.variants = [variant for variant in args.variants if variant != "sklearn"]
    rows = []
    for seed, variant in tqdm([(s, v) for s in range(args.seeds) for v in args.variants], desc="runs"):
        args.seed = seed
        torch.manual_seed(seed)
        score = test_log_likelihood(train(variant, args, data), base, test, args)
        rows.append({"variant": variant, "seed": seed, **score})
        tqdm.write(f"{variant} seed {seed}: test LL {score['test_ll']:.2f} (ESS {score['ais']['ess']:.0f})")
    print(f"| variant | test LL after {args.epochs} epochs, mean +- sd over {args.seeds} seeds | per seed |")
    print("|---|---|---|")
    by_variant = {v: [r["test_ll"] for r in rows if r["variant"] == v] for v in args.variants}
    for variant, lls in by_variant.items():
        spread = statistics.stdev(lls) if len(lls) > 1 else float("nan")
        print(f"| {variant} | {statistics.fmean(lls):.2f} +- {spread:.2f} | {', '.join(f'{x:.1f}' for x in lls)} |")
    if "sklearn" in by_variant and len(args.variants) > 1 and args.seeds > 1:
        for variant, lls in by_variant.items():
            if variant != "sklearn":
                diff = [a - b for a, b in zip(lls, by_variant["sklearn"], strict=True)]
                print(f"{variant} - sklearn, paired by seed: {statistics.fmean(diff):+.2f} "
                      f"+- {statistics.stdev(diff) / len(diff) ** 0.5:.2f} (standard error)")  # fmt: skip
    return write_rows(args, "rbm_early_ll", environment(), rows)


if __name__ == "__main__":
    run_main(main, parse_args)
