"""InferenceData from NUTS and from SVI guides on conjugate linear regression (closed-form posterior)."""

from __future__ import annotations

import arviz as az
import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from pyro_bdl.diagnostics import SingleChainWarning, pointwise_log_likelihood, to_inference_data
from tests.pyro_bdl.diagnostics.conjugate import (
    SIGMA,
    regression_data,
    regression_guide,
    regression_model,
    regression_posterior,
)

pytestmark = pytest.mark.usefixtures("pyro_state")

NUM_DATA, FEATURES = 20, 2


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(1)
    return regression_data(NUM_DATA, FEATURES)


@pytest.fixture(scope="module")
def two_chain_mcmc(data):
    """NUTS with 2 chains, drawn one after the other (Pyro would fork one process per chain)."""
    pyro.set_rng_seed(2)
    pyro.enable_validation(True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pyro.infer.mcmc.api.mp.cpu_count", lambda: 1)
        with pytest.warns(UserWarning, match="Chains will be drawn sequentially"):
            mcmc = MCMC(NUTS(regression_model), num_samples=300, warmup_steps=100, num_chains=2, disable_progbar=True)
    mcmc.run(*data)
    return mcmc


def hand_log_likelihood(x: torch.Tensor, y: torch.Tensor, w: np.ndarray) -> np.ndarray:
    """(chain, draw, N): log N(y_n | x_n . w, sigma^2) for every draw of w (chain, draw, D)."""
    w = torch.as_tensor(w, dtype=x.dtype)
    return dist.Normal(w @ x.T, SIGMA).log_prob(y).numpy()


def fit_autoguide(guide_class, data, steps=200):
    guide = guide_class(regression_model)
    svi = SVI(regression_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(steps):
        svi.step(*data)
    return guide


def test_mcmc_groups_shapes_and_named_dims(two_chain_mcmc, data):
    idata = to_inference_data(two_chain_mcmc, model_args=data)
    assert set(idata.groups()) == {
        "posterior",
        "sample_stats",
        "log_likelihood",
        "posterior_predictive",
        "observed_data",
    }
    assert dict(idata.posterior["w"].sizes) == {"chain": 2, "draw": 300, "w_dim_0": FEATURES}
    assert dict(idata.log_likelihood["obs"].sizes) == {"chain": 2, "draw": 300, "data": NUM_DATA}
    assert dict(idata.posterior_predictive["obs"].sizes) == {"chain": 2, "draw": 300, "data": NUM_DATA}
    assert dict(idata.observed_data["obs"].sizes) == {"data": NUM_DATA}
    np.testing.assert_array_equal(idata.log_likelihood["data"].values, np.arange(NUM_DATA))
    np.testing.assert_allclose(idata.observed_data["obs"].values, data[1].numpy())
    assert idata.sample_stats["diverging"].shape == (2, 300)
    assert idata.posterior.attrs["inference"] == "mcmc"


def test_mcmc_posterior_matches_closed_form_and_loglik_matches_hand_computation(two_chain_mcmc, data):
    idata = to_inference_data(two_chain_mcmc, model_args=data, posterior_predictive=False)
    mean, cov = regression_posterior(*data)
    w = idata.posterior["w"].values  # (chain, draw, D)
    sd = cov.diag().sqrt().numpy()
    # 600 correlated draws: allow 5 Monte Carlo standard errors at an ESS of 100
    np.testing.assert_allclose(w.reshape(-1, FEATURES).mean(0), mean.numpy(), atol=float(5 * sd.max() / 10))
    np.testing.assert_allclose(idata.log_likelihood["obs"].values, hand_log_likelihood(*data, w), rtol=1e-5, atol=1e-5)
    # the draws of each chain stay in their chain: chain 1 of the posterior is chain 1 of the run
    np.testing.assert_array_equal(w[1], two_chain_mcmc.get_samples(group_by_chain=True)["w"][1].numpy())


# arviz 0.23.4's compare sorts with DataFrame.sort_values(inplace=True), which pandas 3 deprecates
@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.sort_values is deprecated")
def test_arviz_summary_loo_and_compare_run(two_chain_mcmc, data):
    nuts = to_inference_data(two_chain_mcmc, model_args=data, coords={"data": [f"row{i}" for i in range(NUM_DATA)]})
    guide_idata = to_inference_data(regression_guide(*data), regression_model, data, num_samples=1000)
    summary = az.summary(nuts, var_names=["w"])
    assert summary.shape[0] == FEATURES and (summary["r_hat"] < 1.1).all()
    loo = az.loo(nuts, pointwise=True)
    assert loo.n_data_points == NUM_DATA and np.isfinite(loo.elpd_loo)
    assert (loo.pareto_k < 0.7).all()
    comparison = az.compare({"nuts": nuts, "exact guide": guide_idata})
    assert set(comparison.index) == {"nuts", "exact guide"}
    # the exact posterior and NUTS predict the data equally well, up to Monte Carlo error
    assert abs(comparison.loc["nuts", "elpd_loo"] - comparison.loc["exact guide", "elpd_loo"]) < 1.0


# arviz 0.23.4 passes alias_mapping dicts that matplotlib 3.11 deprecates
@pytest.mark.filterwarnings("ignore:Passing a dict or None as alias_mapping")
def test_plot_posterior_runs(two_chain_mcmc, data):
    matplotlib.use("Agg")
    axes = az.plot_posterior(
        to_inference_data(two_chain_mcmc, model_args=data, posterior_predictive=False), var_names=["w"]
    )
    assert np.size(axes) == FEATURES
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoMultivariateNormal])
def test_autoguide_groups_shapes_and_one_chain(guide_class, data):
    guide = fit_autoguide(guide_class, data)
    idata = to_inference_data(guide, regression_model, data, num_samples=1000)
    assert set(idata.groups()) == {"posterior", "log_likelihood", "posterior_predictive", "observed_data"}
    assert dict(idata.posterior["w"].sizes) == {"chain": 1, "draw": 1000, "w_dim_0": FEATURES}
    assert dict(idata.log_likelihood["obs"].sizes) == {"chain": 1, "draw": 1000, "data": NUM_DATA}
    assert dict(idata.posterior_predictive["obs"].sizes) == {"chain": 1, "draw": 1000, "data": NUM_DATA}
    assert idata.posterior.attrs["inference"] == "svi" and idata.posterior.attrs["guide"] == guide_class.__name__
    np.testing.assert_allclose(
        idata.log_likelihood["obs"].values,
        hand_log_likelihood(*data, idata.posterior["w"].values),
        rtol=1e-5,
        atol=1e-5,
    )
    assert np.isfinite(az.loo(idata).elpd_loo)
    assert az.summary(idata, kind="stats").shape[0] == FEATURES


