"""DataPlateScaleMessenger scales the data plate's sites only; fit needs that plate to minibatch."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from pyro_bdl.inference import fit
from pyro_bdl.inference.minibatch import DataPlateScaleMessenger, scale_data_plate

pytestmark = pytest.mark.usefixtures("pyro_state")


def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0]):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=y)
    with pyro.plate("other", 2):
        pyro.sample("w", dist.Normal(0.0, 1.0))


def test_only_data_plate_sites_are_scaled():
    y = torch.randn(4)
    handler = DataPlateScaleMessenger("data", 2.5)
    with poutine.scale(scale=2.0):  # composes with other scales
        trace = prune_subsample_sites(poutine.trace(handler(model)).get_trace(y))
    scales = {name: site["scale"] for name, site in trace.nodes.items() if site["type"] == "sample"}
    assert scales == {"mu": 2.0, "z": 5.0, "obs": 5.0, "w": 2.0}
    assert handler.scaled_sites == 2
    plain = poutine.trace(model).get_trace(y)
    scaled = poutine.trace(poutine.replay(scale_data_plate(model, "data", 3.0), trace=plain)).get_trace(y)
    plain.compute_log_prob(), scaled.compute_log_prob()
    torch.testing.assert_close(scaled.nodes["obs"]["log_prob"], 3.0 * plain.nodes["obs"]["log_prob"])


@pytest.mark.parametrize("scale", [0, -1.0, True, "2"])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        DataPlateScaleMessenger("data", scale)


def test_fit_needs_the_data_plate_to_minibatch():
    def unplated(y):
        pyro.sample("obs", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0).expand(y.shape).to_event(1), obs=y)

    def empty_guide(y):
        pass

    y = torch.randn(8)
    with pytest.raises(ValueError, match="batch_size=4 < 8 rows needs the data plate 'data'"):
        fit(unplated, empty_guide, y, optim=pyro.optim.Adam({"lr": 0.1}), epochs=1, batch_size=4, progress=False)
    result = fit(unplated, empty_guide, y, optim=pyro.optim.Adam({"lr": 0.1}), epochs=1, batch_size=8, progress=False)
    assert len(result.history) == 1
