"""Score-function gradients with Pyro's baselines and NVIL's variance normalisation, checked by enumeration.

The SBN is small enough to sum over every latent configuration (2 + 1 binary latents per
datum, 8 pixels, 2 data rows), so the exact ELBO and its gradient are computed by autograd
through the enumerated sum. Each gradient call sees the 2 rows repeated R times in the data
plate, so one call is the mean of R independent estimates given the past; M calls give M such
batch means, whose standard error sets the tolerance (5 standard errors per coordinate:
about 6e-7 false-alarm probability each, under 1e-4 over all coordinates by Bonferroni).
"""

import itertools

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceGraph_ELBO

from pyro_bdl.inference import (
    NormalisedTraceGraph_ELBO,
    SignalNormaliser,
    elbo_per_datum,
    importance_log_likelihood,
)
from pyro_bdl.inference.control_variates import _construct_baseline_in_place
from pyro_bdl.models.sbn import SBNGuide, SigmoidBeliefNetwork

LATENTS = (2, 1)
X = torch.tensor([[1.0] * 8, [0.0] * 8])  # rows of very different evidence: input-dependence pays
REPLICAS, CALLS, WARMUP = 30, 120, 120
Z_MAX = 5.0


def build(baseline: str) -> tuple[SigmoidBeliefNetwork, SBNGuide]:
    pyro.set_rng_seed(1)
    model = SigmoidBeliefNetwork(X.shape[1], LATENTS)
    guide = SBNGuide.for_model(model, baseline=baseline, baseline_hidden=8)
    with torch.no_grad():  # away from the symmetric initialisation, so every gradient is non-trivial
        for p in [*model.parameters(), *guide.encoders.parameters()]:
            p.add_(torch.randn(p.shape))
    return model, guide


def trained_params(model, guide) -> list[torch.Tensor]:
    """Model and inference-network parameters (not the baselines), guide layer by layer last."""
    return [*model.parameters(), *guide.encoders.parameters()]


def exact_elbo_gradient(model, guide, x: torch.Tensor) -> list[torch.Tensor]:
    """``grad sum_n sum_h q(h | x_n) [log p(x_n, h) - log q(h | x_n)]`` by enumeration."""
    elbo = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=sum(LATENTS)):
        values, start = {}, 0
        for layer, size in enumerate(LATENTS, start=1):
            values[f"z_{layer}"] = torch.tensor(bits[start : start + size]).expand(len(x), size)
            start += size
        guide_trace = poutine.trace(poutine.condition(guide, values)).get_trace(x)
        model_trace = poutine.trace(poutine.condition(model, values)).get_trace(x)
        log_q = sum(
            site["fn"].log_prob(site["value"]) for site in guide_trace.nodes.values() if site["type"] == "sample"
        )
        log_p = sum(
            site["fn"].log_prob(site["value"]) for site in model_trace.nodes.values() if site["type"] == "sample"
        )
        elbo = elbo + (log_q.exp() * (log_p - log_q)).sum()
    return list(torch.autograd.grad(elbo, trained_params(model, guide)))


def estimates(model, guide, loss, rescale: bool = False) -> torch.Tensor:
    """(CALLS, params) gradient estimates of the ELBO of X, each the mean of REPLICAS draws.

    The replicated rows are shuffled at each call: Pyro's decaying average keeps one average
    per position in the batch, which would otherwise be a per-row (input-dependent) baseline.

    Baselines are trained first (their own Adam, the model and guide fixed). With ``rescale``
    each inference-network layer's gradient is multiplied back by the normaliser's divisor of
    that step, which makes the normalised estimate unbiased for the plain gradient.
    """
    x = X.repeat(REPLICAS, 1)
    params = trained_params(model, guide)
    baseline_params = [p for name, p in guide.named_parameters() if not name.startswith("encoders")]
    optimiser = torch.optim.Adam(baseline_params, lr=0.02) if baseline_params else None
    rows = []
    for step in range(WARMUP + CALLS):
        for p in [*params, *baseline_params]:
            p.grad = None
        loss.loss_and_grads(model, guide, x[torch.randperm(len(x))])
        if step < WARMUP:
            if optimiser is not None:
                optimiser.step()
            continue
        grads = [-p.grad / REPLICAS for p in params]
        if rescale:
            num_model = len(list(model.parameters()))
            for layer, encoder in enumerate(guide.encoders, start=1):
                index = num_model + 2 * (layer - 1)  # weight, bias of this layer
                divisor = loss.normaliser.last_divisors[f"z_{layer}"]
                for i in (index, index + 1):
                    assert params[i] is list(encoder.parameters())[i - index]
                    grads[i] = grads[i] * divisor
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


