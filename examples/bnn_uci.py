"""Bayesian neural networks on the UCI regression benchmarks, against PBP and MC dropout.

The protocol of Hernandez-Lobato & Adams 2015 ("Probabilistic Backpropagation for Scalable
Learning of Bayesian Neural Networks", ICML), also used by Gal & Ghahramani 2016 ("Dropout as
a Bayesian Approximation", ICML): the standard 90/10 train/test splits (20 per data set,
protein 5), one hidden layer of 50 ReLU units (protein 100), inputs and targets standardised
with the training split's statistics, test RMSE and test log-likelihood in the original units,
reported as mean and standard error over the splits.

Method (``--method bbb``): a BNN with N(0, ``--prior-scale``^2) priors on every weight and a
latent homoscedastic noise precision tau ~ Gamma(1, 0.1) (``--noise-prior``; PBP used the much
tighter Gamma(6, 6)), fitted by minibatch SVI (``pyro_bdl.inference.fit``, Adam) with a
mean-field Gaussian guide initialised from the deterministic network and the local
reparameterisation trick (``--estimator``). Training runs the protocol's epochs or at least
``--min-steps`` steps of ``--batch-size`` rows, whichever is longer (1,000 full-batch steps
for the small sets: mean-field VI needs more than 40 epochs). The test log-likelihood is
log (1/S) sum_s N(y; mu_s(x), sigma_s^2) over S posterior draws. ``--method mc-dropout`` is
the MC dropout baseline: the same network with dropout before each linear layer, fitted by
MAP (weight decay from the Gaussian prior) with dropout kept on at test time.

**Choosing settings without the test rows** (``--select-on-validation``, Gal & Ghahramani's
protocol as in their 2018 rerun): 20% of the training rows of a split (``--validation-fraction``,
drawn with a generator seeded by ``--seed`` + split) are held out, every setting of ``GRID``
(noise prior Gamma(1, 0.1) or Gamma(6, 6) x {1,000 steps at lr 0.01, 500 steps at lr 0.02}) is
fitted on the other 80% and scored on them, and the setting with the best mean validation
log-likelihood is retrained on the whole training split and scored on its test rows. To fit a
CPU budget the vote is per data set over the first ``--selection-splits`` splits (default 3)
rather than per split; the chosen setting then runs on every split. Without the flag the
``--noise-prior``, ``--lr`` and ``--min-steps`` given are used as they are.

The results and the settings behind them are discussed in ``docs/bnn_experiments.md``.

Each finished fit (validation ones too) is appended to ``<out>/results.json`` at once; running
the same command again skips the fits already there (``--fresh`` starts over), so a long run
can be interrupted and resumed.

    python examples/bnn_uci.py --select-on-validation --skip-checks                # everything (~1 h)
    python examples/bnn_uci.py --datasets yacht bostonHousing --max-splits 3       # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import pyro
import torch
from pyro.infer import Predictive
from torch import nn
from tqdm.auto import tqdm

from pyro_bdl.bnn import (
    BNNRegressor,
    GaussianPrior,
    MAPGuide,
    MCDropoutRegressor,
    MeanFieldGuide,
    bayesianize,
    flipout,
    local_reparameterization,
)
from pyro_bdl.data import UCISplit, list_uci_datasets, load_uci_dataset
from pyro_bdl.evaluation import (
    gaussian_mixture_log_likelihood,
    interval_coverage,
    predictive_interval,
    predictive_mean_std,
    rmse,
)
from pyro_bdl.experiment import (
    UsageError,
    add_common_arguments,
    data_root,
    environment,
    environment_line,
    make_parser,
    require_positive,
    run_main,
    setup,
    write_results,
)
from pyro_bdl.inference.fit import fit

RESULTS_NAME = "results.json"
LARGE_ROWS = 5000
"""Data sets with more rows than this (kin8nm, naval, power, protein) count as large for ``--max-splits-large``."""

# Published results: (mean, standard error over the same splits) of test RMSE and test LL.
# PBP: Hernandez-Lobato & Adams 2015, Tables 2 and 3. MC dropout 2016: Gal & Ghahramani 2016,
# Table 1 (means only here). MC dropout 2018: the grid-search rerun in the README of
# github.com/yaringal/DropoutUncertaintyExps ("Grid Search (new)" columns: hyperparameters
# chosen on an 80/20 train/validation cut of each training split, 10x the epochs), the
# stronger and cleaner baseline.
_COLUMNS = ("pbp_rmse", "pbp_ll", "dropout_rmse", "dropout_ll", "dropout_2018_rmse", "dropout_2018_ll")
PUBLISHED = {
    name: dict(zip(_COLUMNS, values, strict=True))
    for name, values in {
        "bostonHousing": ((3.014, 0.180), (-2.574, 0.089), 2.97, -2.46, (2.90, 0.18), (-2.40, 0.04)),
        "concrete": ((5.667, 0.093), (-3.161, 0.019), 5.23, -3.04, (4.82, 0.16), (-2.93, 0.02)),
        "energy": ((1.804, 0.048), (-2.042, 0.019), 1.66, -1.99, (0.54, 0.06), (-1.21, 0.01)),
        "kin8nm": ((0.098, 0.001), (0.896, 0.006), 0.10, 0.95, (0.08, 0.00), (1.14, 0.01)),
        "naval-propulsion-plant": ((0.006, 0.000), (3.731, 0.006), 0.01, 3.80, (0.00, 0.00), (4.45, 0.00)),
        "power-plant": ((4.124, 0.035), (-2.837, 0.009), 4.02, -2.80, (4.01, 0.04), (-2.80, 0.01)),
        "protein-tertiary-structure": ((4.732, 0.013), (-2.973, 0.003), 4.36, -2.89, (4.27, 0.02), (-2.87, 0.00)),
        "wine-quality-red": ((0.635, 0.008), (-0.968, 0.014), 0.62, -0.93, (0.62, 0.01), (-0.93, 0.01)),
        "yacht": ((1.015, 0.054), (-1.634, 0.016), 1.11, -1.55, (0.67, 0.05), (-1.25, 0.01)),
    }.items()
}
PUBLISHED_SOURCE = (
    "PBP: Hernandez-Lobato & Adams 2015, Tables 2-3; dropout: Gal & Ghahramani 2016, Table 1; "
    "dropout_2018: grid-search rerun, README of github.com/yaringal/DropoutUncertaintyExps (2018)"
)
GRID = {
    "gamma(1,0.1)-lr0.01-1000steps": {"noise_prior": (1.0, 0.1), "lr": 1e-2, "min_steps": 1000},
    "gamma(6,6)-lr0.01-1000steps": {"noise_prior": (6.0, 6.0), "lr": 1e-2, "min_steps": 1000},
    "gamma(1,0.1)-lr0.02-500steps": {"noise_prior": (1.0, 0.1), "lr": 2e-2, "min_steps": 500},
    "gamma(6,6)-lr0.02-500steps": {"noise_prior": (6.0, 6.0), "lr": 2e-2, "min_steps": 500},
}
"""``--select-on-validation``'s settings: two noise priors x two step/learning-rate schedules."""
METHODS = ("bbb", "mc-dropout")
ESTIMATORS = ("local", "flipout", "none")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_common_arguments(parser, out="runs/bnn_uci")
    parser.add_argument("--datasets", nargs="+", default=None, help="data set names (default: every one found)")
    parser.add_argument("--method", choices=METHODS, default="bbb")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="local", help="gradient estimator for bbb")
    parser.add_argument("--max-splits", type=int, default=None, help="run at most this many splits per data set")
    parser.add_argument(
        "--max-splits-large", type=int, default=None, help=f"at most this many splits for sets over {LARGE_ROWS} rows"
    )
    parser.add_argument(
        "--epochs-factor",
        type=float,
        default=1.0,
        help="epochs = factor x the protocol's n_epochs.txt (40; protein 20)",
    )
    parser.add_argument("--min-steps", type=int, default=1000, help="train small sets longer: at least this many steps")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--prior-scale", type=float, default=1.0, help="std of the Gaussian weight prior")
    parser.add_argument(
        "--noise-prior",
        type=float,
        nargs=2,
        default=(1.0, 0.1),
        metavar=("SHAPE", "RATE"),
        help="Gamma prior of the noise precision of the standardised targets (PBP used 6 6)",
    )
    parser.add_argument(
        "--select-on-validation",
        action="store_true",
        help="choose --noise-prior, --lr and --min-steps per data set from GRID on validation rows (see above)",
    )
    parser.add_argument(
        "--selection-splits",
        type=int,
        default=3,
        help="--select-on-validation votes on this many first splits",
    )
    parser.add_argument(
        "--validation-fraction", type=float, default=0.2, help="share of each training split held out for selection"
    )
    parser.add_argument("--dropout", type=float, default=0.05, help="dropout rate of mc-dropout")
    parser.add_argument("--num-samples", type=int, default=200, help="posterior draws for the test predictive")
    parser.add_argument("--fresh", action="store_true", help="ignore results already in the output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--skip-checks",
        action="store_true",
        help="turn off Pyro's and torch.distributions' argument validation while training (about 20%% faster)",
    )
    args = parser.parse_args(argv)
    require_positive(parser, args, "batch_size", "num_samples", "threads", "selection_splits")
    require_positive(parser, args, "max_splits", "max_splits_large")
    if not args.epochs_factor > 0 or args.min_steps < 0:
        parser.error("--epochs-factor must be positive and --min-steps non-negative")
    if not args.lr > 0 or not args.prior_scale > 0 or not 0 < args.dropout < 1:
        parser.error("need --lr > 0, --prior-scale > 0 and 0 < --dropout < 1")
    if not 0 < args.validation_fraction < 1:
        parser.error(f"--validation-fraction must lie in (0, 1), got {args.validation_fraction}")
    return args


