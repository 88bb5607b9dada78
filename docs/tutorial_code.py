"""The tutorial's code (docs/tutorial.md): a new Pyro model built from pyro_bdl's parts, end to end.

A "wide and deep" Bayesian regression on a UCI data set: a Bayesian linear term plus a small
Bayesian network for what the linear term misses, a Gaussian likelihood from the GLM table.
Fitted by minibatch SVI with the number of epochs chosen on validation rows, then scored
(test log-likelihood, the importance-weighted bound on the evidence, PSIS k-hat), turned into
ArviZ ``InferenceData`` and drawn. Every code block of docs/tutorial.md is a section of this
file (between ``--8<--`` markers), and tests/test_docs_tutorial.py runs it at tiny size.

Run it (a minute or two on one CPU thread; data as in the README)::

    PYRO_BDL_DATA=<data> python docs/tutorial_code.py
"""

# --8<-- [start:imports]
import math
from pathlib import Path

import arviz as az
import pyro
import torch
from matplotlib.figure import Figure
from pyro.infer import Predictive
from pyro.nn import PyroModule
from torch import nn

from pyro_bdl.bnn import MeanFieldGuide
from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.data import load_uci_dataset, uci_root_from_env
from pyro_bdl.diagnostics import importance_khat, to_inference_data
from pyro_bdl.evaluation import (
    gaussian_mixture_log_likelihood,
    interval_coverage,
    predictive_interval,
    predictive_mean_std,
    rmse,
)
from pyro_bdl.inference import fit, joint_log_importance_weights
from pyro_bdl.layers import BayesianLinear, GaussianPrior
from pyro_bdl.observation import ObservationModel

# --8<-- [end:imports]


# --8<-- [start:model]
class WideAndDeepRegressor(PyroModule):
    """``y_n ~ Normal(x_n . w + b + g_W(x_n), sigma^2)``, with priors on ``w``, ``b`` and ``W``.

    The wide part is a Bayesian linear regression; the deep part ``g_W`` is a one-hidden-layer
    Bayesian network with a tighter prior, so it only explains what the linear part cannot.
    ``sigma`` is a learned parameter of the observation model. Shapes: ``x`` (data, features),
    ``y`` (data,); every weight may carry leading sample dims (``Predictive(parallel=True)``).
    """

    def __init__(self, in_features: int, hidden: int = 50, deep_prior_scale: float = 0.3) -> None:
        super().__init__()
        self.wide = BayesianLinear(in_features, 1, prior=GaussianPrior(1.0))
        self.deep = PyroModule[nn.Sequential](
            BayesianLinear(in_features, hidden, prior=GaussianPrior(1.0)),
            PyroModule[nn.ReLU](),
            BayesianLinear(hidden, 1, prior=GaussianPrior(deep_prior_scale)),
        )
        # the likelihood's site and plate: the model opens the data plate itself, hence plates=()
        self.likelihood = ObservationModel("gaussian", plates=(), scale=0.5)

    def forward(self, x, y=None, *, obs_mask=None, num_data=None):
        if num_data is not None and num_data != x.shape[0]:
            raise ValueError(f"num_data must equal the rows of x ({x.shape[0]}) or be None, got {num_data!r}")
        loc = (self.wide(x) + self.deep(x)).squeeze(-1)  # (..., data): sample dims of the weights first
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            pyro.deterministic("loc", loc)
            return self.likelihood(loc, y, obs_mask)


# --8<-- [end:model]