def z_scores(rows: torch.Tensor, exact: list[torch.Tensor]) -> torch.Tensor:
    target = torch.cat([g.flatten() for g in exact])
    standard_error = rows.std(0) / rows.shape[0] ** 0.5
    return (rows.mean(0) - target).abs() / (standard_error + 1e-9)


@pytest.fixture(scope="module")
def runs():
    """Gradient estimates of every estimator, computed once (pyro's param store cleared per run)."""
    out = {}
    configs = {
        "none": ("none", TraceGraph_ELBO(), False),
        "average": ("average", TraceGraph_ELBO(), False),
        "constant": ("constant", TraceGraph_ELBO(), False),
        "neural": ("neural", TraceGraph_ELBO(), False),
        "neural+normalised": ("neural", NormalisedTraceGraph_ELBO(normaliser_beta=0.8), True),
    }
    for name, (baseline, loss, rescale) in configs.items():
        pyro.clear_param_store()
        pyro.enable_validation(True)
        model, guide = build(baseline)
        exact = exact_elbo_gradient(model, guide, X)
        pyro.set_rng_seed(2)
        out[name] = (estimates(model, guide, loss, rescale), exact, len(list(model.parameters())), loss)
    pyro.clear_param_store()
    return out


@pytest.mark.parametrize("name", ["none", "average", "constant", "neural", "neural+normalised"])
def test_score_function_estimates_are_unbiased(runs, name):
    rows, exact, _, _ = runs[name]
    assert z_scores(rows, exact).max() < Z_MAX


def test_baselines_reduce_the_variance_of_the_inference_network_gradient(runs):
    def guide_variance(name):
        rows, exact, num_model, _ = runs[name]
        return rows.var(0)[sum(g.numel() for g in exact[:num_model]) :].sum().item()

    plain = guide_variance("none")
    for name in ("average", "constant"):
        assert guide_variance(name) < 0.5 * plain
    assert guide_variance("neural") < 0.5 * min(guide_variance("average"), guide_variance("constant"))


def test_normalised_estimate_scales_the_inference_network_gradient_only(runs):
    """Divisors above 1 were used, and model-parameter gradients match the exact ones unscaled."""
    rows, exact, num_model, loss = runs["neural+normalised"]
    assert any(d > 1.0 for d in loss.normaliser.last_divisors.values())
    model_size = sum(g.numel() for g in exact[:num_model])
    target = torch.cat([g.flatten() for g in exact[:num_model]])
    standard_error = rows[:, :model_size].std(0) / rows.shape[0] ** 0.5
    assert ((rows[:, :model_size].mean(0) - target).abs() / (standard_error + 1e-9)).max() < Z_MAX


def test_a_baseline_that_sees_the_sample_is_caught_as_biased(pyro_state):
    """Negative control: the check above can fail. A baseline computed from the site's own
    value correlates with the score and biases the estimate."""
    model, guide = build("none")
    exact = exact_elbo_gradient(model, guide, X)

    def leaky_guide(x):
        options: dict = {}
        with pyro.plate("data", len(x)):
            h = pyro.sample("z_1", _bernoulli(guide.encoders[0](x)), infer={"baseline": options})
            options["baseline_value"] = 5.0 * h.sum(-1).detach()  # set after sampling: depends on h
            pyro.sample("z_2", _bernoulli(guide.encoders[1](h)))

    pyro.set_rng_seed(2)
    rows = estimates(model, _GuideWrapper(guide, leaky_guide), TraceGraph_ELBO())
    assert z_scores(rows, exact).max() > 2 * Z_MAX


def _bernoulli(logits):
    import pyro.distributions as dist

    return dist.Bernoulli(logits=logits).to_event(1)


class _GuideWrapper:
    """``guide``'s parameters and encoders with another forward, for the negative control."""

    def __init__(self, guide, forward):
        self.encoders, self.baseline, self._forward = guide.encoders, "none", forward

    def __call__(self, x):
        return self._forward(x)

    def named_parameters(self):
        return (("encoders." + name, p) for name, p in self.encoders.named_parameters())


