"""BayesBiNN's natural-gradient step on SignBernoulli logits."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO

from pyro_bdl.inference.natural_gradient import SignBernoulliNaturalGradient, natural_gradient_optim
from pyro_bdl.layers.bayes_binary import BayesianBinaryLinear
from pyro_bdl.layers.sign_bernoulli import SignBernoulli
from pyro_bdl.models.bayes_binary import BernoulliMeanFieldGuide

pytestmark = pytest.mark.usefixtures("pyro_state")


def test_without_data_the_step_contracts_the_logits_to_the_prior_by_one_minus_lr():
    """The KL's natural gradient is l - l_prior exactly: one step maps l - l0 to (1 - lr)(l - l0)."""
    layer = BayesianBinaryLinear(4, 3, prior_probs=0.7)
    guide = BernoulliMeanFieldGuide(layer, init_logit_scale=3.0)
    x = torch.randn(2, 4)
    prior, before = layer.prior_logits.clone(), guide.site_logits("weight").detach().clone()
    svi = SVI(layer, guide, natural_gradient_optim(0.1, 1e-3, beta=0.0), TraceMeanField_ELBO())
    svi.step(x)
    after = guide.site_logits("weight").detach()
    torch.testing.assert_close(after - prior, 0.9 * (before - prior))


def test_the_step_survives_confident_logits():
    """Where 1 - mu^2 underflows the step stays finite (the straight-through gradient is 0 there too)."""
    logits = torch.tensor([0.0, 30.0, 200.0], requires_grad=True)
    optimizer = SignBernoulliNaturalGradient([logits], lr=0.1, beta=0.0)
    (torch.sigmoid(logits) * torch.sigmoid(-logits)).sum().backward()
    optimizer.step()
    assert bool(torch.isfinite(logits).all())


def test_with_the_mean_estimator_the_natural_step_is_the_straight_through_gradient():
    """BayesBiNN's lambda <- lambda - alpha N g (l = 2 lambda): the step is 2 lr g for every logit, confident or not."""
    logits = torch.tensor([0.0, 3.0, -8.0, 30.0, -30.0], requires_grad=True)
    g = torch.tensor([1.0, -2.0, 0.5, 4.0, -1.0])
    optimizer = SignBernoulliNaturalGradient([logits], lr=0.1, beta=0.0)
    before = logits.detach().clone()
    (SignBernoulli(logits, estimator="mean").rsample() * g).sum().backward()
    optimizer.step()
    torch.testing.assert_close(logits.detach(), before - 0.2 * g, rtol=1e-5, atol=1e-5)


def test_max_logit_clips_the_natural_parameters_only():
    logits = torch.nn.Parameter(torch.tensor([0.0, 9.5, -9.5]))
    other = torch.nn.Parameter(torch.tensor([9.5]))
    optimizer = SignBernoulliNaturalGradient(
        [{"params": [logits]}, {"params": [other], "natural": False}], lr=0.5, beta=0.0, max_logit=10.0
    )
    (logits * torch.tensor([0.0, -100.0, 100.0])).sum().backward()
    (-100 * other).sum().backward()
    optimizer.step()
    assert logits.detach().tolist() == [0.0, 10.0, -10.0]
    assert float(other.detach()) > 9.5


def test_other_parameters_take_adam_steps():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = SignBernoulliNaturalGradient([weight], lr=0.1, natural=False)
    weight.sum().backward()
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((3,), 0.9))  # Adam's first step is lr * sign(grad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr"),
        ({"beta": 1.0}, "beta"),
        ({"lr_decay": 0.0}, "lr_decay"),
        ({"lr_decay": 2.0}, "lr_decay"),
        ({"max_logit": 0.0}, "max_logit"),
    ],
)
def test_bad_hyperparameters_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SignBernoulliNaturalGradient([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_natural_gradient_optim_routes_the_guide_logits():
    optim = natural_gradient_optim(0.01, 0.002)
    assert optim.pt_optim_args("logits.net__layers__0__weight")["natural"]
    assert not optim.pt_optim_args("net.norms.0.weight")["natural"]
    assert optim.pt_optim_args("net.norms.0.weight")["lr"] == 0.002
    pyro.clear_param_store()