def test_guide_draws_are_the_guides_distribution(data):
    """The exact-posterior guide: draws have the closed-form mean and covariance; predictive spread adds the noise."""
    mean, cov = regression_posterior(*data)
    idata = to_inference_data(regression_guide(*data), regression_model, data, num_samples=4000)
    w = idata.posterior["w"].values.reshape(-1, FEATURES)
    sd = cov.diag().sqrt().numpy()
    np.testing.assert_allclose(w.mean(0), mean.numpy(), atol=float(5 * sd.max() / np.sqrt(4000)))
    np.testing.assert_allclose(np.cov(w.T), cov.numpy(), rtol=0.15, atol=1e-4)
    x = data[0].numpy()
    predictive_var = np.einsum("nd,de,ne->n", x, cov.numpy(), x) + SIGMA**2
    np.testing.assert_allclose(idata.posterior_predictive["obs"].values[0].var(0), predictive_var, rtol=0.15)


def test_vectorised_and_sequential_replay_agree(data):
    draws = {"w": torch.randn(7, FEATURES)}
    fast = pointwise_log_likelihood(regression_model, draws, data, particle_chunk=3)["obs"]
    slow = pointwise_log_likelihood(regression_model, draws, data, vectorize=False)["obs"]
    assert fast.shape == (7, NUM_DATA)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast, torch.as_tensor(hand_log_likelihood(*data, draws["w"].numpy())))


