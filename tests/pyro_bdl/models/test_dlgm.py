"""DLGM model and guide: factor analysis in closed form, ELBO flavours, particles, Predictive, bad input."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, JitTrace_ELBO, Predictive, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from pyro_bdl.inference import elbo_per_datum, importance_log_likelihood
from pyro_bdl.models import DLGM, DLGMGuide

pytestmark = pytest.mark.usefixtures("pyro_state")


def train(model, guide, data, steps, lr, loss=None):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss or Trace_ELBO())
    return [svi.step(data) for _ in range(steps)]


def binary_data(n=200, features=12, seed=0):
    """Binary rows from two prototypes with 10% flipped bits: structure a DLGM can learn."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.bernoulli(torch.full((2, features), 0.5), generator=generator)
    rows = prototypes[torch.randint(0, 2, (n,), generator=generator)]
    flips = torch.bernoulli(torch.full((n, features), 0.1), generator=generator)
    return (rows + flips) % 2


def test_factor_analysis_matches_the_closed_form_marginal_likelihood():
    """L=1, linear decoder, Gaussian noise per feature is FA: log p(y) = log N(y; b, W W^T + diag(psi))."""
    features, rank, n = 6, 2, 500
    W_true, b_true, psi_true = torch.randn(features, rank), torch.randn(features), 0.1 + torch.rand(features)
    y = torch.randn(n, rank) @ W_true.T + b_true + torch.randn(n, features) * psi_true.sqrt()
    model = DLGM(features, (rank,), ((),), "gaussian", observation_params={"scale": torch.ones(features)})
    guide = DLGMGuide.for_model(model)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.998}), TraceMeanField_ELBO())
    for _ in range(700):
        svi.step(y)

    linear = model.decoder[0]
    W, b, scale = linear.weight.detach(), linear.bias.detach(), model.likelihood.scale.detach()
    exact = dist.MultivariateNormal(b, W @ W.T + torch.diag(scale**2)).log_prob(y)  # (n,)
    elbo = elbo_per_datum(model, guide, y, num_samples=500)
    iw = importance_log_likelihood(model, guide, y, num_samples=5000, particle_chunk=1000)
    assert elbo.mean() <= exact.mean() + 1e-3  # a bound, up to Monte Carlo error
    assert elbo.mean() >= exact.mean() - 0.1  # the FA posterior is in the guide family
    assert (iw - exact).abs().mean() < 0.05
    assert iw.mean() <= exact.mean() + 1e-3
    # the fit itself is sane: the learned covariance is close to the data covariance
    torch.testing.assert_close(W @ W.T + torch.diag(scale**2), y.T.cov(), atol=0.15, rtol=0.1)


@pytest.mark.parametrize(
    "loss",
    [
        Trace_ELBO(),
        TraceMeanField_ELBO(),
        Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1),
        RenyiELBO(alpha=0.0, num_particles=5, vectorize_particles=True, max_plate_nesting=1),
        RenyiELBO(alpha=0.5, num_particles=5, vectorize_particles=True, max_plate_nesting=1),
    ],
    ids=["trace", "mean_field", "vectorised", "iwae", "renyi_half"],
)
@pytest.mark.parametrize("latent_dims", [(3,), (4, 2)], ids=["L1", "L2"])
def test_each_elbo_flavour_trains(loss, latent_dims):
    y = binary_data(n=100)
    model = DLGM(12, latent_dims, (16,), layer_scale="amortised")
    guide = DLGMGuide.for_model(model)
    losses = train(model, guide, y, 80, 0.03, loss)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.1 * abs(first)


@pytest.mark.parametrize("flow", [None, "planar", "iaf"])
@pytest.mark.parametrize("layer_scale", ["fixed", "amortised"])
def test_sites_broadcast_over_vectorised_particles(flow, layer_scale):
    model = DLGM(12, (4, 3), (8,), layer_scale=layer_scale)
    guide = DLGMGuide.for_model(model, flow=flow)
    y = binary_data(n=9)
    particles = pyro.plate("particles", 7, dim=-2)
    guide_trace = poutine.trace(particles(guide)).get_trace(y)
    model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(y)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    for name, d in (("z_1", 4), ("z_2", 3)):
        assert guide_trace.nodes[name]["value"].shape == (7, 9, d)
        assert model_trace.nodes[name]["log_prob"].shape == (7, 9)
        assert guide_trace.nodes[name]["log_prob"].shape == (7, 9)
    assert model_trace.nodes["obs"]["log_prob"].shape == (7, 9)
    assert [name for name in guide_trace.stochastic_nodes if name.startswith("z_")] == [
        "z_2",
        "z_1",
    ]  # the model's order


