"""A deep latent Gaussian model (Rezende et al. 2014) on binarised MNIST, scored by importance weighting.

Protocol after Burda, Grosse & Salakhutdinov 2015 ("Importance weighted autoencoders", sec. 5):
Bernoulli pixels, Gaussian latents, tanh units; one stochastic layer of 50 units with two
deterministic layers of 200 units on each side (784-200-200-50), or two stochastic layers of
100 and 50 units with 200-200 deterministic units between the data and the first and 100-100
between the first and second (``--latent-dims 100,50``); Adam with beta = (0.9, 0.999) and
eps = 1e-4; training images dynamically binarised per minibatch; the test log-likelihood
estimated with k = 5000 importance samples per test image. Burda et al. report 86.76 (one
layer) and 85.33 nats (two layers) for the VAE after 3280 epochs; this script's defaults are
small so it runs on a CPU (raise ``--epochs``).

The last ``--validation`` training images (binarised once, seeded) pick the best epoch; the
test set is binarised once with a fixed seed. Checkpoints go to ``<out>/checkpoint.pt`` after
every epoch and a rerun resumes there (``--fresh`` starts over). Results go to
``<out>/results.json``, figures (samples, latent space, imputation, ELBO curve) to ``<out>/*.png``.

    python examples/dlgm_mnist.py --epochs 50
    python examples/dlgm_mnist.py --latent-dims 100,50 --epochs 50            # two stochastic layers
    python examples/dlgm_mnist.py --limit 3000 --validation 500 --test-limit 200 --iw-samples 100  # smoke
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import pyro
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

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
    require_positive,
    run_main,
    score_held_out,
    setup,
    write_results,
)
from pyro_bdl.figures import dlgm as figures
from pyro_bdl.imputation import impute
from pyro_bdl.inference.fit import fit
from pyro_bdl.models import DLGM, DLGMGuide

CHECKPOINT_NAME = "checkpoint.pt"
RESULTS_NAME = "results.json"
BURDA_HIDDEN = {1: [[200, 200]], 2: [[200, 200], [100, 100]]}
"""Deterministic layer sizes of Burda et al. 2015, sec. 5, by number of stochastic layers."""
BURDA_TARGET_NLL = {1: 86.76, 2: 85.33}
"""Their VAE test NLL (nats, k = 5000) after 3280 epochs."""


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from error
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/dlgm_mnist")
    parser.add_argument(
        "--latent-dims", type=int_list, default=[50], help="stochastic layer sizes, bottom to top (e.g. 100,50)"
    )
    parser.add_argument(
        "--hidden-dims",
        type=int_list,
        action="append",
        default=None,
        help="hidden sizes of one deterministic block, bottom to top; repeat once per stochastic layer "
        "(default: Burda et al. 2015, 200,200 [and 100,100])",
    )
    parser.add_argument(
        "--layer-scale",
        choices=["fixed", "amortised"],
        default="amortised",
        help="prior scale of z_l given z_{l+1}: learned constant (Rezende et al.) or MLP output (Burda et al.)",
    )
    parser.add_argument("--activation", default="tanh")
    parser.add_argument(
        "--flow", choices=["none", "planar", "iaf"], default="none", help="normalising flow in the guide"
    )
    parser.add_argument("--num-flows", type=int, default=2)
    parser.add_argument(
        "--loss",
        choices=["elbo", "mean_field", "iwae"],
        default="mean_field",
        help="Trace_ELBO, TraceMeanField_ELBO (analytic KL) or RenyiELBO(alpha=0) (IWAE bound)",
    )
    parser.add_argument("--particles", type=int, default=1, help="samples per data point in the training loss")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    add_mnist_split_arguments(parser)
    parser.add_argument("--iw-samples", type=int, default=5000, help="k, importance samples per test image")
    parser.add_argument(
        "--full-test-iw-samples",
        type=int,
        default=0,
        help="also score every test image with this many importance samples (0: off), for when k = --iw-samples "
        "on all of them takes too long",
    )
    parser.add_argument("--elbo-samples", type=int, default=100, help="samples per test image for the test ELBO")
    parser.add_argument("--particle-chunk", type=int, default=500, help="importance samples vectorised at once")
    parser.add_argument("--data-chunk", type=int, default=100, help="test images scored at once")
    parser.add_argument("--impute-images", type=int, default=1000, help="test images for the imputation score")
    parser.add_argument("--impute-steps", type=int, default=100, help="Markov chain steps per imputation")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.hidden_dims is None:
        args.hidden_dims = BURDA_HIDDEN.get(len(args.latent_dims), [[200, 200]] * len(args.latent_dims))
    if len(args.hidden_dims) != len(args.latent_dims):
        parser.error(
            f"give --hidden-dims once per stochastic layer ({len(args.latent_dims)}), got {len(args.hidden_dims)}"
        )
    require_positive(
        parser,
        args,
        "epochs",
        "batch_size",
        "iw_samples",
        "elbo_samples",
        "particle_chunk",
        "data_chunk",
        "particles",
        "impute_steps",
        "threads",
        "num_flows",
    )
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.impute_images < 0 or args.full_test_iw_samples < 0:
        parser.error("--impute-images and --full-test-iw-samples must be non-negative")
    check_mnist_split_arguments(parser, args)
    return args


def make_loss(args: argparse.Namespace):
    vectorise = {"num_particles": args.particles, "vectorize_particles": args.particles > 1, "max_plate_nesting": 1}
    if args.loss == "iwae":
        return RenyiELBO(alpha=0.0, **vectorise)
    if args.loss == "mean_field":
        return TraceMeanField_ELBO(**vectorise)
    return Trace_ELBO(**vectorise)


def random_mask(shape: tuple[int, ...], observed: float, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < observed


def imputation(model, guide, data: dict, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Impute 90% and 50% missing pixels of test digits; squared error on the missing pixels vs a baseline.

    The score is the mean squared error (Brier score) of the imputed probability against the
    binarised pixel; the baseline fills each missing pixel with its mean intensity over the
    training images. Writes the figures when asked.
    """
    test = data["test"][: args.impute_images]
    pixel_mean = data["train"].mean(0)
    scores = {}
    for observed in (0.1, 0.5):
        mask = random_mask(tuple(test.shape), observed, args.seed + 2)
        result = impute(
            model,
            guide,
            test,
            mask,
            num_steps=args.impute_steps,
            burn_in=args.impute_steps // 5,
            progress=not args.no_progress,
        )
        missing = ~mask
        error = (result.mean - test).square()[missing].mean().item()
        baseline = (pixel_mean.expand_as(test) - test).square()[missing].mean().item()
        scores[f"{round(observed * 100)}%_observed"] = {"mse_dlgm": error, "mse_pixel_mean_baseline": baseline}
        if not args.no_figures:
            figures.imputation_panels(
                test[:10],
                mask[:10],
                result.mean[:10],
                args.out / f"imputation_{round(observed * 100)}.png",
                title=f"{round(observed * 100)}% of pixels observed (red: unobserved)",
            )
    return scores


