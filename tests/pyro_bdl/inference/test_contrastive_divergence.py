"""ContrastiveDivergence: its gradient against the exact one, SVI and fit, persistent chains, bad arguments."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI

from pyro_bdl.inference import ContrastiveDivergence, fit
from pyro_bdl.models import RBM, RBMGuide
from pyro_bdl.models.rbm import ACTIVATION_KEY, FACTOR_SITE, all_states, bernoulli

pytestmark = pytest.mark.usefixtures("pyro_state")


def small_rbm(seed: int = 0) -> RBM:
    torch.manual_seed(seed)
    rbm = RBM(10, 6, init_scale=1.0)
    with torch.no_grad():
        rbm.visible_bias.normal_(0, 0.5)
        rbm.hidden_bias.normal_(0, 0.5)
    return rbm.double()


def gradient(rbm: RBM, loss: torch.Tensor) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(rbm.parameters()))])


def exact_gradient(rbm: RBM, data: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean negative log-likelihood: mean F(data) + log Z, by enumeration."""
    log_z = torch.logsumexp(-rbm.free_energy(all_states(rbm.data_dim)), 0)
    return gradient(rbm, rbm.free_energy(data).mean() + log_z)


def cd_gradient(rbm: RBM, data: torch.Tensor, k: int, repeats: int) -> torch.Tensor:
    """The CD-k loss's gradient per row, averaged over ``repeats`` chains per data row."""
    rows = data.repeat(repeats, 1)
    loss = ContrastiveDivergence(k).differentiable_loss(rbm, RBMGuide(), rows)
    return gradient(rbm, loss / rows.shape[0])


def test_cd_k_gradient_approaches_the_exact_gradient_as_k_grows():
    """Relative error of the CD-k gradient (expected over 4,000 chains per row): CD-1 is biased,
    CD-100 is within Monte Carlo noise of the exact gradient."""
    rbm = small_rbm()
    torch.manual_seed(1)
    data = torch.bernoulli(torch.full((25, 10), 0.3, dtype=torch.float64))
    exact = exact_gradient(rbm, data)
    errors = {k: float((cd_gradient(rbm, data, k, 4000) - exact).norm() / exact.norm()) for k in (1, 5, 100)}
    assert errors[100] < 0.03
    assert errors[1] > 3 * errors[100]
    assert errors[1] > errors[5] > errors[100]


def test_loss_value_is_the_free_energy_difference():
    """``loss`` (a float) equals ``differentiable_loss`` and ``loss_and_grads`` at the same random state."""
    rbm = small_rbm()
    data = torch.bernoulli(torch.full((8, 10), 0.5, dtype=torch.float64))
    values = []
    for method in ("loss", "differentiable_loss", "loss_and_grads"):
        torch.manual_seed(3)
        value = getattr(ContrastiveDivergence(2), method)(rbm, RBMGuide(), data)
        values.append(float(value.detach()) if isinstance(value, torch.Tensor) else value)
    torch.manual_seed(3)
    negative = rbm.gibbs(data, 2)
    expected = float((rbm.free_energy(data).sum() - rbm.free_energy(negative).sum()).detach())
    assert values == pytest.approx([expected] * 3)


def test_svi_with_cd_raises_the_likelihood_of_the_data():
    rbm = RBM(10, 6)
    torch.manual_seed(0)
    data = torch.bernoulli(torch.full((200, 10), 0.1)) * (torch.arange(10) < 5)  # first five bits only
    before = rbm.exact_log_partition()
    svi = SVI(rbm, RBMGuide(), pyro.optim.SGD({"lr": 0.05}), ContrastiveDivergence(1))
    for _ in range(200):
        svi.step(data[torch.randint(200, (20,))])
    after = rbm.exact_log_partition()
    assert float(rbm.log_likelihood(data, after).mean()) > float(rbm.log_likelihood(data, before).mean()) + 2


