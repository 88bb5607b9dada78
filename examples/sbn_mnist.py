"""A sigmoid belief network on binarised MNIST, trained with NVIL's control variates, scored by importance weighting.

Model and estimator after Mnih & Gregor 2014 ("NVIL"): layers of binary latents (``--latent-dims
200`` or ``200,200,200``), a linear-sigmoid inference network mirroring the model, the
score-function gradient with an input-dependent neural baseline on top of a decaying average
(``--baseline neural``; also ``none``, ``average``, ``constant``), and NVIL's variance
normalisation (:class:`pyro_bdl.inference.NormalisedTraceGraph_ELBO`; ``--no-normalisation``
turns the normalisation off, leaving Pyro's estimator). The test log-likelihood is the package's
importance-weighted bound with k = ``--iw-samples`` (5000 for the reported numbers).

Data protocol (the package's, as in ``examples/dlgm_mnist.py``): training images binarised
dynamically per minibatch, the last ``--validation`` training images and the test set binarised
once with a fixed seed; the best epoch is picked on the validation ELBO. NVIL used a fixed
stochastic binarisation and SGD; this script uses Adam. Its reported test NLLs are 113.1
(SBN 200) and 96.7 (SBN 200-200-200) nats.

Checkpoints go to ``<out>/checkpoint.pt`` after every epoch and a rerun resumes there
(``--fresh`` starts over); the running averages of the baselines and of the normaliser restart
on resume (they re-warm within about 1 / (1 - beta) steps), so a resumed run is not
bit-identical to an uninterrupted one. Results (with the learning curve) go to
``<out>/results.json``.

    python examples/sbn_mnist.py --epochs 100
    python examples/sbn_mnist.py --latent-dims 200,200,200 --epochs 100
    python examples/sbn_mnist.py --limit 2000 --validation 500 --test-limit 50 --iw-samples 50 --epochs 2  # smoke
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import pyro

from pyro_bdl.experiment import (
    add_common_arguments,
    add_mnist_split_arguments,
    arguments_record,
    check_mnist_split_arguments,
    dynamic_binarisation,
    environment,
    is_full_mnist_protocol,
    load_binarised_mnist,
    make_parser,
    print_history,
    require_positive,
    run_main,
    score_held_out,
    setup,
    write_results,
)
from pyro_bdl.inference import NormalisedTraceGraph_ELBO, fit
from pyro_bdl.models.sbn import BASELINES, SBNGuide, SigmoidBeliefNetwork

CHECKPOINT_NAME = "checkpoint.pt"
RESULTS_NAME = "results.json"
NVIL_TEST_NLL = {(200,): 113.1, (200, 200): 99.8, (200, 200, 200): 96.7}
"""Mnih & Gregor 2014, Table 1 (NVIL), nats."""


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from error
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/sbn_mnist")
    parser.add_argument("--latent-dims", type=int_list, default=[200], help="binary layer sizes, bottom to top")
    parser.add_argument("--baseline", choices=BASELINES, default="neural", help="control variate per layer")
    parser.add_argument("--baseline-beta", type=float, default=0.8, help="decay of the running-average baseline")
    parser.add_argument("--baseline-hidden", type=int, default=100, help="tanh units of each neural baseline")
    parser.add_argument(
        "--no-normalisation", action="store_true", help="no variance normalisation (Pyro's TraceGraph_ELBO estimator)"
    )
    parser.add_argument("--normaliser-beta", type=float, default=0.8, help="decay of the signal's running variance")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    add_mnist_split_arguments(parser)
    parser.add_argument("--iw-samples", type=int, default=5000, help="k, importance samples per test image")
    parser.add_argument("--elbo-samples", type=int, default=10, help="samples per test image for the test ELBO")
    parser.add_argument("--particle-chunk", type=int, default=500, help="importance samples vectorised at once")
    parser.add_argument("--data-chunk", type=int, default=50, help="test images scored at once")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    require_positive(
        parser, args, "epochs", "batch_size", "iw_samples", "elbo_samples", "particle_chunk", "data_chunk", "threads"
    )
    if args.baseline_hidden < 1:
        parser.error(f"--baseline-hidden must be positive, got {args.baseline_hidden}")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    for name in ("baseline_beta", "normaliser_beta"):
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must lie in [0, 1), got {getattr(args, name)}")
    check_mnist_split_arguments(parser, args)
    return args


def main(args: argparse.Namespace) -> dict:
    setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    data = load_binarised_mnist(args)
    model = SigmoidBeliefNetwork(784, args.latent_dims)
    guide = SBNGuide.for_model(
        model, baseline=args.baseline, baseline_beta=args.baseline_beta, baseline_hidden=args.baseline_hidden
    )
    loss = NormalisedTraceGraph_ELBO(normaliser_beta=args.normaliser_beta, normalise=not args.no_normalisation)
    checkpoint = args.out / CHECKPOINT_NAME
    if checkpoint.exists() and not args.fresh:
        print(f"resumed from {checkpoint}")
    started = time.perf_counter()
    result = fit(
        model,
        guide,
        data["train"],
        optim=pyro.optim.Adam({"lr": args.lr}),
        epochs=args.epochs,
        batch_size=args.batch_size,
        loss=loss,
        validation_data=data.get("valid"),
        transform_batch=dynamic_binarisation,
        checkpoint_path=checkpoint,
        resume=not args.fresh,
        seed=args.seed,
        progress=not args.no_progress,
    )
    fit_seconds = time.perf_counter() - started
    print_history(result.history)
    scores = score_held_out(model, guide, data["test"][: args.test_limit], args)
    full = is_full_mnist_protocol(args) and args.iw_samples == 5000
    reference = NVIL_TEST_NLL.get(tuple(args.latent_dims)) if full else None
    results = {
        "config": arguments_record(args),
        "epochs_trained": len(result.history),
        "train_images": len(data["train"]),
        "best_epoch": result.best_epoch,
        "best_validation_elbo": result.best_validation_elbo,
        **scores,
        "train_seconds_total": sum(entry["seconds"] for entry in result.history),
        "fit_seconds_this_run": fit_seconds,
        "environment": environment(),
        "published_nll_nvil": reference,
        "history": result.history,
    }
    print(
        f"epochs {results['epochs_trained']} (best {result.best_epoch}), test images {scores['test_images']}: "
        f"ELBO {scores['test_elbo']:.2f}, NLL (IW, k={args.iw_samples}) {scores['test_nll']:.2f} nats"
    )
    if reference is not None:
        print(f"published reference (Mnih & Gregor 2014, NVIL): NLL {reference} nats")
    write_results(args.out / RESULTS_NAME, results)
    return results


if __name__ == "__main__":
    run_main(main, parse_args)