def test_guide_is_structured_across_layers():
    """q(z_1 | z_2, y) depends on z_2: not a product of independent per-layer factors."""
    model = DLGM(12, (4, 3), (8,))
    guide = DLGMGuide.for_model(model)
    y = binary_data(n=5)
    features = guide.features(y)
    z_2 = torch.randn(5, 3)
    first = guide.layer_distribution(1, features[0], z_2).mean
    second = guide.layer_distribution(1, features[0], z_2 + 1.0).mean
    assert not torch.allclose(first, second)


def test_predictive_samples_new_data_and_the_posterior_predictive():
    model = DLGM(12, (4, 2), (8,))
    guide = DLGMGuide.for_model(model)
    y = binary_data(n=6)
    prior = Predictive(model, num_samples=3)(None, num_data=5)
    assert prior["obs"].shape == (3, 5, 12)
    assert prior["z_1"].shape == (3, 5, 4) and prior["z_2"].shape == (3, 5, 2)
    assert set(prior["obs"].unique().tolist()) <= {0.0, 1.0}

    parallel = Predictive(model, num_samples=3, parallel=True)(None, num_data=5)
    assert parallel["obs"].shape == (3, 5, 12)

    posterior = Predictive(poutine.uncondition(model), guide=guide, num_samples=4)(y)
    assert posterior["obs"].shape == (4, 6, 12)
    assert posterior["z_1"].shape == (4, 6, 4)
    assert not torch.equal(posterior["obs"], y.expand(4, 6, 12))  # new draws, not the data

    latents = Predictive(guide, num_samples=4)(y)
    replicated = Predictive(model, posterior_samples=latents)(None, num_data=6)
    assert replicated["obs"].shape == (4, 6, 12)


@pytest.mark.parametrize(
    ("observation", "kwargs", "data"),
    [
        ("gaussian", {}, lambda n, d: torch.randn(n, d)),
        ("poisson_log", {}, lambda n, d: torch.poisson(torch.full((n, d), 2.0))),
        ("gamma_reciprocal", {}, lambda n, d: torch.rand(n, d) + 0.1),
        ("tobit", {}, lambda n, d: torch.randn(n, d).clamp(min=0)),
        ("bernoulli_probit", {}, lambda n, d: torch.bernoulli(torch.full((n, d), 0.3))),
        ("categorical", {"num_classes": 3}, lambda n, d: torch.randint(0, 3, (n, d)).float()),
        ("ordinal_logit", {"num_classes": 4}, lambda n, d: torch.randint(0, 4, (n, d)).float()),
    ],
)
def test_any_observation_model(observation, kwargs, data):
    y = data(30, 5)
    model = DLGM(5, (2,), (8,), observation, **kwargs)
    guide = DLGMGuide.for_model(model)
    losses = train(model, guide, y, 5, 0.01)
    assert all(torch.isfinite(torch.tensor(losses)))
    sampled = model(None, num_data=4)
    assert sampled.shape == (4, 5)