def build_model(args: argparse.Namespace, split: UCISplit):
    """``(model, guide)`` for training and ``(model, guide)`` for prediction (plain weight sampling)."""
    features, hidden = split.num_features, split.n_hidden
    if args.method == "mc-dropout":
        net = nn.Sequential(
            nn.Dropout(args.dropout),
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Dropout(args.dropout),
            nn.Linear(hidden, 1),
        )
        model = MCDropoutRegressor(
            net, noise="homoscedastic", prior_scale=args.prior_scale, noise_precision_prior=tuple(args.noise_prior)
        )
        guide = MAPGuide(model)
        return (model, guide), (model, guide)
    net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    model = BNNRegressor(
        bayesianize(net, prior=GaussianPrior(args.prior_scale)),
        noise="homoscedastic",
        noise_precision_prior=tuple(args.noise_prior),
    )
    guide = MeanFieldGuide(model)
    if args.estimator == "local":
        return local_reparameterization(model, guide), (model, guide)
    if args.estimator == "flipout":
        return flipout(model, guide), (model, guide)
    return (model, guide), (model, guide)


def epochs_for(args: argparse.Namespace, split: UCISplit) -> int:
    """The protocol's epochs times ``--epochs-factor``, raised so that at least ``--min-steps`` steps run."""
    epochs = max(1, round(split.n_epochs * args.epochs_factor))
    steps_per_epoch = math.ceil(split.x_train.shape[0] / args.batch_size)
    return max(epochs, math.ceil(args.min_steps / steps_per_epoch))