def test_fit_scales_the_negative_phase_with_the_positive_one():
    """Under fit's N / B scaling both phases carry the same weight, so the surrogate is N/B times the batch's."""
    rbm = small_rbm().float()
    data = torch.bernoulli(torch.full((6, 10), 0.5))
    torch.manual_seed(0)
    plain = ContrastiveDivergence(1).differentiable_loss(rbm, RBMGuide(), data)
    torch.manual_seed(0)
    scaled = ContrastiveDivergence(1).differentiable_loss(poutine.scale(rbm, 10.0), RBMGuide(), data)
    torch.testing.assert_close(scaled, 10 * plain)
    result = fit(rbm, RBMGuide(), torch.bernoulli(torch.full((60, 10), 0.3)), optim=pyro.optim.SGD({"lr": 0.01}),
                 epochs=2, batch_size=20, loss=ContrastiveDivergence(1), progress=False)  # fmt: skip
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_persistent_chains_carry_over_and_round_trip_through_state_dict():
    rbm = small_rbm().float()
    data = torch.bernoulli(torch.full((6, 10), 0.5))
    loss = ContrastiveDivergence(1, persistent=True, num_chains=9)
    loss.loss(rbm, RBMGuide(), data)
    first = loss.state_dict()["chains"][FACTOR_SITE]
    assert first.shape == (9, 6)  # the chains' hidden states
    loss.loss(rbm, RBMGuide(), data)
    restored = ContrastiveDivergence(1, persistent=True, num_chains=9)
    restored.load_state_dict(loss.state_dict())
    torch.manual_seed(5)
    a = loss.differentiable_loss(rbm, RBMGuide(), data)
    torch.manual_seed(5)
    b = restored.differentiable_loss(rbm, RBMGuide(), data)
    torch.testing.assert_close(a, b)


def test_an_rbm_factor_inside_a_larger_model_gets_its_cd_term():
    """An RBM prior over codes z = x rows (a factor with the module's ``factor``), beside another site."""
    rbm = small_rbm().float()

    def model(x):
        with pyro.plate("data", x.shape[0]):
            rbm.factor(x, name="prior")
            pyro.sample("noise", pyro.distributions.Normal(0.0, 1.0), obs=torch.zeros(x.shape[0]))

    data = torch.bernoulli(torch.full((6, 10), 0.5))
    torch.manual_seed(0)
    value = ContrastiveDivergence(1).loss(model, lambda x: None, data)
    torch.manual_seed(0)
    negative = rbm.gibbs(data, 1)
    expected = rbm.free_energy(data).sum() - rbm.free_energy(negative).sum() - 6 * torch.distributions.Normal(
        0.0, 1.0).log_prob(torch.tensor(0.0))  # fmt: skip
    assert value == pytest.approx(float(expected.detach()), rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be an int >= 1, got 0"),
        ({"k": 1.5}, "k must be an int >= 1, got 1.5"),
        ({"num_chains": 10}, "num_chains needs persistent=True"),
        ({"persistent": True, "num_chains": 0}, "num_chains must be an int >= 1 or None, got 0"),
        ({"persistent": "yes"}, "persistent must be a bool"),
        ({"persistent": True, "init_chains": "noise"}, "init_chains must be one of .'model', 'data'., got 'noise'"),
    ],
)
def test_bad_arguments_give_a_one_line_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ContrastiveDivergence(**kwargs)