def test_missing_entries_are_left_out_of_the_likelihood():
    model = DLGM(6, (2,), ((),), "gaussian")
    guide = DLGMGuide.for_model(model)
    y = torch.randn(4, 6)
    mask = torch.rand(4, 6) > 0.4
    holes = torch.where(mask, y, torch.nan)  # NaN is allowed where unobserved
    guide_trace = poutine.trace(guide).get_trace(holes, obs_mask=mask)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(holes, obs_mask=mask)
    z = trace.nodes["z_1"]["value"]
    eta = model.natural_parameter(z)
    expected = (dist.Normal(eta, model.likelihood.scale).log_prob(y) * mask).sum(-1)
    torch.testing.assert_close(trace.nodes["obs"]["fn"].log_prob(trace.nodes["obs"]["value"]), expected)
    # the encoder sees missing entries as 0
    zero_filled = guide.layer_distribution(1, guide.features(torch.where(mask, y, 0.0))[0], None)
    torch.testing.assert_close(guide_trace.nodes["z_1"]["fn"].mean, zero_filled.mean)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DLGM(6, ()), "latent_dims"),
        (lambda: DLGM(6, (2, 0)), "latent_dims"),
        (lambda: DLGM(6, (2,), observation="bernoulli_logitt"), "unknown observation model 'bernoulli_logitt'"),
        (lambda: DLGM(6, (2, 2), ((4,),)), "hidden_dims"),
        (lambda: DLGM(6, (2,), activation="sigmoidish"), "activation"),
        (lambda: DLGM(6, (2,), layer_scale="learned"), "layer_scale"),
        (lambda: DLGM(0, (2,)), "data_dim"),
        (lambda: DLGM(6, (2,), observation="categorical"), "num_classes"),
        (lambda: DLGMGuide(6, (2,), flow="maf"), "flow"),
        (lambda: DLGMGuide(6, (1,), flow="iaf"), "iaf"),
    ],
)
def test_bad_construction_is_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("which", ["model", "guide"])
def test_bad_data_is_refused(which):
    model = DLGM(6, (2,), (4,))
    fn = model if which == "model" else DLGMGuide.for_model(model)
    y = torch.rand(5, 6)
    with pytest.raises(ValueError, match=r"x must have shape \(rows, 6\), got \(5, 7\)"):
        fn(torch.rand(5, 7))
    with pytest.raises(ValueError, match=r"x must have shape \(rows, 6\)"):
        fn(torch.rand(5, 6, 1))
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        fn(torch.ones(5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="x must not contain NaN, got 5 NaN entries"):
        fn(torch.where(torch.eye(5, 6).bool(), torch.nan, y))
    with pytest.raises(ValueError, match="obs_mask must have the shape of x"):
        fn(y, obs_mask=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="obs_mask must be a bool tensor"):
        fn(y, obs_mask=torch.ones(5, 6))
    with pytest.raises(ValueError, match="x must not contain NaN at observed entries"):
        mask = torch.ones(5, 6, dtype=torch.bool)
        fn(torch.where(torch.eye(5, 6).bool(), torch.nan, y), obs_mask=mask)
    with pytest.raises(ValueError, match=r"num_data must equal the rows of x \(5\) or be None, got 3"):
        fn(y, num_data=3)
    with pytest.raises(TypeError, match="positional"):
        fn(y, torch.ones(5, 6, dtype=torch.bool))  # obs_mask is keyword-only
    if which == "model":
        with pytest.raises(ValueError, match="num_data must be an int >= 1 when x is None"):
            fn(None)
    else:
        with pytest.raises(ValueError, match=r"x must be a \(data, 6\) tensor for the guide to encode, got None"):
            fn(None)


def test_jit_elbo_checks_every_batch_for_nan_without_tracer_warnings():
    """Defect: under JitTrace_ELBO the NaN check was frozen into the trace (a TracerWarning from our
    code) and a later batch with NaN gave loss nan. Now the check is an op of the traced graph and
    runs on every call. Torch's own size checks inside its losses still warn while tracing; only
    warnings raised from pyro_bdl's files count here."""
    model = DLGM(6, (2,), (4,))
    guide = DLGMGuide.for_model(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), JitTrace_ELBO())
    batch = torch.bernoulli(torch.full((5, 6), 0.5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert math.isfinite(svi.step(batch))  # compiles
    ours = [
        str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning) and "pyro_bdl" in w.filename
    ]
    assert not ours
    assert math.isfinite(svi.step(torch.bernoulli(torch.full((5, 6), 0.5))))  # the compiled graph, reused
    with_nan = batch.index_put((torch.tensor(1), torch.tensor(2)), torch.tensor(torch.nan))
    for _ in range(2):  # every call, not only the first after compiling
        # TorchScript re-raises the Python op's ValueError as a RuntimeError carrying its message
        with pytest.raises((ValueError, RuntimeError), match=r"x must not contain NaN, got 1 NaN entries"):
            svi.step(with_nan)
    assert math.isfinite(svi.step(batch))