# --8<-- [start:main]
def main(
    dataset: str = "yacht",
    max_epochs: int = 1000,
    patience: int = 100,
    num_samples: int = 1000,
    out: str | Path = "runs/tutorial",
    progress: bool = True,
) -> dict:
    """Run the tutorial; returns its numbers (also printed). Figures go to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # the timings in docs/tutorial.md are one thread
    # --8<-- [end:main]

    # --8<-- [start:data]
    data = load_uci_dataset(uci_root_from_env(), dataset)  # $PYRO_BDL_DATA/uci/<dataset>/
    tune = data.validation_split(0)  # split 0's training rows, 20 % held out for choosing settings
    split = data.split(0)  # the standard split 0: all its training rows, and its test rows
    rows = f"{len(tune.x_train)} + {len(tune.x_test)} tuning, {len(split.x_train)} training, {len(split.x_test)} test"
    print(f"{dataset}: {rows} rows, {split.num_features} inputs")
    # --8<-- [end:data]

    # --8<-- [start:fit]
    def train(rows, epochs, validation=None):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = WideAndDeepRegressor(rows.num_features)
        guide = MeanFieldGuide(model)  # AutoNormal, means at the network's initialisation
        result = fit(
            model,
            guide,
            (rows.x_train, rows.y_train),
            optim=pyro.optim.Adam({"lr": 3e-2}),  # chosen on the validation ELBO, see the page
            epochs=epochs,
            batch_size=32,
            validation_data=validation,
            validation_samples=10,
            patience=patience if validation is not None else None,
            progress=progress,
        )
        return model, guide, result

    # choose the number of epochs on the held-out training rows (never on the test rows) ...
    _, _, tuning = train(tune, max_epochs, validation=(tune.x_test, tune.y_test))
    epochs = tuning.best_epoch
    print(f"best epoch on the validation rows: {epochs} (validation ELBO {tuning.best_validation_elbo:.3f} per datum)")
    # ... then train on all training rows of the split for that many epochs
    model, guide, result = train(split, epochs)
    print(f"final training ELBO: {result.history[-1]['train_elbo']:.3f} nats per datum")
    # --8<-- [end:fit]

    # --8<-- [start:score]
    with torch.no_grad():
        draws = Predictive(model, guide=guide, num_samples=num_samples, parallel=True)(split.x_test)
    loc = split.unnormalize_targets(draws["loc"])  # (S, N_test), in the target's original units
    noise = model.likelihood.scale.detach() * split.y_std  # sigma, a point estimate
    y = split.y_test_original
    test_ll = gaussian_mixture_log_likelihood(y, loc, noise).mean().item()
    mean, _ = predictive_mean_std(loc, noise)
    lower, upper = predictive_interval(draws["obs"] * split.y_std + split.y_mean, level=0.95)
    coverage = interval_coverage(y, lower, upper)
    print(f"test RMSE {rmse(y, mean):.3f}, log-likelihood {test_ll:.3f} nats per datum, 95 % coverage {coverage:.2f}")

    # importance weights log p(y, theta_s) - log q(theta_s) of the whole training set (normalised units)
    log_w = joint_log_importance_weights(model, guide, split.x_train, split.y_train, num_samples=num_samples)
    elbo = log_w.mean().item()
    iw_bound = (torch.logsumexp(log_w, 0) - math.log(num_samples)).item()
    n_train = split.x_train.shape[0]
    print(f"ELBO {elbo / n_train:.3f} <= IW bound {iw_bound / n_train:.3f} <= log p(y | x), nats per datum")
    khat = importance_khat(model, guide, split.x_train, split.y_train, num_samples=num_samples)
    print(khat)
    # --8<-- [end:score]

    # --8<-- [start:arviz]
    idata = to_inference_data(
        guide,
        model,
        (split.x_train, split.y_train),
        num_samples=num_samples,
        dims={"wide.weight": ["output", "feature"]},
    )
    print(az.summary(idata, var_names=["wide.weight"], kind="stats"))
    loo = az.loo(idata, pointwise=True)
    print(loo)
    # --8<-- [end:arviz]

    # --8<-- [start:figure]
    figure = Figure(figsize=(5, 4.5))
    axes = figure.add_subplot()
    order = torch.argsort(mean)
    axes.errorbar(
        mean[order],
        y[order],
        xerr=torch.stack([mean - lower, upper - mean])[:, order],
        fmt="o",
        markersize=3,
        elinewidth=0.8,
        label="test rows, 95 % predictive interval",
    )
    low, high = min(y.min(), lower.min()).item(), max(y.max(), upper.max()).item()
    axes.plot([low, high], [low, high], color="grey", linewidth=0.8, label="prediction = truth")
    axes.set_xlabel("predictive mean")
    axes.set_ylabel("observed target")
    axes.set_title(f"{dataset}, split 0: test RMSE {rmse(y, mean):.2f}, LL {test_ll:.2f}")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "predictions.png", dpi=110)
    print(f"wrote {out / 'predictions.png'}")
    # --8<-- [end:figure]

    return {
        "dataset": dataset,
        "epochs": epochs,
        "test_rmse": rmse(y, mean),
        "test_log_likelihood": test_ll,
        "coverage_95": coverage,
        "elbo_per_datum": elbo / n_train,
        "iw_bound_per_datum": iw_bound / n_train,
        "max_khat": float(khat.max_khat),
        "loo_pareto_k_max": float(loo.pareto_k.max()),
        "figure": str(out / "predictions.png"),
    }


if __name__ == "__main__":
    main()
