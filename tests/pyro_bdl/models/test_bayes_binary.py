"""The Bayesian binary model with the package's inference, diagnostics and evaluation tools."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import Predictive, TraceMeanField_ELBO

from pyro_bdl.bnn import BNNClassifier
from pyro_bdl.data import permute_pixels, rotate_images
from pyro_bdl.diagnostics import psis_khat, to_inference_data
from pyro_bdl.evaluation import auroc, bald_decomposition, expected_calibration_error, mean_probabilities
from pyro_bdl.inference.fit import fit
from pyro_bdl.models.bayes_binary import BayesBinaryMLP, BernoulliMeanFieldGuide

pytestmark = pytest.mark.usefixtures("pyro_state")


@pytest.fixture
def fitted():
    """A small Bayesian binary MLP fitted with ``fit`` on a separable 3-class problem."""
    x = torch.randn(2000, 10)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    model = BNNClassifier(BayesBinaryMLP(10, 64, 1, 3), num_classes=3)
    guide = BernoulliMeanFieldGuide(model, temperature=0.5, init_logit_scale=3.0)
    result = fit(model, guide, (x, y), optim=pyro.optim.Adam({"lr": 0.1}), loss=TraceMeanField_ELBO(),
                 epochs=15, batch_size=200, progress=False)  # fmt: skip
    return model.eval(), guide, x, y, result


def test_fit_improves_the_elbo_and_predicts(fitted):
    model, guide, x, y, result = fitted
    elbos = [entry["train_elbo"] for entry in result.history]
    assert elbos[-1] > elbos[0]
    logits = Predictive(model, guide=guide, num_samples=16, parallel=True, return_sites=("logits",))(x)["logits"]
    probs = mean_probabilities(logits.softmax(-1))
    assert float((probs.argmax(-1) == y).float().mean()) > 0.7
    assert 0 <= expected_calibration_error(probs, y) <= 1
    total, aleatoric, epistemic = bald_decomposition(logits.softmax(-1))
    assert bool((epistemic >= 0).all()) and bool((epistemic > 0).any())
    torch.testing.assert_close(total, aleatoric + epistemic, atol=1e-5, rtol=0)


def test_inference_data_with_pointwise_log_likelihood_and_psis(fitted):
    model, guide, x, y, _ = fitted
    data = to_inference_data(guide, model, (x[:40], y[:40]), num_samples=120, posterior_predictive=False)
    log_likelihood = data.log_likelihood["obs"]
    assert log_likelihood.shape == (1, 120, 40)
    assert bool(torch.isfinite(torch.as_tensor(log_likelihood.values)).all())
    assert set(data.posterior.data_vars) >= {"net.layers.0.weight", "net.layers.1.weight"}
    diagnostic = psis_khat(-torch.as_tensor(log_likelihood.values[0]))  # PSIS-LOO ratios 1 / p(y_n | W_s)
    assert diagnostic.khat.shape == (40,) and bool(torch.isfinite(torch.as_tensor(diagnostic.khat)).all())


def test_auroc_matches_pairwise_counting():
    inside, outside = torch.randn(50), torch.randn(30) + 0.7
    outside[:4] = inside[:4]  # ties count one half
    pairs = (outside[None, :] > inside[:, None]).double() + 0.5 * (outside[None, :] == inside[:, None]).double()
    assert auroc(inside, outside) == pytest.approx(float(pairs.mean()))
    with pytest.raises(ValueError, match="in_scores"):
        auroc(torch.zeros(0), torch.zeros(3))


def test_shifted_images_are_reproducible():
    images = torch.arange(2 * 4 * 4, dtype=torch.uint8).reshape(2, 4, 4)
    assert torch.equal(rotate_images(rotate_images(images, 1), 3), images)
    permuted = permute_pixels(images, seed=3)
    assert torch.equal(permuted, permute_pixels(images, seed=3))
    assert torch.equal(permuted.flatten(1).sort(1).values, images.flatten(1).sort(1).values)
    with pytest.raises(ValueError, match="quarter_turns"):
        rotate_images(images, 4)
    with pytest.raises(ValueError, match="images"):
        permute_pixels(images[0])