def test_iw_log_likelihood_of_an_sbn_approaches_the_enumerated_evidence(pyro_state):
    model, guide = build("none")
    with torch.no_grad():
        log_joint = []
        for bits in itertools.product([0.0, 1.0], repeat=sum(LATENTS)):
            values = {"z_1": torch.tensor(bits[:2]).expand(2, 2), "z_2": torch.tensor(bits[2:]).expand(2, 1)}
            trace = poutine.trace(poutine.condition(model, values)).get_trace(X)
            trace.compute_log_prob()
            log_joint.append(sum(site["log_prob"] for site in trace.nodes.values() if site["type"] == "sample"))
        evidence = torch.stack(log_joint).logsumexp(0)
    elbo = elbo_per_datum(model, guide, X, num_samples=4000, particle_chunk=1000)
    large = importance_log_likelihood(model, guide, X, num_samples=4000, particle_chunk=1000)
    assert (large <= evidence + 0.02).all()
    assert torch.allclose(large, evidence, atol=0.05)
    assert (elbo < evidence - 0.1).all()  # the ELBO's gap, KL(q || p(h | x)), is what IW closes


def test_normaliser_divides_by_the_running_rms_of_past_signals():
    normaliser = SignalNormaliser(beta=0.5)
    first = normaliser("z", torch.full((4,), 10.0))
    assert torch.equal(first, torch.full((4,), 10.0))  # no history: divisor 1
    second = normaliser("z", torch.full((4,), 30.0))
    assert torch.allclose(second, torch.full((4,), 3.0))  # debiased mean square of the first step: 100
    assert normaliser.divisor("z") == pytest.approx(((0.25 * 100 + 0.5 * 900) / 0.75) ** 0.5)
    small = SignalNormaliser()
    small("w", torch.full((3,), 0.1))
    assert small.divisor("w") == 1.0  # never divides by less than 1
    restored = SignalNormaliser()
    restored.load_state_dict(normaliser.state_dict())
    assert restored.divisor("z") == normaliser.divisor("z")


@pytest.mark.parametrize("beta", [1.0, -0.1, "0.8", True])
def test_bad_normaliser_beta_is_one_line_error(beta):
    with pytest.raises(ValueError, match="normaliser_beta must be a number in \\[0, 1\\)"):
        NormalisedTraceGraph_ELBO(normaliser_beta=beta)


def _optimiser_and_store_sizes(loss, steps: int) -> list[tuple[int, int]]:
    """Optimiser objects and param-store names after each of a few SVI steps of build("neural")."""
    pyro.clear_param_store()
    model, guide = build("neural")  # a decaying average under a neural baseline, per layer
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), loss)
    sizes = []
    for _ in range(steps):
        svi.step(X)
        sizes.append((len(svi.optim.optim_objs), len(pyro.get_param_store().keys())))
    return sizes


def test_decaying_averages_stay_one_tensor_so_memory_does_not_grow(pyro_state):
    # Pyro's TraceGraph_ELBO stores each step's average as a new tensor, and SVI's optimiser keeps
    # one optimiser per tensor it has seen: its count grows by one per site and step.
    pyro_sizes = _optimiser_and_store_sizes(TraceGraph_ELBO(), 6)
    assert pyro_sizes[-1][0] - pyro_sizes[2][0] == 3 * len(LATENTS)
    for loss in (NormalisedTraceGraph_ELBO(), NormalisedTraceGraph_ELBO(normalise=False)):
        sizes = _optimiser_and_store_sizes(loss, 6)
        assert sizes[2:] == [sizes[2]] * 4  # constant after the first steps


def test_in_place_average_is_pyros_update(pyro_state):
    pyro.clear_param_store()
    site = {"infer": {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}}, "value": torch.zeros(2)}
    name = "__baseline_avg_downstream_cost_h"
    for signal in (torch.tensor([4.0, -2.0]), torch.tensor([1.0, 3.0]), torch.tensor([-5.0, 0.5])):
        before = pyro.get_param_store()[name].detach().clone() if name in pyro.get_param_store() else torch.zeros(2)
        held = pyro.get_param_store()[name].unconstrained() if name in pyro.get_param_store() else None
        use_baseline, _, baseline = _construct_baseline_in_place("h", site, signal)
        assert use_baseline and torch.equal(baseline, before)  # the baseline is the previous average
        after = pyro.get_param_store()[name]
        assert torch.allclose(after, 0.9 * before + 0.1 * signal)  # Pyro's update c <- beta c + (1 - beta) l
        if held is not None:
            assert after.unconstrained() is held


def test_bad_normalise_flag_is_one_line_error():
    with pytest.raises(TypeError, match="normalise must be a bool"):
        NormalisedTraceGraph_ELBO(normalise=1)
