"""The diagnostics on the package's own models: the DLGM (amortised) and a BNN (global weights)."""

from __future__ import annotations

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_bdl.bnn import BNNRegressor, GaussianPrior, bayesianize
from pyro_bdl.diagnostics import LocalLatentWarning, importance_khat, to_inference_data
from pyro_bdl.inference import importance_log_likelihood
from pyro_bdl.models.dlgm import DLGM
from pyro_bdl.models.dlgm_guide import DLGMGuide

pytestmark = pytest.mark.usefixtures("pyro_state")


def test_dlgm_inference_data_and_per_datum_khat():
    y = (torch.rand(12, 5) > 0.5).float()
    model = DLGM(5, latent_dims=(3, 2), hidden_dims=(6,))
    guide = DLGMGuide(5, latent_dims=(3, 2), hidden_dims=(6,))
    idata = to_inference_data(guide, model, (y,), num_samples=40, log_likelihood="conditional")
    assert dict(idata.posterior["z_1"].sizes) == {"chain": 1, "draw": 40, "data": 12, "z_1_dim_1": 3}
    assert dict(idata.posterior["z_2"].sizes) == {"chain": 1, "draw": 40, "data": 12, "z_2_dim_1": 2}
    assert dict(idata.log_likelihood["obs"].sizes) == {"chain": 1, "draw": 40, "data": 12}
    assert dict(idata.posterior_predictive["obs"].sizes) == {"chain": 1, "draw": 40, "data": 12, "obs_dim_1": 5}
    assert set(idata.posterior_predictive["obs"].values.ravel().tolist()) <= {0.0, 1.0}
    result = importance_khat(model, guide, y, num_samples=200)
    assert result.per_datum and result.khat.shape == (12,)


def test_dlgm_local_latents_warn_and_leave_out_the_conditional_log_likelihood():
    """Defect 5: log p(x_n | z_n) with z_n a posterior draw made az.loo meaningless (p_loo 1186, k-hat 6.96)."""
    y = (torch.rand(12, 5) > 0.5).float()
    model = DLGM(5, latent_dims=(3, 2), hidden_dims=(6,))
    guide = DLGMGuide(5, latent_dims=(3, 2), hidden_dims=(6,))
    with pytest.warns(LocalLatentWarning, match=r"\['z_2', 'z_1'\] inside the data plate.*log_likelihood='importance'"):
        idata = to_inference_data(guide, model, (y,), num_samples=20, posterior_predictive=False)
    assert "log_likelihood" not in idata.groups()
    with pytest.raises(TypeError, match="log likelihood not found"):
        az.loo(idata)


def test_dlgm_importance_log_likelihood_makes_loo_meaningful():
    """The IW marginal per datum: without global latents every draw estimates the same log p(x_n).

    So elpd_loo is the IW log-likelihood of the data set, up to the estimator's noise (p_loo
    counts that noise, not parameters), and every Pareto k-hat is small.
    """
    torch.manual_seed(0)
    y = (torch.rand(12, 5) > 0.5).float()
    model = DLGM(5, latent_dims=(3, 2), hidden_dims=(6,))
    guide = DLGMGuide(5, latent_dims=(3, 2), hidden_dims=(6,))
    idata = to_inference_data(guide, model, (y,), num_samples=100, posterior_predictive=False,
                              log_likelihood="importance", importance_samples=500, particle_chunk=500)  # fmt: skip
    assert dict(idata.log_likelihood["obs"].sizes) == {"chain": 1, "draw": 100, "data": 12}
    reference = importance_log_likelihood(model, guide, y, num_samples=20_000, particle_chunk=5000).sum().item()
    loo = az.loo(idata, pointwise=True)
    assert float(loo.pareto_k.max()) < 0.5 and 0.0 < loo.p_loo < 3.0
    assert loo.elpd_loo == pytest.approx(reference, abs=3.0)


def test_importance_log_likelihood_integrates_local_latents_given_each_global_draw():
    """mu ~ N(0, 1), z_n ~ N(mu, 1), x_n ~ N(z_n, 1): the exact q(z_n | x_n, mu) makes row s log N(x_n | mu_s, 2)."""

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        mu = pyro.sample("mu", dist.Normal(x.mean(), 0.3))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((mu + x) / 2, 0.5**0.5))

    x = torch.randn(7, dtype=torch.float64)
    with pytest.warns(LocalLatentWarning):
        to_inference_data(guide, model, (x,), num_samples=5, posterior_predictive=False)
    idata = to_inference_data(guide, model, (x,), num_samples=5, posterior_predictive=False,
                              log_likelihood="importance", importance_samples=3)  # fmt: skip
    mu = torch.as_tensor(idata.posterior["mu"].values[0])  # (5,)
    expected = dist.Normal(mu[:, None], 2.0**0.5).log_prob(x)  # (5, 7)
    np.testing.assert_allclose(idata.log_likelihood["obs"].values[0], expected.numpy(), atol=1e-10)
    with pytest.raises(ValueError, match="log_likelihood must be one of"):
        to_inference_data(guide, model, (x,), num_samples=5, log_likelihood="marginal")


def test_bnn_inference_data_has_the_weights_as_global_sites():
    x = torch.randn(15, 1)
    y = 2.0 * x.squeeze(-1) + 0.3 * torch.randn(15)
    model = BNNRegressor(
        bayesianize(nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1)), prior=GaussianPrior(1.0)), noise=0.3
    )
    guide = pyro.infer.autoguide.AutoNormal(model)
    idata = to_inference_data(guide, model, (x, y), num_samples=30)
    assert dict(idata.posterior["net.0.weight"].sizes) == {
        "chain": 1,
        "draw": 30,
        "net.0.weight_dim_0": 4,
        "net.0.weight_dim_1": 1,
    }
    assert dict(idata.log_likelihood["obs"].sizes) == {"chain": 1, "draw": 30, "data": 15}
