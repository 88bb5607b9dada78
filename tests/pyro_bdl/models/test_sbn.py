"""The sigmoid belief network and its guide: shapes, conventions, baselines, relaxation, bad inputs."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO

from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.inference import NormalisedTraceGraph_ELBO, fit
from pyro_bdl.models.sbn import SBNGuide, SigmoidBeliefNetwork

X = torch.bernoulli(torch.full((12, 6), 0.4), generator=torch.Generator().manual_seed(0))


def test_sites_shapes_and_plate(pyro_state):
    model = SigmoidBeliefNetwork(6, (4, 3, 2))
    guide = SBNGuide.for_model(model)
    guide_trace = poutine.trace(guide).get_trace(X)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(X)
    for layer, size in enumerate((4, 3, 2), start=1):
        site = trace.nodes[f"z_{layer}"]
        assert site["value"].shape == (12, size)
        assert set(site["value"].unique().tolist()) <= {0.0, 1.0}
        assert [frame.name for frame in site["cond_indep_stack"]] == [DATA_PLATE]
        assert "baseline" in guide_trace.nodes[f"z_{layer}"]["infer"]
    assert trace.nodes[OBS_SITE]["value"] is X or torch.equal(trace.nodes[OBS_SITE]["value"], X)
    assert model(None, num_data=5).shape == (5, 6)
    with pyro.plate("particles", 7, dim=-2):  # vectorised particles broadcast through
        draws = guide(X)
    assert draws[0].shape == (7, 12, 4)


def test_masked_entries_leave_the_likelihood(pyro_state):
    model = SigmoidBeliefNetwork(6, (3,))
    guide = SBNGuide.for_model(model, baseline="none")
    mask = torch.ones_like(X, dtype=torch.bool)
    mask[:, 0] = False
    missing = X.clone()
    missing[:, 0] = float("nan")
    guide_trace = poutine.trace(guide).get_trace(missing, obs_mask=mask)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(missing, obs_mask=mask)
    assert torch.isfinite(trace.log_prob_sum())


@pytest.mark.parametrize("baseline", ["none", "average", "constant", "neural"])
def test_every_baseline_trains_with_both_losses(pyro_state, baseline):
    for loss in (TraceGraph_ELBO(), NormalisedTraceGraph_ELBO()):
        pyro.clear_param_store()
        model = SigmoidBeliefNetwork(6, (4, 2))
        guide = SBNGuide.for_model(model, baseline=baseline, baseline_hidden=5)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss)
        losses = [svi.step(X) for _ in range(60)]
        assert sum(losses[-10:]) < sum(losses[:10])


def test_fit_checkpoints_the_neural_baselines(pyro_state, tmp_path):
    model = SigmoidBeliefNetwork(6, (3,))
    guide = SBNGuide.for_model(model, baseline="neural", baseline_hidden=4)
    path = tmp_path / "fit.pt"
    fit(model, guide, X, optim=pyro.optim.Adam({"lr": 0.01}), epochs=1, batch_size=4,
        loss=NormalisedTraceGraph_ELBO(), checkpoint_path=path, progress=False)  # fmt: skip
    saved = torch.load(path, weights_only=True)
    names = [name for name in str(saved).split("'") if "baselines" in name]
    assert names, "the baseline networks' parameters are not in the checkpoint"


def test_relaxed_latents_reparameterise(pyro_state):
    model = SigmoidBeliefNetwork(6, (4, 2), temperature=0.5)
    guide = SBNGuide.for_model(model)
    trace = poutine.trace(guide).get_trace(X)
    assert trace.nodes["z_1"]["fn"].has_rsample and trace.nodes["z_1"]["infer"] == {}
    assert set(trace.nodes["z_1"]["value"].unique().tolist()) <= {0.0, 1.0}  # straight-through: hard forward
    loss = Trace_ELBO().differentiable_loss(model, guide, X)
    loss.backward()
    assert torch.isfinite(loss) and guide.encoders[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: SigmoidBeliefNetwork(6, ()), "latent_dims must be one or more positive ints"),
        (lambda: SigmoidBeliefNetwork(6, (3, 0)), "latent_dims must be one or more positive ints"),
        (lambda: SigmoidBeliefNetwork(0, (3,)), "data_dim"),
        (lambda: SigmoidBeliefNetwork(6, (3,), "gamma_reciprocal"), "observation must take one real"),
        (lambda: SigmoidBeliefNetwork(6, (3,), temperature=-1.0), "temperature"),
        (lambda: SBNGuide(6, (3,), baseline="vimco"), "baseline"),
        (lambda: SBNGuide(6, (3,), baseline_beta=1.0), "baseline_beta must lie in"),
        (lambda: SBNGuide(6, (3,), baseline_hidden=0), "baseline_hidden"),
    ],
)
def test_bad_arguments_are_one_line_errors(build, message):
    with pytest.raises(ValueError, match=message) as error:
        build()
    assert "\n" not in str(error.value)


def test_bad_data_is_a_one_line_error(pyro_state):
    model = SigmoidBeliefNetwork(6, (3,))
    guide = SBNGuide.for_model(model)
    with pytest.raises(ValueError, match="x must be a \\(data, 6\\) tensor") as error:
        guide(None)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="x"):
        model(torch.zeros(4, 5))