def pcd_sweep(rbm: RBM, hidden: torch.Tensor, params: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One PCD-1 step's chains by hand: ``v ~ p(v | h)`` under ``params``, then the next ``h ~ p(h | v)``."""
    weight, _, hidden_bias = (p.detach() for p in (rbm.params() if params is None else params))
    visible = rbm.sample_visible(hidden, params)
    return visible, bernoulli(torch.sigmoid(hidden_bias + visible @ weight))


def test_persistent_step_draws_the_visible_half_under_the_current_parameters():
    """PCD-1 keeps the chains' hidden states: a step draws v ~ p(v | h) with the parameters of that step, takes
    the negative phase at v and keeps h ~ p(h | v) from the same pre-activations (Tieleman 2008's order)."""
    rbm = small_rbm()
    data = torch.bernoulli(torch.full((6, 10), 0.5, dtype=torch.float64))
    loss = ContrastiveDivergence(1, persistent=True, num_chains=4)
    loss.loss(rbm, RBMGuide(), data)
    hidden = loss.state_dict()["chains"][FACTOR_SITE]
    with torch.no_grad():
        rbm.visible_bias.add_(3.0)  # an update between the steps: the next visible draw must see it
    torch.manual_seed(7)
    value = loss.loss(rbm, RBMGuide(), data)
    torch.manual_seed(7)
    visible, advanced = pcd_sweep(rbm, hidden)
    torch.testing.assert_close(loss.state_dict()["chains"][FACTOR_SITE], advanced)
    expected = rbm.free_energy(data).sum() - 6 / 4 * rbm.free_energy(visible).sum()
    assert value == pytest.approx(float(expected.detach()))


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_first_chains_come_from_the_model_or_the_data(visible):
    """init_chains="model" (the default) starts the chains at draws of p(v | h = 0), "data" at copies of the rows."""
    rbm = RBM(10, 6, visible=visible).double()
    with torch.no_grad():
        rbm.visible_bias.copy_(torch.linspace(-4, 4, 10))
    data = torch.bernoulli(torch.full((3, 10), 0.5, dtype=torch.float64))
    first = ContrastiveDivergence(1, persistent=True, num_chains=5)._first_chains
    from_data = ContrastiveDivergence(1, persistent=True, num_chains=5, init_chains="data")._first_chains
    torch.testing.assert_close(from_data(rbm, data, rbm.visible_bias), data[[0, 1, 2, 0, 1]])
    torch.manual_seed(0)
    draws = torch.cat([first(rbm, data, rbm.visible_bias.detach()) for _ in range(400)])
    assert draws.shape == (2000, 10)
    expected = torch.sigmoid(rbm.visible_bias) if visible == "bernoulli" else rbm.visible_bias
    torch.testing.assert_close(draws.mean(0), expected.detach(), atol=0.1, rtol=0)


def test_a_state_with_visible_chains_from_before_hidden_states_still_resumes():
    """A state saved when the chains were visible rows (no "chain_state") resumes: the next step takes its
    negative phase at those rows and keeps their hidden states."""
    rbm = small_rbm()
    data = torch.bernoulli(torch.full((6, 10), 0.5, dtype=torch.float64))
    old_chains = torch.bernoulli(torch.full((4, 10), 0.5, dtype=torch.float64))
    loss = ContrastiveDivergence(1, persistent=True)
    loss.load_state_dict({"chains": {FACTOR_SITE: old_chains}, "fast": {}})
    torch.manual_seed(2)
    value = loss.loss(rbm, RBMGuide(), data)
    expected = rbm.free_energy(data).sum() - 6 / 4 * rbm.free_energy(old_chains).sum()
    assert value == pytest.approx(float(expected.detach()))
    assert loss.state_dict()["chains"][FACTOR_SITE].shape == (4, 6)
    assert loss.state_dict()["visible_chains"] == {}


def test_cd_reuses_the_data_pre_activations_for_its_first_sweep():
    """CD-k's negative samples equal ``k`` sweeps of ``gibbs`` from the data at the same random state, and the
    factor site carries the pre-activations ``b + v.W`` it computed for ``F``."""
    rbm = small_rbm()
    data = torch.bernoulli(torch.full((5, 10), 0.5, dtype=torch.float64))
    trace = poutine.trace(rbm).get_trace(data)
    torch.testing.assert_close(trace.nodes[FACTOR_SITE]["infer"][ACTIVATION_KEY], rbm.hidden_activation(data))
    torch.manual_seed(11)
    sweep = rbm.sweep_from_activation(rbm.hidden_activation(data))
    torch.manual_seed(11)
    torch.testing.assert_close(sweep, rbm.gibbs(data, 1))


def graph_nodes(tensor: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``tensor``."""
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
@pytest.mark.parametrize(("k", "persistent"), [(2, False), (1, True), (3, True)])
def test_closed_form_gradient_equals_autograd_through_the_free_energies(visible, k, persistent):
    """The fused closed-form node gives the same gradient (parameters and differentiable rows) and value as
    autograd through F(v_data) and F(v_neg), at the same random state, under a scale and with 7 chains for 5 rows."""
    torch.manual_seed(0)
    rbm = RBM(10, 6, visible=visible, init_scale=0.5).double()
    with torch.no_grad():
        rbm.visible_bias.normal_(0, 0.5)
        rbm.hidden_bias.normal_(0, 0.5)
    base = torch.bernoulli(torch.full((5, 10), 0.5, dtype=torch.float64))
    results = []
    for closed_form in (True, False):
        rows = base.clone().requires_grad_()
        loss = ContrastiveDivergence(k, persistent=persistent, num_chains=7 if persistent else None,
                                     closed_form=closed_form)  # fmt: skip
        torch.manual_seed(1)
        for _ in range(2):  # the second step starts from advanced chains
            surrogate = loss.differentiable_loss(poutine.scale(rbm, 0.37), RBMGuide(), rows)
        assert ("_ClosedFormCDBackward" in graph_nodes(surrogate)) == closed_form
        grads = torch.autograd.grad(surrogate, [*rbm.parameters(), rows])
        results.append((surrogate.detach(), grads, loss.state_dict()["chains"]))
    (value, grads, chains), (value_ref, grads_ref, chains_ref) = results
    torch.testing.assert_close(value, value_ref)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref)
    assert grads[0].abs().max() > 0.01
    torch.testing.assert_close(chains, chains_ref)


def test_masked_rbm_sites_take_the_autograd_path():
    """A masked factor site keeps autograd's gradient (masked rows contribute nothing to the positive phase)."""
    rbm = small_rbm()
    data = torch.bernoulli(torch.full((6, 10), 0.5, dtype=torch.float64))
    mask = torch.tensor([True, False, True, True, False, True])
    torch.manual_seed(2)
    masked = ContrastiveDivergence(1).differentiable_loss(poutine.mask(rbm, mask=mask), RBMGuide(), data)
    assert "_ClosedFormCDBackward" not in graph_nodes(masked)
    torch.manual_seed(2)
    negative = rbm.gibbs(data, 1)
    expected = rbm.free_energy(data[mask]).sum() - rbm.free_energy(negative).sum()
    torch.testing.assert_close(gradient(rbm, masked), gradient(rbm, expected))


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_loss_and_grads_adds_the_same_gradient_into_grad(visible):
    """loss_and_grads' direct accumulation into ``.grad`` (2 particles, PCD, gradients already present) equals
    the autograd path's, and returns the same value."""
    torch.manual_seed(0)
    rbm = RBM(10, 6, visible=visible, init_scale=0.5).double()
    data = torch.bernoulli(torch.full((5, 10), 0.5, dtype=torch.float64))
    results = []
    for closed_form in (True, False):
        for param in rbm.parameters():
            param.grad = torch.ones_like(param)
        loss = ContrastiveDivergence(1, persistent=True, num_chains=3, num_particles=2, closed_form=closed_form)
        torch.manual_seed(4)
        values = [loss.loss_and_grads(poutine.scale(rbm, 0.5), RBMGuide(), data) for _ in range(2)]
        results.append((values, [param.grad.clone() for param in rbm.parameters()]))
    (values, grads), (values_ref, grads_ref) = results
    assert values == pytest.approx(values_ref)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref)
    assert (grads[0] - 1).abs().max() > 0.01


def test_fpcd_fast_parameters_follow_the_gradient_and_move_the_chains():
    """FPCD: the first step equals PCD's (fast parameters start at 0) and sets theta_fast = -fast_lr * grad; the
    second step's chains move under theta + theta_fast and theta_fast <- decay * theta_fast - fast_lr * grad."""
    rbm = small_rbm()
    data = torch.bernoulli(torch.full((6, 10), 0.5, dtype=torch.float64))
    fpcd = ContrastiveDivergence(1, persistent=True, num_chains=4, fast_lr=0.3, fast_decay=0.9)
    pcd = ContrastiveDivergence(1, persistent=True, num_chains=4)
    grads = []
    for loss in (fpcd, pcd):
        rbm.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        loss.loss_and_grads(rbm, RBMGuide(), data)
        grads.append([param.grad.clone() for param in rbm.parameters()])
    for grad, grad_pcd, fast in zip(*grads, fpcd.state_dict()["fast"][FACTOR_SITE], strict=True):
        torch.testing.assert_close(grad, grad_pcd)
        torch.testing.assert_close(fast, -0.3 * grad)
        assert grad.abs().max() > 0.01
    first, hidden = fpcd.state_dict()["fast"][FACTOR_SITE], fpcd.state_dict()["chains"][FACTOR_SITE]
    rbm.zero_grad(set_to_none=True)
    torch.manual_seed(4)
    fpcd.loss_and_grads(rbm, RBMGuide(), data)
    torch.manual_seed(4)
    sampler = tuple(param.detach() + fast for param, fast in zip(rbm.parameters(), first, strict=True))
    torch.testing.assert_close(fpcd.state_dict()["chains"][FACTOR_SITE], pcd_sweep(rbm, hidden, sampler)[1])
    for param, fast_before, fast in zip(rbm.parameters(), first, fpcd.state_dict()["fast"][FACTOR_SITE], strict=True):
        torch.testing.assert_close(fast, 0.9 * fast_before - 0.3 * param.grad)
    restored = ContrastiveDivergence(1, persistent=True, fast_lr=0.3, fast_decay=0.9)
    restored.load_state_dict(fpcd.state_dict())
    for fast, fast_ref in zip(restored.fast[FACTOR_SITE], fpcd.fast[FACTOR_SITE], strict=True):
        torch.testing.assert_close(fast, fast_ref)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fast_lr": 0.1}, "fast_lr > 0 .FPCD. needs persistent=True"),
        ({"persistent": True, "fast_lr": -1.0}, "fast_lr must be a finite float >= 0, got -1.0"),
        ({"persistent": True, "fast_lr": 0.1, "fast_decay": 1.0}, r"fast_decay must be a float in \[0, 1\), got 1.0"),
        ({"persistent": True, "fast_lr": 0.1, "num_particles": 2}, "num_particles=1"),
    ],
)
def test_bad_fpcd_arguments_give_a_one_line_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ContrastiveDivergence(**kwargs)


