"""Normalising-flow guides close part of the gap a Gaussian guide leaves on a non-Gaussian posterior."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from pyro_bdl.inference import elbo_per_datum, importance_log_likelihood
from pyro_bdl.models import DLGM, DLGMGuide

pytestmark = pytest.mark.usefixtures("pyro_state")


@pytest.fixture
def nonlinear_model():
    """A fixed random 2-D DLGM with a tanh decoder and small noise: curved, non-Gaussian posteriors."""
    model = DLGM(2, (2,), ((16,),), "gaussian", observation_params={"scale": 0.1})
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.mul_(2.0)
        y = model(None, num_data=100)
    return model, y


def fitted_gap(model, y, flow, num_flows):
    """(ELBO, IW log-likelihood) per datum after training only the guide of ``flow`` against the fixed model."""
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    guide = DLGMGuide(2, (2,), ((16,),), flow=flow, num_flows=num_flows)
    fixed = poutine.block(model, hide_types=["param"])  # the model's parameters are not trained
    loss = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(fixed, guide, pyro.optim.Adam({"lr": 0.01}), loss)
    for _ in range(400):
        svi.step(y)
    elbo = elbo_per_datum(model, guide, y, num_samples=400).mean().item()
    iw = importance_log_likelihood(model, guide, y, num_samples=2000, particle_chunk=1000).mean().item()
    return elbo, iw


@pytest.mark.parametrize(("flow", "num_flows"), [("iaf", 2), ("planar", 4)])
def test_flow_guide_beats_the_gaussian_guide(nonlinear_model, flow, num_flows):
    model, y = nonlinear_model
    gaussian_elbo, gaussian_iw = fitted_gap(model, y, None, 0)
    flow_elbo, flow_iw = fitted_gap(model, y, flow, num_flows)
    # both IW bounds estimate the same log p(y); the tighter one is the reference
    log_evidence = max(gaussian_iw, flow_iw)
    assert abs(flow_iw - gaussian_iw) < 0.3
    # the Gaussian guide leaves a gap (KL to the posterior) of about a nat; the flow closes a good part of it
    assert log_evidence - gaussian_elbo > 0.5
    assert flow_elbo > gaussian_elbo + 0.2
    assert flow_elbo <= log_evidence + 1e-3