@torch.no_grad()
def evaluate(model, guide, split: UCISplit, num_samples: int) -> dict:
    """Test RMSE, log-likelihood and 95% interval coverage, in the original units."""
    predictive = Predictive(model, guide=guide, num_samples=num_samples, return_sites=("loc", "noise_scale"))
    draws = predictive(split.x_test)
    loc = split.unnormalize_targets(draws["loc"].reshape(num_samples, -1))  # (S, N_test)
    scale = draws["noise_scale"].reshape(num_samples, -1) * split.y_std
    y = split.y_test_original
    mean, std = predictive_mean_std(loc, scale)
    y_draws = loc + scale * torch.randn_like(loc)
    lower, upper = predictive_interval(y_draws, 0.95)
    return {
        "rmse": rmse(y, mean),
        "log_likelihood": float(gaussian_mixture_log_likelihood(y, loc, scale).mean()),
        "coverage_95": interval_coverage(y, lower, upper),
        "mean_predictive_std": float(std.mean()),
        "mean_noise_std": float(scale.mean()),
    }


def with_setting(args: argparse.Namespace, setting: dict) -> argparse.Namespace:
    """``args`` with a grid setting's values (noise prior, lr, min steps) put in."""
    return argparse.Namespace(**{**vars(args), **setting})


