"""The shared trace toolkit: one layout for scoring and diagnostics, Pyro's own paired traces underneath."""

from __future__ import annotations

import re
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

import pyro_bdl
from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.inference import log_importance_weights, trace_layout
from pyro_bdl.inference.traces import sum_to_particles_and_data

pytestmark = pytest.mark.usefixtures("pyro_state")


def model(x):
    """A global scale, a local z_n with an event dim, an inner plate of features and a deterministic site."""
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("features", x.shape[1], dim=-1), pyro.plate(DATA_PLATE, x.shape[0], dim=-2):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.deterministic("twice", 2 * z)
        pyro.sample("obs", dist.Normal(z, scale), obs=x)


def test_one_layout_for_model_and_guide():
    x = torch.randn(5, 3)
    layout = trace_layout(model, AutoNormal(model), x)
    assert layout.data_plate == DATA_PLATE and layout.data_dim == -2 and layout.num_data == 5
    assert layout.max_plate_nesting == 2 and layout.particle_dim == -3
    assert layout.plate_dims == {"features": -1, DATA_PLATE: -2}
    assert list(layout.latent) == ["scale", "z"] and list(layout.observed) == ["obs"]
    assert list(layout.deterministic) == ["twice"]
    assert set(layout.of_role("auxiliary")) == {"scale_unconstrained", "z_unconstrained"}
    assert layout.local_latents == ("z",)
    assert "scale" in layout.outside_data_plate and not layout.is_local
    assert layout.sites["z"].dim_names() == [DATA_PLATE, "features"]
    assert torch.equal(layout.observed["obs"].value, x)


def test_model_only_layout_draw_dim_counts_unplated_batch_dims():
    def unplated(x):
        w = pyro.sample("w", dist.Normal(torch.zeros(4), 1.0))  # batch dim (4,) outside every plate
        with pyro.plate(DATA_PLATE, x.shape[0]):
            pyro.sample("obs", dist.Normal(w.sum(), 1.0), obs=x)

    layout = trace_layout(unplated, None, torch.randn(6))
    assert layout.max_plate_nesting == 1 and layout.particle_dim == -2 and layout.draw_dim == -2
    assert layout.local_latents == () and layout.outside_data_plate == ("w",)


def test_batch_dims_left_of_the_particle_plate_are_an_error():
    """A site with undeclared batch dims left of every plate cannot be summed per particle: a clear error."""

    def wide(y):
        with pyro.plate(DATA_PLATE, y.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, 1, y.shape[0]), 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=y)

    def guide(y):
        with pyro.plate(DATA_PLATE, y.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(y.shape[0]), 1.0))

    with pytest.raises(ValueError, match=r"shape \(2, 4, 3\) has dims left of the particle dim -2"):
        log_importance_weights(wide, guide, torch.randn(3), num_samples=4)


def test_sum_to_particles_and_data():
    log_prob = torch.arange(24.0).reshape(2, 3, 4)  # (particles, data, features)
    torch.testing.assert_close(sum_to_particles_and_data(log_prob, -3, -2), log_prob.sum(-1))
    torch.testing.assert_close(sum_to_particles_and_data(log_prob, -3, None), log_prob.sum((-1, -2)))
    assert sum_to_particles_and_data(torch.ones(4), -3, -2).shape == (1, 1)
    with pytest.raises(ValueError, match="dims left of the particle dim -2"):
        sum_to_particles_and_data(log_prob, -2, None)


PRIVATE = re.compile(r"\.(optim_objs|_samples|_args|_kwargs|_event_dims|_max_workers|_params|_param_to_name)\b")


def test_no_private_attributes_of_pyro_objects():
    """Issue 9: inference, diagnostics and the BNN guides read Pyro's objects through public API only."""
    root = Path(pyro_bdl.__file__).parent
    files = [*root.glob("inference/*.py"), *root.glob("diagnostics/*.py"), root / "bnn/guides.py", root / "bnn/mcmc.py"]
    hits = [f"{path.name}:{n}" for path in files for n, line in enumerate(path.read_text().splitlines(), 1)
            if PRIVATE.search(line)]  # fmt: skip
    assert hits == []