def draw_figures(model, guide, data: dict, history: list[dict], args: argparse.Namespace) -> None:
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(None, num_data=100)
        figures.sample_grid(trace.nodes["obs"]["fn"].mean, args.out / "samples.png", title="E[y | z], z ~ p(z)")
        test = data["test"][:5000]
        means = guide.posterior_means(test)[0]
    labels = data["test_labels"][: len(test)]
    if means.shape[1] == 2:
        figures.latent_scatter(means, labels, args.out / "latent.png", title="E_q[z_1 | y], test digits")
    else:
        centred = means - means.mean(0)
        _, _, components = torch.linalg.svd(centred, full_matrices=False)
        projected = centred @ components[:2].T
        figures.latent_scatter(
            projected,
            labels,
            args.out / "latent.png",
            axis_labels=("PC 1", "PC 2"),
            title=f"E_q[z_1 | y] ({means.shape[1]}-D), first two principal components",
        )
    figures.elbo_curve(history, args.out / "elbo.png")


def published_reference(args: argparse.Namespace) -> float | None:
    """Burda et al.'s VAE NLL, only for their architecture, the full data and k = 5000."""
    layers = len(args.latent_dims)
    same_net = args.latent_dims in ([50], [100, 50]) and args.hidden_dims == BURDA_HIDDEN[layers]
    applies = same_net and args.flow == "none" and args.iw_samples == 5000 and is_full_mnist_protocol(args)
    return BURDA_TARGET_NLL[layers] if applies else None