def run_split(args: argparse.Namespace, split: UCISplit) -> dict:
    """Fit on ``split.x_train`` and score on ``split.x_test`` (test rows, or validation rows)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed + split.split)
    (train_model, train_guide), (model, guide) = build_model(args, split)
    epochs = epochs_for(args, split)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = fit(
        train_model,
        train_guide,
        (split.x_train, split.y_train),
        optim=pyro.optim.Adam({"lr": args.lr}),
        epochs=epochs,
        batch_size=args.batch_size,
        seed=args.seed + split.split,
        progress=False,
    )
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    metrics = evaluate(model, guide, split, args.num_samples)
    return {
        "split": split.split,
        **metrics,
        "epochs": epochs,
        "steps": epochs * math.ceil(split.x_train.shape[0] / args.batch_size),
        "final_train_elbo": result.history[-1]["train_elbo"],
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
    }


def mean_and_standard_error(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n); 0 for a single value)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def summarise(name: str, runs: list[dict], total_splits: int) -> dict:
    rmse_mean, rmse_se = mean_and_standard_error([run["rmse"] for run in runs])
    ll_mean, ll_se = mean_and_standard_error([run["log_likelihood"] for run in runs])
    coverage, _ = mean_and_standard_error([run["coverage_95"] for run in runs])
    summary = {
        "splits_run": len(runs),
        "splits_total": total_splits,
        "rmse": [rmse_mean, rmse_se],
        "log_likelihood": [ll_mean, ll_se],
        "coverage_95": coverage,
        "train_seconds": math.fsum(run["train_seconds"] for run in runs),
        "train_cpu_seconds": math.fsum(run["train_cpu_seconds"] for run in runs),
    }
    published = PUBLISHED.get(name, {})
    for reference in ("pbp", "dropout_2018"):
        summary[f"log_likelihood_minus_{reference}"] = None
        summary[f"combined_standard_error_{reference}"] = None
        if f"{reference}_ll" in published:
            their_mean, their_se = published[f"{reference}_ll"]
            summary[f"log_likelihood_minus_{reference}"] = ll_mean - their_mean
            summary[f"combined_standard_error_{reference}"] = math.hypot(ll_se, their_se)
    return summary


def _z(summary: dict, reference: str) -> float | None:
    difference = summary[f"log_likelihood_minus_{reference}"]
    error = summary[f"combined_standard_error_{reference}"]
    return None if difference is None or not error > 0 else difference / error


def format_table(summaries: dict[str, dict]) -> str:
    """Ours against PBP and the 2018 MC dropout rerun; z = (ours - theirs) / combined standard error of the LL."""
    header = (
        f"{'data set':<27}{'splits':>7}  {'RMSE (ours)':>15}{'PBP':>16}{'dropout 2018':>16}"
        f"  {'test LL (ours)':>16}{'PBP':>17}{'dropout 2018':>17}{'z PBP':>7}{'z d2018':>9}"
    )
    lines = [header, "-" * len(header)]
    counts = {"pbp": [0, 0, 0], "dropout_2018": [0, 0, 0]}  # compared, better, better by > 1 combined se
    for name, summary in summaries.items():
        published = PUBLISHED.get(name, {})
        pbp_rmse, drop_rmse, pbp_ll, drop_ll = (
            "{:.3f} ± {:.3f}".format(*published[key]) if key in published else "-"
            for key in ("pbp_rmse", "dropout_2018_rmse", "pbp_ll", "dropout_2018_ll")
        )
        zs = []
        for reference, count in counts.items():
            z = _z(summary, reference)
            zs.append("-" if z is None else f"{z:+.1f}")
            if summary[f"log_likelihood_minus_{reference}"] is not None:
                difference = summary[f"log_likelihood_minus_{reference}"]
                count[0] += 1
                count[1] += difference > 0
                count[2] += difference > summary[f"combined_standard_error_{reference}"]
        lines.append(
            f"{name:<27}{summary['splits_run']:>3}/{summary['splits_total']:<3}"
            f"  {'{:.3f} ± {:.3f}'.format(*summary['rmse']):>15}{pbp_rmse:>16}{drop_rmse:>16}"
            f"  {'{:.3f} ± {:.3f}'.format(*summary['log_likelihood']):>16}{pbp_ll:>17}{drop_ll:>17}"
            f"{zs[0]:>7}{zs[1]:>9}"
        )
    for reference, label in (("pbp", "PBP's"), ("dropout_2018", "the 2018 MC dropout rerun's")):
        compared, better, clearly = counts[reference]
        lines.append(
            f"mean test log-likelihood above {label} on {better} of {compared} data sets, "
            f"by more than one combined standard error on {clearly}"
        )
    return "\n".join(lines)


def config_of(args: argparse.Namespace) -> dict:
    """The settings that change results (a resumed run must share them)."""
    keys = ("method", "estimator", "epochs_factor", "min_steps", "batch_size", "lr", "prior_scale", "noise_prior")
    keys = (*keys, "dropout")
    config = {key: getattr(args, key) for key in (*keys, "num_samples", "seed")}
    config["noise_prior"] = list(config["noise_prior"])
    if args.select_on_validation:
        config["selection"] = {
            "grid": {name: {**setting, "noise_prior": list(setting["noise_prior"])} for name, setting in GRID.items()},
            "splits": args.selection_splits,
            "validation_fraction": args.validation_fraction,
        }
    return config


def main(args: argparse.Namespace) -> dict:
    setup(args)
    if not args.skip_checks:
        return run(args)
    with pyro.validation_enabled(False):
        return run(args)


def load_previous(results_path: Path, config: dict, fresh: bool) -> dict:
    """The results a previous run with the same settings left, or an empty start."""
    if not results_path.exists() or fresh:
        return {}
    saved = json.loads(results_path.read_text())
    if saved.get("config") != config:
        raise UsageError(
            f"{results_path} holds results of other settings {saved.get('config')}; "
            f"this run has {config}. Pass --fresh to overwrite it or --out to write elsewhere"
        )
    return saved


def select_setting(args, data, payload, save) -> str:
    """Fit every GRID setting on the validation parts of the first splits; the best mean validation LL wins."""
    record = payload["selection"].setdefault(data.name, {"scores": {}, "chosen": None})
    splits = range(min(args.selection_splits, data.num_splits))
    for k in splits:
        part = data.validation_split(k, args.validation_fraction, seed=args.seed)
        for name, setting in GRID.items():
            runs = record["scores"].setdefault(name, [])
            if not any(run["split"] == k for run in runs):
                runs.append(run_split(with_setting(args, setting), part))
                save()
    means = {
        name: math.fsum(run["log_likelihood"] for run in runs) / len(runs) for name, runs in record["scores"].items()
    }
    record["mean_validation_log_likelihood"] = means
    record["chosen"] = max(GRID, key=lambda name: means[name])
    return record["chosen"]


def run(args: argparse.Namespace) -> dict:
    root = data_root(args, "uci")
    names = args.datasets if args.datasets is not None else list_uci_datasets(root)
    if not names:
        raise UsageError(
            f"no UCI data sets in {root} (expected one folder per data set holding data.txt; "
            f"to download them: pyro-bdl data fetch uci all --to {root.parent})"
        )
    results_path = args.out / RESULTS_NAME
    config = config_of(args)
    previous = load_previous(results_path, config, args.fresh)
    payload = {
        "config": config,
        "environment": environment(),
        "splits": previous.get("splits", {}),
        "selection": previous.get("selection", {}),
        "summary": {},
    }

    def save() -> None:
        write_results(results_path, payload, quiet=True)

    datasets = {name: load_uci_dataset(root, name) for name in names}
    plan = []
    for name, data in datasets.items():
        limit = args.max_splits_large if data.inputs.shape[0] > LARGE_ROWS else None
        limit = min(x for x in (limit, args.max_splits, data.num_splits) if x is not None)
        plan.extend((name, k) for k in range(limit))
    started, cpu_started = time.perf_counter(), time.process_time()
    chosen = {}
    for name, k in tqdm(plan, desc="splits", disable=args.no_progress):
        if name not in chosen:
            chosen[name] = select_setting(args, datasets[name], payload, save) if args.select_on_validation else None
        runs = payload["splits"].setdefault(name, [])
        if any(run["split"] == k for run in runs):
            continue
        settings = args if chosen[name] is None else with_setting(args, GRID[chosen[name]])
        runs.append(run_split(settings, datasets[name].split(k)))
        runs.sort(key=lambda run: run["split"])
        save()
    for name, data in datasets.items():
        runs = [run for run in payload["splits"].get(name, []) if any(run["split"] == k for n, k in plan if n == name)]
        payload["summary"][name] = summarise(name, runs, data.num_splits)
    payload["wall_seconds_this_run"] = time.perf_counter() - started
    payload["cpu_seconds_this_run"] = time.process_time() - cpu_started
    for kind in ("wall", "cpu"):
        earlier = previous.get(f"{kind}_seconds_all_runs", previous.get(f"{kind}_seconds_this_run", 0.0))
        payload[f"{kind}_seconds_all_runs"] = earlier + payload[f"{kind}_seconds_this_run"]
    payload["published"] = {
        "source": PUBLISHED_SOURCE,
        "values": {name: PUBLISHED[name] for name in names if name in PUBLISHED},
    }
    save()
    print(format_table(payload["summary"]))
    print(f"measured on: {environment_line(payload['environment'])}")
    print(f"results written to {results_path}")
    return payload


if __name__ == "__main__":
    run_main(main, parse_args)
