"""Observation models against their closed forms, Monte Carlo, Pyro's ``obs_mask`` and a tiny MLE fit.

Closed forms are written out by hand here (with ``ndtr``/``erfc``, ``lgamma`` and plain
logs, in float64) rather than taken from the implementation's stable expressions.
Statistical tests use a fixed seed and a tolerance of a few standard errors.
"""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule

from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.observation import OBSERVATION_MODELS, ObservationModel, Tobit, mean_function, observation_distribution

NAMES = list(OBSERVATION_MODELS)
K = 4
CUTPOINTS = torch.tensor([-1.0, 0.2, 1.5], dtype=torch.float64)
PARAMS = {
    "gaussian": {"scale": 0.7},
    "tobit": {"scale": 0.8},
    "gamma_reciprocal": {"concentration": 2.5},
    "ordinal_logit": {"cutpoints": CUTPOINTS},
}


pytestmark = pytest.mark.usefixtures("pyro_state")


def make_eta(name: str, shape=(3, 4)) -> torch.Tensor:
    """Moderate natural parameters of ``shape`` (plus K logits for categorical), float64."""
    if name == "categorical":
        return torch.randn(*shape, K, dtype=torch.float64)
    if name == "gamma_reciprocal":
        return torch.rand(*shape, dtype=torch.float64) + 0.5
    if name == "poisson_log":
        return torch.rand(*shape, dtype=torch.float64) * 2 - 0.5
    if name == "poisson_sqrt":
        return torch.rand(*shape, dtype=torch.float64) * 2 + 0.2
    return torch.randn(*shape, dtype=torch.float64)


def log_prob_by_hand(name: str, eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ndtr = torch.special.ndtr
    if name == "gaussian":
        s = PARAMS[name]["scale"]
        return -0.5 * ((y - eta) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    if name.startswith("bernoulli"):
        mu = {
            "bernoulli_logit": 1 / (1 + torch.exp(-eta)),
            "bernoulli_probit": ndtr(eta),
            "bernoulli_cloglog": 1 - torch.exp(-torch.exp(eta)),
        }[name]
        return y * torch.log(mu) + (1 - y) * torch.log(1 - mu)
    if name == "categorical":
        return eta.gather(-1, y.unsqueeze(-1)).squeeze(-1) - eta.exp().sum(-1).log()
    if name == "poisson_log":
        return y * eta - eta.exp() - torch.lgamma(y + 1)
    if name == "poisson_sqrt":
        return y * torch.log(eta**2) - eta**2 - torch.lgamma(y + 1)
    if name == "gamma_reciprocal":
        a = PARAMS[name]["concentration"]
        rate = a * eta
        return a * torch.log(rate) - math.lgamma(a) + (a - 1) * torch.log(y) - rate * y
    if name == "tobit":
        s = PARAMS[name]["scale"]
        at_zero = torch.log(0.5 * torch.erfc(eta / (s * math.sqrt(2))))
        above = -0.5 * ((y - eta) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
        return torch.where(y == 0, at_zero, above)
    if name == "ordinal_logit":
        cdf = torch.sigmoid(CUTPOINTS - eta.unsqueeze(-1))
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf, torch.ones_like(cdf[..., :1])], -1)
        probs = cdf[..., 1:] - cdf[..., :-1]
        return probs.gather(-1, y.unsqueeze(-1)).squeeze(-1).log()
    raise AssertionError(name)


def mean_by_hand(name: str, eta: torch.Tensor) -> torch.Tensor:
    if name in ("gaussian",):
        return eta
    if name == "bernoulli_logit":
        return 1 / (1 + torch.exp(-eta))
    if name == "bernoulli_probit":
        return 0.5 * torch.erfc(-eta / math.sqrt(2))
    if name == "bernoulli_cloglog":
        return 1 - torch.exp(-torch.exp(eta))
    if name == "categorical":
        return eta.exp() / eta.exp().sum(-1, keepdim=True)
    if name == "poisson_log":
        return eta.exp()
    if name == "poisson_sqrt":
        return eta**2
    if name == "gamma_reciprocal":
        return 1 / eta
    if name == "tobit":
        s = PARAMS[name]["scale"]
        z = eta / s
        return s * torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) + eta * 0.5 * torch.erfc(-z / math.sqrt(2))
    if name == "ordinal_logit":
        probs = observation_distribution(name, eta, cutpoints=CUTPOINTS).probs
        return (probs * torch.arange(K, dtype=eta.dtype)).sum(-1)
    raise AssertionError(name)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_matches_closed_form(name):
    eta = make_eta(name)
    d = observation_distribution(name, eta, **PARAMS.get(name, {}))
    y = d.sample()
    if name == "tobit":  # make sure both branches are hit
        y[0] = 0.0
        y[1] = y[1].abs() + 0.1
    torch.testing.assert_close(d.log_prob(y), log_prob_by_hand(name, eta, y), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_mean_matches_closed_form(name):
    eta = make_eta(name)
    torch.testing.assert_close(mean_function(name, eta, **PARAMS.get(name, {})), mean_by_hand(name, eta))


@pytest.mark.parametrize("name", NAMES)
def test_mean_matches_monte_carlo(name):
    """Sample means of 20000 draws within 5 standard errors (plus 1e-3, for near-certain outcomes) of the mean."""
    eta = make_eta(name, shape=(5,))
    d = observation_distribution(name, eta, **PARAMS.get(name, {}))
    draws = d.sample((20000,))
    if name == "categorical":
        draws = torch.nn.functional.one_hot(draws, K)
    draws = draws.to(eta.dtype)
    standard_error = draws.std(0) / math.sqrt(draws.shape[0])
    error = (draws.mean(0) - mean_function(name, eta, **PARAMS.get(name, {}))).abs()
    assert (error <= 5 * standard_error + 1e-3).all(), (error, standard_error)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4)])
