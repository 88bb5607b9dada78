"""DRAW (Gregor et al. 2015) on binarised MNIST, scored by importance weighting.

The package's MNIST protocol (as examples/dlgm_mnist.py): training images dynamically
binarised per minibatch, the last ``--validation`` training images (binarised once, seeded)
pick the best epoch, the test set binarised once with a fixed seed, the test log-likelihood
estimated with ``--iw-samples`` importance samples per image (k = 5000 for a final number).
The paper used the fixed binarisation of Larochelle & Murray and reports variational bounds
(not importance-weighted estimates) of <= 87.40 nats without attention and <= 80.97 with
attention (T = 64, 256-unit LSTMs, z of 100, read 2x2, write 5x5): compare them with the test
ELBO, which the results carry beside the IW estimate. The defaults here are smaller so it runs
on a CPU (T = 10, no attention).

Loss: ``TraceMeanField_ELBO`` (each step's KL analytic, the paper's latent loss) or
``Trace_ELBO``; Adam with each gradient clipped elementwise to ``--clip`` (``ClippedAdam``).
Checkpoints go to ``<out>/checkpoint.pt`` after every epoch and a rerun resumes there
(``--fresh`` starts over); results to ``<out>/results.json``; figures (canvas sequences of test
digits and of samples, ELBO curve) to ``<out>/*.png``.

    python examples/draw_mnist.py --epochs 20
    python examples/draw_mnist.py --attention --steps 64 --epochs 20        # the paper's attention net
    python examples/draw_mnist.py --limit 600 --validation 100 --test-limit 20 --iw-samples 10 --steps 3  # smoke
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_bdl.data import binarize_dynamic
from pyro_bdl.experiment import (
    add_common_arguments,
    add_mnist_split_arguments,
    arguments_record,
    check_mnist_split_arguments,
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
from pyro_bdl.figures import dlgm as dlgm_figures
from pyro_bdl.figures.draw import canvas_sequence
from pyro_bdl.inference.fit import fit
from pyro_bdl.models.draw import DRAW, DRAWGuide

CHECKPOINT_NAME = "checkpoint.pt"
RESULTS_NAME = "results.json"
PAPER_NLL_BOUND = {False: 87.40, True: 80.97}
"""Gregor et al. 2015, table 2: test NLL bound (nats, -ELBO) without / with attention, T = 64."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/draw_mnist")
    parser.add_argument("--steps", type=int, default=10, help="T, glimpses (the paper: 64)")
    parser.add_argument("--z-dim", type=int, default=100, help="size of each z_t")
    parser.add_argument("--hidden-dim", type=int, default=256, help="units of the encoder and decoder LSTMs")
    parser.add_argument("--attention", action="store_true", help="Gaussian filterbank read and write")
    parser.add_argument("--read-size", type=int, default=2, help="N of the read filterbank (with --attention)")
    parser.add_argument("--write-size", type=int, default=5, help="N of the write filterbank (with --attention)")
    parser.add_argument("--loss", choices=["mean_field", "elbo"], default="mean_field")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clip", type=float, default=10.0, help="elementwise gradient clip of ClippedAdam")
    add_mnist_split_arguments(parser)
    parser.add_argument("--iw-samples", type=int, default=5000, help="k, importance samples per test image")
    parser.add_argument("--elbo-samples", type=int, default=10, help="samples per test image for the test ELBO")
    parser.add_argument("--particle-chunk", type=int, default=250, help="importance samples vectorised at once")
    parser.add_argument("--data-chunk", type=int, default=20, help="test images scored at once")
    parser.add_argument("--canvas-digits", type=int, default=8, help="digits in each canvas-sequence figure")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    require_positive(
        parser,
        args,
        "steps",
        "z_dim",
        "hidden_dim",
        "read_size",
        "write_size",
        "epochs",
        "batch_size",
        "iw_samples",
        "elbo_samples",
        "particle_chunk",
        "data_chunk",
        "canvas_digits",
        "threads",
    )
    require_positive(parser, args, "lr", "clip")
    check_mnist_split_arguments(parser, args)
    return args


def draw_figures(model: DRAW, guide: DRAWGuide, data: dict, history: list[dict], args: argparse.Namespace) -> None:
    digits = data["test"][: args.canvas_digits]
    with torch.no_grad():
        reconstruction = torch.stack([model.mean(c) for c in guide(digits)])
        zs = [torch.randn(args.canvas_digits, model.z_dim) for _ in range(model.steps)]
    canvas_sequence(reconstruction, args.out / "canvas_test.png", title="sigmoid(c_t) for test digits, z ~ q(z | x)")
    canvas_sequence(model.canvases(zs), args.out / "canvas_samples.png", title="sigmoid(c_t), z ~ p(z)")
    dlgm_figures.elbo_curve(history, args.out / "elbo.png")


def main(args: argparse.Namespace) -> dict:
    setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    data = load_binarised_mnist(args)
    model = DRAW(steps=args.steps, z_dim=args.z_dim, hidden_dim=args.hidden_dim, attention=args.attention,
                 write_size=args.write_size)  # fmt: skip
    guide = DRAWGuide(model, read_size=args.read_size)
    checkpoint = args.out / CHECKPOINT_NAME
    if checkpoint.exists() and not args.fresh:
        print(f"resuming from {checkpoint}")
    started = time.perf_counter()
    result = fit(
        model,
        guide,
        data["train"],
        optim=pyro.optim.ClippedAdam({"lr": args.lr, "betas": (0.9, 0.999), "clip_norm": args.clip}),
        epochs=args.epochs,
        batch_size=args.batch_size,
        loss=TraceMeanField_ELBO() if args.loss == "mean_field" else Trace_ELBO(),
        validation_data=data.get("valid"),
        validation_samples=1,
        transform_batch=lambda batch: (binarize_dynamic(batch),),
        checkpoint_path=checkpoint,
        resume=not args.fresh,
        seed=args.seed,
        progress=not args.no_progress,
    )
    fit_seconds = time.perf_counter() - started
    print_history(result.history)
    scores = score_held_out(model, guide, data["test"][: args.test_limit], args)
    if not args.no_figures:
        draw_figures(model, guide, data, result.history, args)
    full = is_full_mnist_protocol(args) and args.iw_samples == 5000
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
        "paper_nll_bound": PAPER_NLL_BOUND[args.attention] if full and args.steps == 64 else None,
        "history": result.history,
    }
    print(
        f"epochs {results['epochs_trained']} (best {result.best_epoch}), {scores['test_images']} test images: "
        f"ELBO {scores['test_elbo']:.2f}, NLL (k={args.iw_samples}) {scores['test_nll']:.2f} nats"
    )
    write_results(args.out / RESULTS_NAME, results)
    return results


if __name__ == "__main__":
    run_main(main, parse_args)
