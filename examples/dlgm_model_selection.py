"""Model selection for DLGMs on binarised MNIST: held-out ELBO (free energy) against the IW bound.

Trains one DLGM per configuration (latent sizes, one entry per stochastic layer, bottom to top,
e.g. ``2``, ``20``, ``100,50``) on the same training images, then scores every model on the same
held-out test images, binarised once (seeded): the ELBO, the bound the slides score models with,
and the importance-weighted bound ``log (1/k) sum_i w_i`` (Burda et al. 2015), which is tighter
and approaches ``log p(y)`` as k grows. The gap between the two is the average
``KL(q(z | y) || p(z | y))`` left after importance weighting. Prints a table, writes
``<out>/model_selection.json`` and, for configurations with a 2-D bottom layer, a latent-space
scatter ``<out>/<name>/latent.png``. Each model checkpoints to ``<out>/<name>/checkpoint.pt`` and
resumes when rerun.

    python examples/dlgm_model_selection.py
    python examples/dlgm_model_selection.py --configs 2 10 50 100,50 --epochs 20 --limit 60000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import pyro
import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_bdl.data import binarize_dynamic, load_mnist, to_float
from pyro_bdl.experiment import (
    add_common_arguments,
    arguments_record,
    data_root,
    environment,
    make_parser,
    require_positive,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.figures import dlgm as figures
from pyro_bdl.inference import elbo_per_datum, importance_log_likelihood
from pyro_bdl.inference.fit import fit
from pyro_bdl.models import DLGM, DLGMGuide

RESULTS_NAME = "model_selection.json"
HIDDEN_BY_LAYER = ([200, 200], [100, 100], [100, 100])
"""Deterministic sizes below stochastic layer 1, 2, 3 (Burda et al. 2015, sec. 5, for the first two)."""


def latent_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"a configuration is comma-separated latent sizes, got {text!r}") from error
    if not sizes or any(size < 1 for size in sizes) or len(sizes) > len(HIDDEN_BY_LAYER):
        raise argparse.ArgumentTypeError(
            f"a configuration is 1 to {len(HIDDEN_BY_LAYER)} positive latent sizes, got {text!r}"
        )
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/dlgm_model_selection")
    parser.add_argument(
        "--configs", type=latent_sizes, nargs="+", default=[[2], [10], [50], [50, 20]], help="latent sizes per model"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=10000, help="training images (the first LIMIT)")
    parser.add_argument("--test-limit", type=int, default=1000, help="held-out test images scored")
    parser.add_argument("--iw-samples", type=int, default=1000, help="k of the importance-weighted bound")
    parser.add_argument("--elbo-samples", type=int, default=100, help="samples per image for the ELBO")
    parser.add_argument("--particle-chunk", type=int, default=500)
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    require_positive(
        parser,
        args,
        "epochs",
        "batch_size",
        "limit",
        "test_limit",
        "iw_samples",
        "elbo_samples",
        "particle_chunk",
        "threads",
    )
    return args


def config_name(latent_dims: Sequence[int]) -> str:
    return "z" + "-".join(str(size) for size in latent_dims)


def train_and_score(latent_dims: list[int], train: torch.Tensor, test: torch.Tensor, labels: torch.Tensor,
                    args: argparse.Namespace) -> dict:  # fmt: skip
    """Fit one configuration (resuming its checkpoint) and score it on ``test``."""
    name = config_name(latent_dims)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    hidden = [list(HIDDEN_BY_LAYER[layer]) for layer in range(len(latent_dims))]
    model = DLGM(784, latent_dims, hidden, "bernoulli_logit", layer_scale="amortised")
    guide = DLGMGuide.for_model(model)
    started = time.perf_counter()
    result = fit(
        model,
        guide,
        train,
        optim=pyro.optim.Adam({"lr": args.lr, "betas": (0.9, 0.999), "eps": 1e-4}),
        epochs=args.epochs,
        batch_size=args.batch_size,
        loss=TraceMeanField_ELBO(),
        transform_batch=lambda batch: (binarize_dynamic(batch),),
        checkpoint_path=args.out / name / "checkpoint.pt",
        resume=not args.fresh,
        seed=args.seed,
        progress=not args.no_progress,
    )
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    elbo = elbo_per_datum(model, guide, test, num_samples=args.elbo_samples, particle_chunk=args.particle_chunk)
    iw = importance_log_likelihood(model, guide, test, num_samples=args.iw_samples, particle_chunk=args.particle_chunk)
    score_seconds = time.perf_counter() - started
    if latent_dims[0] == 2:
        means = guide.posterior_means(test)[0]
        figures.latent_scatter(
            means, labels, args.out / name / "latent.png", title=f"{name}: E_q[z_1 | y], test digits"
        )
    return {
        "name": name,
        "latent_dims": latent_dims,
        "hidden_dims": hidden,
        "epochs": len(result.history),
        "final_train_elbo": result.history[-1]["train_elbo"] if result.history else None,
        "heldout_elbo": elbo.mean().item(),
        "heldout_iw_log_likelihood": iw.mean().item(),
        "gap": (iw - elbo).mean().item(),
        "train_seconds_this_run": train_seconds,
        "score_seconds": score_seconds,
    }


def table(rows: list[dict], iw_samples: int) -> str:
    header = f"{'model':<12} {'epochs':>6} {'held-out ELBO':>14} {f'IW bound k={iw_samples}':>18} {'gap':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['name']:<12} {row['epochs']:>6} {row['heldout_elbo']:>14.2f} "
            f"{row['heldout_iw_log_likelihood']:>18.2f} {row['gap']:>7.2f}"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict:
    setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    root = data_root(args, "mnist")
    train = to_float(load_mnist(root, "train", limit=args.limit).images, flatten=True)
    test_set = load_mnist(root, "test", limit=args.test_limit)
    test = torch.bernoulli(
        to_float(test_set.images, flatten=True), generator=torch.Generator().manual_seed(args.seed + 1)
    )
    rows = [train_and_score(dims, train, test, test_set.labels, args) for dims in args.configs]
    best_elbo = max(rows, key=lambda row: row["heldout_elbo"])["name"]
    best_iw = max(rows, key=lambda row: row["heldout_iw_log_likelihood"])["name"]
    print(table(rows, args.iw_samples))
    print(f"best by held-out ELBO: {best_elbo}; best by IW bound: {best_iw}")
    results = {
        "config": arguments_record(args),
        "train_images": len(train),
        "test_images": len(test),
        "models": rows,
        "best_by_elbo": best_elbo,
        "best_by_iw_bound": best_iw,
        "environment": environment(),
    }
    write_results(args.out / RESULTS_NAME, results)
    return results


if __name__ == "__main__":
    run_main(main, parse_args)