@pytest.mark.parametrize("name", NAMES)
def test_batch_shapes(name, shape):
    eta = make_eta(name, shape).float()
    d = observation_distribution(name, eta, **PARAMS.get(name, {}))
    assert d.batch_shape == shape
    assert d.event_shape == ()
    y = d.sample((7,))
    assert y.shape == (7, *shape)
    assert d.log_prob(y).shape == (7, *shape)
    mean = mean_function(name, eta, **PARAMS.get(name, {}))
    assert mean.shape == ((*shape, K) if name == "categorical" else shape)
    assert mean.dtype == torch.float32


def test_ordinal_probabilities_are_differences_of_sigmoids():
    eta = make_eta("ordinal_logit", (2, 3))
    probs = observation_distribution("ordinal_logit", eta, cutpoints=CUTPOINTS).probs
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    cdf = torch.sigmoid(CUTPOINTS - eta.unsqueeze(-1))  # P(y <= k), k = 0..K-2
    torch.testing.assert_close(probs[..., 0], cdf[..., 0])
    torch.testing.assert_close(probs[..., 1:-1], cdf[..., 1:] - cdf[..., :-1])
    torch.testing.assert_close(probs[..., -1], 1 - cdf[..., -1])


def test_cloglog_convention():
    """mu = 1 - exp(-exp(eta)) inverts log(-log(1 - mu)); the slide's Gumbel CDF is its mirror image."""
    eta = torch.linspace(-3, 2, 11, dtype=torch.float64)
    mu = mean_function("bernoulli_cloglog", eta)
    torch.testing.assert_close(torch.log(-torch.log(1 - mu)), eta)
    torch.testing.assert_close(torch.exp(-torch.exp(-eta)), 1 - mean_function("bernoulli_cloglog", -eta))


def test_binary_links_stay_finite_in_the_tails():
    eta = torch.tensor([-40.0, -10.0, 10.0, 40.0])
    for name in ("bernoulli_probit", "bernoulli_cloglog"):
        d = observation_distribution(name, eta)
        for y in (torch.zeros(4), torch.ones(4)):
            assert torch.isfinite(d.log_prob(y)).all(), (name, y)


def test_tobit_distribution():
    loc, scale = torch.tensor([[-1.0], [0.5]]), torch.tensor([1.0, 2.0, 0.5])
    d = Tobit(loc, scale)
    assert d.batch_shape == (2, 3)
    assert (d.sample((100,)) >= 0).all()
    expanded = d.expand((4, 2, 3))
    assert expanded.batch_shape == (4, 2, 3)
    torch.testing.assert_close(expanded.mean[1], d.mean)
    loc = torch.tensor(0.3, requires_grad=True)
    Tobit(loc, 1.0).rsample((10,)).sum().backward()
    assert loc.grad is not None
    with pytest.raises(ValueError, match="scale"):
        Tobit(0.0, -1.0)