def build_model(args: argparse.Namespace) -> tuple[DLGM, DLGMGuide]:
    """The DLGM of the flags (784 Bernoulli pixels) and its amortised guide (``pyro-bdl sample dlgm`` uses it too)."""
    model = DLGM(
        784,
        args.latent_dims,
        args.hidden_dims,
        "bernoulli_logit",
        activation=args.activation,
        layer_scale=args.layer_scale,
    )
    return model, DLGMGuide.for_model(model, flow=None if args.flow == "none" else args.flow, num_flows=args.num_flows)


def main(args: argparse.Namespace) -> dict:
    setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    data = load_binarised_mnist(args)
    model, guide = build_model(args)
    checkpoint = args.out / CHECKPOINT_NAME
    if checkpoint.exists() and not args.fresh:
        print(f"resumed from {checkpoint}")
    started = time.perf_counter()
    result = fit(
        model,
        guide,
        data["train"],
        optim=pyro.optim.Adam({"lr": args.lr, "betas": (0.9, 0.999), "eps": 1e-4}),
        epochs=args.epochs,
        batch_size=args.batch_size,
        loss=make_loss(args),
        validation_data=data.get("valid"),
        transform_batch=dynamic_binarisation,
        checkpoint_path=checkpoint,
        resume=not args.fresh,
        seed=args.seed,
        progress=not args.no_progress,
    )
    fit_seconds = time.perf_counter() - started
    scores = score_held_out(model, guide, data["test"][: args.test_limit], args)
    full = None
    if args.full_test_iw_samples:
        full = score_held_out(model, guide, data["test"], args, iw_samples=args.full_test_iw_samples)
    imputed = imputation(model, guide, data, args) if args.impute_images else {}
    if not args.no_figures:
        draw_figures(model, guide, data, result.history, args)
    reference = published_reference(args)
    results = {
        "config": arguments_record(args),
        "architecture": {"latent_dims": args.latent_dims, "hidden_dims": args.hidden_dims},
        "epochs_trained": len(result.history),
        "train_images": len(data["train"]),
        "best_epoch": result.best_epoch,
        "best_validation_elbo": result.best_validation_elbo,
        **scores,
        "full_test_set": full,
        "imputation": imputed,
        "train_seconds_total": sum(entry["seconds"] for entry in result.history),
        "fit_seconds_this_run": fit_seconds,
        "environment": environment(),
        "published_nll": reference,
        "history": result.history,
    }
    print(
        f"epochs {results['epochs_trained']} (best {result.best_epoch}), test images {scores['test_images']}: "
        f"ELBO {scores['test_elbo']:.2f}, "
        f"IW log-likelihood (k={args.iw_samples}) {scores['test_iw_log_likelihood']:.2f}, "
        f"NLL {scores['test_nll']:.2f} nats"
    )
    if reference is not None:
        print(f"published reference (Burda et al. 2015, VAE after 3280 epochs): NLL {reference} nats")
    if full is not None:
        print(f"all {full['test_images']} test images, k={full['iw_samples']}: NLL {full['test_nll']:.2f} nats")
    for name, values in imputed.items():
        print(
            f"imputation {name}: squared error {values['mse_dlgm']:.4f} "
            f"(pixel-mean baseline {values['mse_pixel_mean_baseline']:.4f})"
        )
    if not args.no_figures:
        print(f"figures written to {args.out}")
    write_results(args.out / RESULTS_NAME, results)
    return results


if __name__ == "__main__":
    run_main(main, parse_args)
