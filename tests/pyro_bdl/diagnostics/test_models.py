"""The diagnostics on the package's own models: the DLGM (amortised) and a BNN (global weights)."""

from __future__ import annotations

import pyro
import pytest
import torch
from torch import nn

from pyro_bdl.bnn import BNNRegressor, GaussianPrior, bayesianize
from pyro_bdl.diagnostics import psis_diagnostic, to_inference_data
from pyro_bdl.models.dlgm import DLGM
from pyro_bdl.models.dlgm_guide import DLGMGuide

pytestmark = pytest.mark.usefixtures("pyro_state")


def test_dlgm_inference_data_and_per_datum_khat():
    y = (torch.rand(12, 5) > 0.5).float()
    model = DLGM(5, latent_dims=(3, 2), hidden_dims=(6,))
    guide = DLGMGuide(5, latent_dims=(3, 2), hidden_dims=(6,))
    idata = to_inference_data(guide, model, (y,), num_samples=40)
    assert dict(idata.posterior["z_1"].sizes) == {"chain": 1, "draw": 40, "data": 12, "z_1_dim_1": 3}
    assert dict(idata.posterior["z_2"].sizes) == {"chain": 1, "draw": 40, "data": 12, "z_2_dim_1": 2}
    assert dict(idata.log_likelihood["obs"].sizes) == {"chain": 1, "draw": 40, "data": 12}
    assert dict(idata.posterior_predictive["obs"].sizes) == {"chain": 1, "draw": 40, "data": 12, "obs_dim_1": 5}
    assert set(idata.posterior_predictive["obs"].values.ravel().tolist()) <= {0.0, 1.0}
    result = psis_diagnostic(model, guide, y, num_samples=200)
    assert result.per_datum and result.khat.shape == (12,)


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