@pytest.mark.parametrize(
    ("name", "eta", "params", "match"),
    [
        ("logistic", torch.zeros(3), {}, "unknown observation model 'logistic'; expected one of: gaussian"),
        ("gamma_reciprocal", torch.tensor([1.0, 0.0]), {}, "eta must be positive"),
        ("gamma_reciprocal", torch.tensor([1.0, -2.0]), {}, "eta must be positive"),
        ("gaussian", torch.zeros(3), {"scale": -1.0}, "scale must be positive"),
        ("gaussian", torch.zeros(3), {"sigma": 1.0}, r"unexpected parameters \['sigma'\]"),
        ("ordinal_logit", torch.zeros(3), {"cutpoints": torch.tensor([0.0, -1.0])}, "strictly increasing"),
        ("ordinal_logit", torch.zeros(3), {}, "'cutpoints'.*required"),
        ("categorical", torch.tensor(0.0), {}, "trailing dimension"),
    ],
)
def test_validation_errors(name, eta, params, match):
    with pytest.raises(ValueError, match=match):
        observation_distribution(name, eta, **params)


def test_validation_errors_of_module_and_observations():
    with pytest.raises(ValueError, match="expected one of"):
        ObservationModel("poisson")
    with pytest.raises(ValueError, match="strictly increasing"):
        ObservationModel("ordinal_logit", cutpoints=[1.0, 0.0])
    with pytest.raises(ValueError, match="num_classes"):
        ObservationModel("ordinal_logit")
    with pytest.raises(TypeError, match="floating-point"):
        observation_distribution("gaussian", torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="support"):
        observation_distribution("tobit", torch.zeros(3)).log_prob(torch.tensor([0.0, -0.5, 1.0]))
    with pytest.raises(ValueError, match=r"at least len\(plates\)"):
        poutine.trace(ObservationModel("gaussian", event_dim=1)).get_trace(torch.zeros(3))
    with pytest.raises(ValueError, match="plates must be distinct non-empty plate names"):
        ObservationModel("gaussian", plates="data")  # a string, not a tuple of names


@pytest.mark.parametrize(
    "name", ["gaussian", "bernoulli_logit", "categorical", "poisson_sqrt", "tobit", "ordinal_logit"]
)
def test_obs_mask_drops_missing_entries(name):
    eta = make_eta(name, (6, 3)).float().requires_grad_()
    model = ObservationModel(
        name, plates=("data", "features"), learn_params=False, num_classes=K, **PARAMS.get(name, {})
    )
    d = model.distribution(eta)
    obs = d.sample()
    mask = torch.rand(6, 3) < 0.6
    if not model.spec.discrete:
        obs = torch.where(mask, obs, torch.nan)  # missing values may be anything; they are never read
    trace = poutine.trace(model).get_trace(eta, obs, obs_mask=mask)
    observed = trace.log_prob_sum(lambda site_name, site: site["is_observed"])
    expected = d.log_prob(torch.where(mask, obs, torch.zeros_like(obs)))[mask].sum()
    torch.testing.assert_close(observed, expected)
    assert {"obs_observed", "obs_unobserved", "obs"} <= set(trace.nodes)
    value = trace.nodes["obs"]["value"]
    assert torch.equal(value[mask], obs[mask])
    assert torch.isfinite(value.float()).all()
    (grad,) = torch.autograd.grad(observed, eta)
    assert torch.isfinite(grad).all()
    assert (grad[~mask] == 0).all()


def test_module_sites_plates_and_params():
    model = ObservationModel("gaussian", event_dim=1, scale=0.5)
    eta = torch.zeros(5, 2)
    trace = poutine.trace(model).get_trace(eta, site_name="y")
    site = trace.nodes["y"]
    assert site["value"].shape == (5, 2)
    assert site["fn"].event_shape == (2,)
    assert [frame.name for frame in site["cond_indep_stack"]] == [DATA_PLATE]  # the convention's data plate
    inner = poutine.trace(ObservationModel("gaussian", plates=("rows", "cols"))).get_trace(torch.zeros(4, 3))
    assert [(f.name, f.dim) for f in inner.nodes[OBS_SITE]["cond_indep_stack"]] == [("rows", -2), ("cols", -1)]
    torch.testing.assert_close(model.scale, torch.tensor(0.5))
    assert set(pyro.get_param_store().keys()) == {"scale"}
    assert isinstance(model.param_values()["scale"], torch.Tensor)

    fixed = ObservationModel("ordinal_logit", learn_params=False, num_classes=3)
    torch.testing.assert_close(fixed.cutpoints, torch.logit(torch.tensor([1 / 3, 2 / 3])))
    probs = fixed.distribution(torch.zeros(2)).probs
    torch.testing.assert_close(probs, torch.full((2, 3), 1 / 3))
    trace = poutine.trace(fixed).get_trace(torch.zeros(2))
    assert not [node for node in trace.nodes.values() if node["type"] == "param"]


