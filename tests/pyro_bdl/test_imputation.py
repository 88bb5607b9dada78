"""Missing-data imputation: exact on factor analysis with an exact guide, useful on real digits, strict on input."""

import pyro
import pytest
import torch
import torch.nn.functional as F

from pyro_bdl.data import binarize_dynamic, load_mnist, to_float
from pyro_bdl.imputation import impute
from pyro_bdl.inference.fit import fit
from pyro_bdl.models import DLGM, DLGMGuide
from pyro_bdl.models.dlgm import MIN_SCALE

pytestmark = pytest.mark.usefixtures("pyro_state")


def exact_factor_analysis(features=5):
    """FA with one factor, its guide set to the exact posterior N(s^2 w^T P (y - b), s^2), s^2 = 1 / (1 + w^T P w)."""
    model = DLGM(features, (1,), ((),), "gaussian", observation_params={"scale": torch.full((features,), 0.5)})
    guide = DLGMGuide.for_model(model)
    w, b = torch.randn(features), torch.randn(features)
    precision = 1.0 / model.likelihood.scale.detach() ** 2  # P = Psi^-1, diagonal
    variance = 1.0 / (1.0 + (w * precision * w).sum())
    gain = variance * w * precision  # (features,)
    with torch.no_grad():
        model.decoder[0].weight.copy_(w[:, None])
        model.decoder[0].bias.copy_(b)
        head = guide.heads[0].net[0]  # Linear(features -> 2): [loc, raw scale]
        head.weight.copy_(torch.stack([gain, torch.zeros(features)]))
        std = variance.sqrt() - MIN_SCALE
        head.bias.copy_(torch.stack([-(gain * b).sum(), std + torch.log(-torch.expm1(-std))]))  # softplus^-1
    covariance = torch.outer(w, w) + torch.diag(model.likelihood.scale.detach() ** 2)
    return model, guide, b, covariance


def test_chain_matches_the_exact_conditional_mean_of_factor_analysis():
    """With the exact posterior as guide the chain is a Gibbs sampler of p(z, y_miss | y_obs)."""
    model, guide, b, covariance = exact_factor_analysis()
    y = torch.distributions.MultivariateNormal(b, covariance).sample((20,))
    mask = torch.rand(20, 5) < 0.5
    mask[:, 0] = True  # every row observes something
    chains = 100  # independent chains per row, run side by side as extra rows
    result = impute(model, guide, y.repeat(chains, 1), mask.repeat(chains, 1), num_steps=200, burn_in=50)
    chain_mean = result.mean.reshape(chains, 20, 5).mean(0)
    for n in range(len(y)):
        obs, miss = mask[n], ~mask[n]
        if not miss.any():
            continue
        gain = covariance[miss][:, obs] @ torch.linalg.inv(covariance[obs][:, obs])
        expected = b[miss] + gain @ (y[n, obs] - b[obs])
        torch.testing.assert_close(chain_mean[n, miss], expected, atol=0.06, rtol=0)
    y, mask = y.repeat(chains, 1), mask.repeat(chains, 1)
    assert torch.equal(result.mean[mask], y[mask])
    assert torch.equal(result.sample[mask], y[mask])


def test_imputation_beats_the_pixel_mean_on_real_digits_with_half_the_pixels_observed(mnist_root):
    root = mnist_root
    train = to_float(load_mnist(root, "train", limit=2000).images, flatten=True)
    test = to_float(load_mnist(root, "test", limit=200).images, flatten=True)
    test = torch.bernoulli(test, generator=torch.Generator().manual_seed(1))
    model = DLGM(784, (10,), ((200,),))
    guide = DLGMGuide.for_model(model)
    fit(model, guide, train, optim=pyro.optim.Adam({"lr": 3e-3}), epochs=4, batch_size=50,
        transform_batch=lambda batch: (binarize_dynamic(batch),), progress=False)  # fmt: skip
    mask = torch.rand(test.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    result = impute(model, guide, test, mask, num_steps=20, burn_in=5)
    missing = ~mask
    dlgm_error = F.mse_loss(result.mean[missing], test[missing])
    baseline_error = F.mse_loss(train.mean(0).expand_as(test)[missing], test[missing])
    assert dlgm_error < 0.85 * baseline_error  # about 0.74 with these settings
    assert set(result.sample[missing].unique().tolist()) <= {0.0, 1.0}


def test_bad_input_is_refused():
    model = DLGM(4, (1,), ((),), "gaussian")
    guide = DLGMGuide.for_model(model)
    y, mask = torch.randn(3, 4), torch.rand(3, 4) < 0.5
    with pytest.raises(ValueError, match="obs_mask must have the shape of x"):
        impute(model, guide, y, mask[:, :3])
    with pytest.raises(TypeError, match="obs_mask must be a bool tensor"):
        impute(model, guide, y, mask.float())
    with pytest.raises(ValueError, match="x must not contain NaN at observed entries"):
        impute(model, guide, torch.where(mask, torch.nan, y), mask)
    with pytest.raises(ValueError, match="burn_in"):
        impute(model, guide, y, mask, num_steps=5, burn_in=5)
    with pytest.raises(ValueError, match="num_steps"):
        impute(model, guide, y, mask, num_steps=0)
    with pytest.raises(ValueError, match="init"):
        impute(model, guide, y, mask, init="median")
    result = impute(model, guide, torch.where(mask, y, torch.nan), mask, num_steps=3, burn_in=1)  # NaN where missing
    assert torch.isfinite(result.mean).all()