def table_model(y: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Rows in plate ``data`` (dim -2), columns in plate ``features`` (dim -1), optional mask."""
    features = pyro.plate("features", y.shape[1], dim=-1)
    with features:
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0], dim=-2), features, poutine.mask(mask=True if mask is None else mask):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=y)


def test_loglik_is_per_row_summed_over_other_plates_and_respects_the_mask():
    y = torch.randn(6, 3)
    mask = torch.rand(6, 3) > 0.3
    draws = {"loc": torch.randn(5, 3)}
    log_lik = pointwise_log_likelihood(table_model, draws, (y, mask))["obs"]
    expected = (dist.Normal(draws["loc"][:, None, :], 1.0).log_prob(y) * mask).sum(-1)
    torch.testing.assert_close(log_lik, expected)

    guide = AutoNormal(table_model)
    svi = SVI(table_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    svi.step(y, mask)
    idata = to_inference_data(guide, table_model, (y, mask), num_samples=50)
    assert dict(idata.log_likelihood["obs"].sizes) == {"chain": 1, "draw": 50, "data": 6}
    assert dict(idata.posterior_predictive["obs"].sizes) == {"chain": 1, "draw": 50, "data": 6, "features": 3}
    assert dict(idata.posterior["loc"].sizes) == {"chain": 1, "draw": 50, "features": 3}


def test_deterministic_sites_go_to_the_posterior(data):
    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
        norm = pyro.deterministic("norm", w.norm(dim=-1), event_dim=0)  # event_dim: see docs
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal((x * w).sum(-1) + 0.0 * norm, SIGMA), obs=y)

    idata = to_inference_data(regression_guide(*data), model, data, num_samples=30)
    np.testing.assert_allclose(
        idata.posterior["norm"].values, np.linalg.norm(idata.posterior["w"].values, axis=-1), rtol=1e-5
    )


def test_single_chain_mcmc_warns_that_rhat_needs_more(data):
    mcmc = MCMC(NUTS(regression_model), num_samples=20, warmup_steps=20, disable_progbar=True)
    mcmc.run(*data)
    with pytest.warns(SingleChainWarning, match="R-hat .* needs at least 2 chains"):
        idata = to_inference_data(mcmc, model_args=data, posterior_predictive=False)
    assert dict(idata.posterior["w"].sizes)["chain"] == 1


def test_non_finite_data_is_an_error_naming_the_site(data):
    x, y = data
    y = y.clone()
    y[3] = float("nan")
    with pytest.raises(ValueError, match=r"observed site 'obs' has 1 non-finite value.*index \(3,\)"):
        to_inference_data(regression_guide(*data), regression_model, (x, y), num_samples=10)


def test_masked_non_finite_data_is_fine():
    """A NaN under the mask is left out (Pyro's validation, off here, would reject it inside log_prob)."""
    y = torch.randn(6, 3)
    mask = torch.ones(6, 3, dtype=torch.bool)
    y[2, 1], mask[2, 1] = float("nan"), False
    with pyro.validation_enabled(False):
        log_lik = pointwise_log_likelihood(table_model, {"loc": torch.zeros(2, 3)}, (y, mask))["obs"]
    assert torch.isfinite(log_lik).all()


def test_missing_observed_site_is_an_error(data):
    with pytest.raises(ValueError, match="observes no site"):
        to_inference_data(regression_guide(*data), regression_model, (data[0],), num_samples=10)


def test_unknown_data_plate_is_an_error_listing_the_plates(data):
    with pytest.raises(ValueError, match=r"data_plate='rows' is not a plate of the model; its plates are \['data'\]"):
        to_inference_data(regression_guide(*data), regression_model, data, num_samples=10, data_plate="rows")


def test_observed_site_outside_the_data_plate_is_an_error():
    def model(y):
        with pyro.plate("data", y.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("total", dist.Normal(z.sum(-1), 1.0), obs=y.sum())

    with pytest.raises(ValueError, match="observed site 'total' is not inside the data plate 'data'"):
        pointwise_log_likelihood(model, {"z": torch.zeros(2, 4)}, (torch.randn(4),))


def test_subsampled_data_plate_is_an_error():
    def model(y):
        with pyro.plate("data", y.shape[0], subsample_size=2) as idx:
            pyro.sample("obs", dist.Normal(0.0, 1.0), obs=y[idx])

    with pytest.raises(ValueError, match=r"plate 'data' is subsampled \(2 of 5\)"):
        pointwise_log_likelihood(model, {}, (torch.randn(5),))


@pytest.mark.parametrize(
    ("draws", "message"),
    [
        ({}, r"lack latent site\(s\) \['w'\]"),
        ({"w": torch.zeros(4, 3)}, r"draws\['w'\] must be \(draws, \*\(2,\)\), got \(4, 3\)"),
        ({"w": torch.zeros(4, 2), "v": torch.zeros(4)}, r"site\(s\) \['v'\] that are not latent"),
        ({"w": torch.zeros(0, 2)}, "at least one draw"),
    ],
)
def test_bad_draws_are_errors(data, draws, message):
    with pytest.raises(ValueError, match=message):
        pointwise_log_likelihood(regression_model, draws, data)


def test_draws_outside_the_support_give_a_non_finite_loglik_error():
    def model(y):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("obs", dist.Normal(0.0, scale), obs=y)

    with pyro.validation_enabled(False), pytest.raises(ValueError, match="log-likelihood of observed site 'obs'"):
        pointwise_log_likelihood(model, {"scale": torch.tensor([1.0, 0.0])}, (torch.randn(3),))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_samples": 0}, ValueError, "num_samples must be an int >= 1, got 0"),
        ({"coords": {"data": [1, 2]}}, ValueError, r"coords\['data'\] must have 20 values"),
        ({"coords": {"rows": list(range(20))}}, ValueError, "coords names dim 'rows', which no variable has"),
        ({"dims": {"w": ["a", "b"]}}, ValueError, r"dims\['w'\] must name 1 dim\(s\)"),
        ({"dims": {"v": ["a"]}}, ValueError, r"dims names variable\(s\) \['v'\]"),
        ({"particle_chunk": 0}, ValueError, "particle_chunk must be an int >= 1"),
    ],
)
def test_bad_arguments_are_errors(data, kwargs, error, message):
    with pytest.raises(error, match=message):
        to_inference_data(regression_guide(*data), regression_model, data, **kwargs)


def test_user_dims_and_coords_name_the_posterior(data):
    idata = to_inference_data(
        regression_guide(*data),
        regression_model,
        data,
        num_samples=10,
        dims={"w": ["feature"]},
        coords={"feature": ["slope", "other"]},
    )
    assert list(idata.posterior["feature"].values) == ["slope", "other"]


def test_guide_missing_a_latent_and_non_callable_posterior_are_errors(data):
    def empty_guide(x, y=None):
        pass

    with pytest.raises(ValueError, match="the guide does not sample the model's latent site 'w'"):
        to_inference_data(empty_guide, regression_model, data, num_samples=10)
    with pytest.raises(ValueError, match="pass the model the guide approximates"):
        to_inference_data(empty_guide, num_samples=10)
    with pytest.raises(TypeError, match=r"pyro\.infer\.MCMC run or a guide"):
        to_inference_data({"w": torch.zeros(3, 2)}, regression_model, data)


def test_mcmc_not_run_is_an_error():
    with pytest.raises(ValueError, match=r"no draws yet: call mcmc\.run"):
        to_inference_data(MCMC(NUTS(regression_model), num_samples=10, disable_progbar=True))


def test_mcmc_rejects_guide_only_arguments(two_chain_mcmc, data):
    with pytest.raises(ValueError, match="num_samples is for guides"):
        to_inference_data(two_chain_mcmc, model_args=data, num_samples=10)
    with pytest.raises(ValueError, match="log_likelihood='importance' needs a guide"):
        to_inference_data(two_chain_mcmc, model_args=data, log_likelihood="importance")


def test_mcmc_without_its_arguments_says_what_to_pass(two_chain_mcmc):
    with pytest.raises(TypeError):
        to_inference_data(two_chain_mcmc)


def test_installed_arviz_is_inside_the_tested_range():
    """pyproject caps ArviZ to the 0.2x line the tests run (1.x has no Pyro converter and is not supported)."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    (arviz,) = [Requirement(dep) for dep in pyproject["project"]["dependencies"] if dep.startswith("arviz")]
    assert arviz.specifier.contains(version("arviz"))
    assert not arviz.specifier.contains("1.0.0")