def test_per_datum_params_replace_the_stored_ones_in_every_method():
    model = ObservationModel("gaussian", event_dim=1, scale=0.5)
    eta, scale = torch.zeros(4, 2), torch.tensor([[0.1], [0.2], [0.3], [0.4]]).expand(4, 2)
    torch.testing.assert_close(model.distribution(eta, {"scale": scale}).scale, scale)
    torch.testing.assert_close(model.distribution(eta).scale, torch.full((4, 2), 0.5))
    site = poutine.trace(model).get_trace(eta, obs=torch.ones(4, 2), params={"scale": scale}).nodes[OBS_SITE]
    torch.testing.assert_close(site["fn"].base_dist.scale, scale)
    entries = poutine.trace(model.observe_entries).get_trace(eta, torch.ones(4, 2), torch.ones(4, 2, dtype=torch.bool),
                                                             params={"scale": scale})  # fmt: skip
    torch.testing.assert_close(entries.nodes[OBS_SITE]["fn"].base_dist.base_dist.scale, scale)
    with pytest.raises(ValueError, match=r"gaussian: params names \['rate'\]; it takes \['scale'\]"):
        model.distribution(eta, {"rate": scale})


class GLM(PyroModule):
    def __init__(self, name: str, in_features: int) -> None:
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](in_features, 1)
        self.likelihood = ObservationModel(name)

    def forward(self, x, y=None):
        return self.likelihood(self.linear(x).squeeze(-1), obs=y)


@pytest.mark.parametrize(
    ("name", "weight", "bias"),
    [("bernoulli_logit", [1.5, -2.0], 0.5), ("poisson_log", [0.8, -0.5], 0.3), ("gaussian", [2.0, -1.0], 0.5)],
)
def test_svi_mle_recovers_weights(name, weight, bias):
    """SVI with an empty guide is maximum likelihood; 4000 points, estimates within 0.2."""
    weight, bias = torch.tensor(weight), torch.tensor(bias)
    x = torch.randn(4000, 2)
    y = observation_distribution(name, x @ weight + bias, **({"scale": 0.3} if name == "gaussian" else {})).sample()
    model = GLM(name, 2)
    svi = SVI(model, lambda x, y=None: None, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(500):
        svi.step(x, y)
    torch.testing.assert_close(model.linear.weight.detach().squeeze(0), weight, atol=0.2, rtol=0)
    torch.testing.assert_close(model.linear.bias.detach().squeeze(0), bias, atol=0.2, rtol=0)
    if name == "gaussian":
        torch.testing.assert_close(model.likelihood.scale.detach(), torch.tensor(0.3), atol=0.05, rtol=0)


@pytest.mark.parametrize(("event_dim", "plates"), [(1, ("data",)), (0, ("data", "features"))])
def test_observe_entries_scores_only_the_observed_entries_and_adds_no_site(event_dim, plates):
    """Entry-level masking inside an event: the log-likelihood is the sum over observed entries alone."""
    eta = torch.randn(4, 3)
    y = torch.bernoulli(torch.full((4, 3), 0.5))
    observed = torch.rand(4, 3) < 0.6
    y_with_holes = torch.where(observed, y, torch.nan)
    likelihood = ObservationModel("bernoulli_logit", event_dim=event_dim, plates=plates)
    trace = poutine.trace(likelihood.observe_entries).get_trace(eta, y_with_holes, observed)
    assert trace.observation_nodes == ["obs"] and "obs_unobserved" not in trace.nodes  # no latent for the holes
    expected = (torch.distributions.Bernoulli(logits=eta).log_prob(y) * observed).sum()
    torch.testing.assert_close(trace.log_prob_sum(), expected)