def test_steps_without_validation_or_graph_match_pyros_checked_traces():
    """With Pyro's validation off the loss records its traces without Pyro's trace copies, and after a first
    step whose traces need no autograd graph, under ``torch.no_grad()``: the same values and gradients as with
    validation on; a model with another site beside the RBM keeps its graph."""
    rbm = small_rbm()
    data = torch.bernoulli(torch.full((6, 10), 0.5, dtype=torch.float64))
    results = []
    for validate in (True, False):
        loss = ContrastiveDivergence(1, persistent=True, num_chains=4)
        torch.manual_seed(9)
        with pyro.validation_enabled(validate):
            steps = []
            for _ in range(3):
                rbm.zero_grad(set_to_none=True)
                value = loss.loss_and_grads(poutine.scale(rbm, 0.5), RBMGuide(), data)
                steps.append((value, [param.grad.clone() for param in rbm.parameters()]))
        results.append(steps)
        assert loss._last_graph_free
    for (value, grads), (value_ref, grads_ref) in zip(*results, strict=True):
        assert value == pytest.approx(value_ref)
        for grad, grad_ref in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(grad, grad_ref)

    loc = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            rbm.factor(x)
            pyro.sample("noise", pyro.distributions.Normal(loc, 1.0), obs=torch.ones(x.shape[0], dtype=x.dtype))

    loss = ContrastiveDivergence(1)
    with pyro.validation_enabled(False):
        for _ in range(2):
            loss.loss_and_grads(model, lambda x: None, data)
    assert not loss._last_graph_free
    assert float(loc.grad) == pytest.approx(-2 * 6)  # d/dloc of -sum log N(1 | loc, 1) at loc = 0, two steps
