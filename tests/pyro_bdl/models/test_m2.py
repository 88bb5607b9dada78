"""M2: exact enumeration of unlabelled rows, the classification term, minibatch scaling, label checks."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, config_enumerate
from pyro.optim import Adam

from pyro_bdl.conventions import DATA_PLATE, LABEL_SITE, OBS_SITE
from pyro_bdl.figures.m2 import analogy_grid, class_samples_grid
from pyro_bdl.inference import scale_data_plate
from pyro_bdl.models import M2, M2Guide
from pyro_bdl.models.m2 import (
    CLASSIFICATION_SITE,
    LATENT_SITE,
    analogies,
    class_conditional_samples,
    class_scores,
    enumerated_elbo,
)

pytestmark = pytest.mark.usefixtures("pyro_state")

NUM_CLASSES, LATENT, PIXELS = 3, 2, 5


def tiny(alpha: float = 0.0, **model_kwargs) -> tuple[M2, M2Guide]:
    model = M2(PIXELS, NUM_CLASSES, LATENT, hidden_dims=(7,), **model_kwargs)
    return model, M2Guide.for_model(model, alpha=alpha)


def binary_rows(n: int, seed: int = 1) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, PIXELS), 0.4), generator=torch.Generator().manual_seed(seed))


AMORTISED_GAUSSIAN = {"observation": "gaussian", "observation_scale": "amortised"}
"""M1+M2's observation with the decoder's own scale: ``p(x | y, z) = N(mu(y, z), diag sigma(y, z)^2)``."""


def rows_for(model: M2, n: int) -> torch.Tensor:
    """Binary rows for a Bernoulli model, real ones for a Gaussian."""
    if model.likelihood.model_name == "gaussian":
        return torch.randn(n, PIXELS, generator=torch.Generator().manual_seed(1))
    return binary_rows(n)


def enumerated_loss(model, guide, *args) -> torch.Tensor:
    return enumerated_elbo().differentiable_loss(model, guide, *args)


def hand_written_elbo(model: M2, guide: M2Guide, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Kingma et al. eqs. (6)-(7) written out with the guide's z draws ``z`` (K, data, latent).

    Labelled rows: -L(x, y) at their own label (the draw of that row is the same in every one
    of the K enumerated copies). Unlabelled rows: sum_k q(k|x) (-L(x, k) - log q(k|x)).
    """
    classes = torch.arange(NUM_CLASSES).unsqueeze(-1).expand(NUM_CLASSES, x.shape[0])  # (K, data)
    labels = torch.where(y >= 0, y, classes)  # the label each enumerated copy uses
    log_p = (
        model.observation_distribution(z, labels).log_prob(x).sum(-1)
        + dist.Categorical(model.class_probs).log_prob(labels)
        + dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        - guide.latent_distribution(x, labels).log_prob(z)
    )  # (K, data): -L(x, label_k)
    log_q = guide.logits(x).log_softmax(-1).T  # (K, data)
    unlabelled = (log_q.exp() * (log_p - log_q)).sum(0)
    labelled = (log_q.exp() * log_p).sum(0)  # K copies of the same z-distribution, weighted by q
    return torch.where(y >= 0, labelled, unlabelled).sum()


def guide_draws(guide: M2Guide, *args) -> torch.Tensor:
    enumerated = poutine.enum(config_enumerate(guide, "parallel"), first_available_dim=-2)
    return poutine.trace(enumerated).get_trace(*args).nodes[LATENT_SITE]["value"]


@pytest.mark.parametrize("model_kwargs", [{}, AMORTISED_GAUSSIAN], ids=["bernoulli", "gaussian-amortised"])
@pytest.mark.parametrize("labels", [[-1, -1, -1, -1], [0, -1, 2, -1]], ids=["unlabelled", "mixed"])
def test_enumerated_elbo_equals_the_hand_written_sum_over_classes(labels, model_kwargs):
    model, guide = tiny(**model_kwargs)
    x, y = rows_for(model, 4), torch.tensor(labels)
    pyro.set_rng_seed(3)
    loss = enumerated_loss(model, guide, x, y)
    pyro.set_rng_seed(3)
    z = guide_draws(guide, x, y)
    assert z.shape == (NUM_CLASSES, 4, LATENT)
    torch.testing.assert_close(-loss, hand_written_elbo(model, guide, x, y, z), atol=1e-5, rtol=1e-5)


def test_all_labelled_batches_need_no_enumeration_and_give_the_labelled_bound():
    model, guide = tiny()
    x, y = binary_rows(4), torch.tensor([0, 1, 2, 1])
    guide_trace = poutine.trace(guide).get_trace(x, y)
    assert f"{LABEL_SITE}_unobserved" not in guide_trace.nodes
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    assert model_trace.nodes[LABEL_SITE]["is_observed"]
    pyro.set_rng_seed(4)
    loss = enumerated_loss(model, guide, x, y)
    pyro.set_rng_seed(4)
    z = poutine.trace(guide).get_trace(x, y).nodes[LATENT_SITE]["value"]
    torch.testing.assert_close(-loss, hand_written_elbo(model, guide, x, y, z.expand(NUM_CLASSES, 4, LATENT)))


def test_classification_term_adds_alpha_log_q_on_labelled_rows_in_training_mode_only():
    model, guide_plain = tiny(alpha=0.0)
    guide = M2Guide.for_model(model, alpha=2.5)
    guide.load_state_dict(guide_plain.state_dict())
    x, y = binary_rows(4), torch.tensor([0, -1, 2, -1])
    log_q = guide.logits(x).log_softmax(-1)[[0, 2], [0, 2]].sum()
    pyro.set_rng_seed(5)
    without = enumerated_loss(model, guide_plain, x, y)
    pyro.set_rng_seed(5)
    with_term = enumerated_loss(model, guide, x, y)
    torch.testing.assert_close(without - with_term, 2.5 * log_q)
    guide.eval()
    assert CLASSIFICATION_SITE not in poutine.trace(guide).get_trace(x, y).nodes
    pyro.set_rng_seed(5)
    torch.testing.assert_close(enumerated_loss(model, guide, x, y), without)


def test_every_per_datum_term_is_scaled_by_n_over_b_under_minibatching():
    model, guide = tiny(alpha=1.0)
    x, y = binary_rows(4), torch.tensor([1, -1, 0, -1])
    scaled_model, scaled_guide = scale_data_plate(model, DATA_PLATE, 25.0), scale_data_plate(guide, DATA_PLATE, 25.0)
    guide_trace = poutine.trace(scaled_guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(scaled_model, trace=guide_trace)).get_trace(x, y)
    guide_sites = [f"{LABEL_SITE}_unobserved", LATENT_SITE, CLASSIFICATION_SITE]
    model_sites = [f"{LABEL_SITE}_observed", f"{LABEL_SITE}_unobserved", LATENT_SITE, OBS_SITE]
    assert {name: guide_trace.nodes[name]["scale"] for name in guide_sites} == dict.fromkeys(guide_sites, 25.0)
    assert {name: model_trace.nodes[name]["scale"] for name in model_sites} == dict.fromkeys(model_sites, 25.0)


def test_predict_proba_and_predict():
    _, guide = tiny()
    x = binary_rows(5)
    probs = guide.predict_proba(x)
    assert probs.shape == (5, NUM_CLASSES)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
    assert torch.equal(guide.predict(x), probs.argmax(-1))


def test_sampling_from_the_model_without_data():
    model, _ = tiny()
    trace = poutine.trace(model).get_trace(num_data=7)
    assert trace.nodes[OBS_SITE]["value"].shape == (7, PIXELS)
    assert trace.nodes[LABEL_SITE]["value"].shape == (7,)
    fixed = poutine.trace(model).get_trace(y=torch.full((4,), 2))
    assert torch.equal(fixed.nodes[LABEL_SITE]["value"], torch.full((4,), 2))


def test_svi_with_enumeration_reduces_the_loss():
    model, guide = tiny(alpha=1.0)
    x = torch.cat([torch.zeros(10, PIXELS), torch.ones(10, PIXELS)])
    y = torch.tensor([0] * 2 + [-1] * 8 + [1] * 2 + [-1] * 8)
    svi = SVI(model, guide, Adam({"lr": 0.03}), enumerated_elbo())
    first = sum(svi.step(x, y) for _ in range(5)) / 5
    for _ in range(200):
        svi.step(x, y)
    last = sum(svi.step(x, y) for _ in range(5)) / 5
    assert last < first
    assert torch.equal(guide.predict(x), torch.tensor([0] * 10 + [1] * 10))


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (torch.tensor([0, 3, -1, 1]), ValueError, r"y must lie in \[0, 3\) or be -1"),
        (torch.tensor([0, -2, -1, 1]), ValueError, r"y must lie in \[0, 3\) or be -1"),
        (torch.tensor([0.0, 1.0, -1.0, 1.0]), TypeError, "y must hold integer class indices"),
        (torch.tensor([0, 1, 2]), ValueError, r"y must have shape \(4,\)"),
        ([0, 1, 2, 1], TypeError, "y must be an integer torch.Tensor"),
    ],
)
def test_bad_labels_are_refused_naming_y(labels, error, match):
    model, guide = tiny()
    with pytest.raises(error, match=match):
        model(binary_rows(4), labels)
    with pytest.raises(error, match=match):
        guide(binary_rows(4), labels)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        M2(5, num_classes=1)
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        M2Guide(5, alpha=-1.0)
    with pytest.raises(ValueError, match="categorical"):
        M2(5, observation="categorical")
    with pytest.raises(ValueError, match="observation_scale must be one of"):
        M2(5, observation="gaussian", observation_scale="fixed")
    with pytest.raises(ValueError, match="observation_scale='amortised' needs an observation with a scale"):
        M2(5, observation_scale="amortised")  # Bernoulli has no scale


def test_amortised_scale_comes_from_the_decoder_for_each_row_and_entry():
    model, _ = tiny(**AMORTISED_GAUSSIAN)
    x, y = rows_for(model, 4), torch.tensor([0, 1, 2, 0])
    trace = poutine.trace(model).get_trace(x, y)
    z = trace.nodes[LATENT_SITE]["value"]
    loc, raw_scale = model.decoder(z, y).chunk(2, dim=-1)
    observed = trace.nodes[OBS_SITE]["fn"].base_dist
    torch.testing.assert_close(observed.loc, loc)
    torch.testing.assert_close(observed.scale, torch.nn.functional.softplus(raw_scale) + 1e-4)
    assert observed.scale.shape == (4, PIXELS) and len(set(observed.scale.flatten().tolist())) > 1
    assert "likelihood.scale" not in trace.param_nodes  # the observation model's own scale is not used


def test_svi_trains_every_parameter_of_model_and_guide():
    model, guide = tiny(alpha=1.0)
    svi = SVI(model, guide, Adam({"lr": 0.01}), enumerated_elbo())
    svi.step(binary_rows(4), torch.tensor([0, -1, 2, -1]))
    trained = set(pyro.get_param_store().keys())
    expected = {name for name, _ in model.named_parameters()} | {name for name, _ in guide.named_parameters()}
    assert len(trained) == len(expected) > 0


def test_analogies_hold_the_style_and_vary_the_class(tmp_path):
    model, guide = tiny()
    x = binary_rows(3)
    grid = analogies(model, guide, x, torch.tensor([1, -1, 0]))
    assert grid.shape == (3, NUM_CLASSES, PIXELS)
    assert bool(((grid >= 0) & (grid <= 1)).all())
    style = guide.latent_distribution(x[:1], torch.tensor([1])).mean
    expected = torch.sigmoid(model.natural_parameter(style.expand(NUM_CLASSES, -1), torch.arange(NUM_CLASSES)))
    torch.testing.assert_close(grid[0], expected)
    images = torch.rand(2, 16)
    assert analogy_grid(images, torch.rand(2, NUM_CLASSES, 16), tmp_path / "a.png", side=4).stat().st_size > 0


def test_class_conditional_samples_share_the_style_across_classes(tmp_path):
    model, _ = tiny()
    samples = class_conditional_samples(model, 4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, NUM_CLASSES, PIXELS)
    assert class_samples_grid(torch.rand(2, NUM_CLASSES, 9), tmp_path / "s.png", side=3).stat().st_size > 0


def classifier_gradient(model: M2, guide: M2Guide, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list]:
    pyro.set_rng_seed(6)
    loss = enumerated_loss(model, guide, x, y)
    return loss.detach(), torch.autograd.grad(loss, list(guide.classifier.parameters()), allow_unused=True)


def test_unlabelled_term_trains_the_classifier_unless_switched_off():
    """Eq. (7)'s sum over classes must reach q(y|x) (weights and entropy); switched off, the value stays and
    the classifier's gradient is the classification term's alone."""
    model, guide = tiny(alpha=2.0)
    x = binary_rows(4)
    unlabelled, mixed = torch.full((4,), -1), torch.tensor([0, -1, 2, -1])
    loss_on, grads_on = classifier_gradient(model, guide, x, unlabelled)
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads_on)
    guide.unlabelled_trains_classifier = False
    loss_off, grads_off = classifier_gradient(model, guide, x, unlabelled)
    torch.testing.assert_close(loss_off, loss_on)
    assert all(g is None or float(g.abs().sum()) == 0 for g in grads_off)
    _, mixed_off = classifier_gradient(model, guide, x, mixed)
    term = -2.0 * guide.logits(x).log_softmax(-1)[[0, 2], [0, 2]].sum()
    expected = torch.autograd.grad(term, list(guide.classifier.parameters()))
    for got, want in zip(mixed_off, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("model_kwargs", [{}, AMORTISED_GAUSSIAN], ids=["bernoulli", "gaussian-amortised"])
def test_class_scores_are_the_labelled_bound_at_the_mean_style(model_kwargs):
    model, guide = tiny(**model_kwargs)
    x = rows_for(model, 4)
    scores = class_scores(model, guide, x)
    assert scores.shape == (4, NUM_CLASSES)
    for k in range(NUM_CLASSES):
        label = torch.full((4,), k)
        posterior = guide.latent_distribution(x, label)
        z = posterior.mean
        expected = (
            model.observation_distribution(z, label).log_prob(x).sum(-1)
            + dist.Categorical(model.class_probs).log_prob(label)
            + dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
            - posterior.log_prob(z)
        )
        torch.testing.assert_close(scores[:, k], expected.detach())


def test_init_scale_draws_small_weights_and_zero_biases():
    model = M2(PIXELS, NUM_CLASSES, LATENT, hidden_dims=(7,), init_scale=1e-3)
    guide = M2Guide.for_model(model, init_scale=1e-3)
    for name, value in [*model.named_parameters(), *guide.named_parameters()]:
        largest = float(value.detach().abs().max())
        assert largest == 0.0 if name.endswith("bias") else 0 < largest < 1e-2, name
    default = M2(PIXELS, NUM_CLASSES, LATENT, hidden_dims=(7,))
    assert float(default.decoder.input_layer.weight.detach().abs().max()) > 1e-2
    with pytest.raises(ValueError, match="init_scale must be a number > 0"):
        M2(PIXELS, init_scale=0.0)


def test_init_layers_hidden_keeps_each_output_layer_at_the_default():
    model = M2(PIXELS, NUM_CLASSES, LATENT, hidden_dims=(7,), init_scale=1e-3, init_layers="hidden")
    guide = M2Guide.for_model(model, init_scale=1e-3, init_layers="hidden")
    outputs = [model.decoder.rest[-1], guide.classifier[-1], guide.encoder.rest[-1]]
    hidden = [model.decoder.input_layer, model.decoder.label_embedding, guide.classifier[0],
              guide.encoder.input_layer, guide.encoder.label_embedding]  # fmt: skip
    for layer in hidden:
        for value in layer.parameters():
            assert 0 < float(value.detach().abs().max()) < 1e-2, layer
    for layer in outputs:
        assert float(layer.weight.detach().abs().max()) > 1e-2, layer
    with pytest.raises(ValueError, match="init_layers must be one of"):
        M2(PIXELS, init_scale=1e-3, init_layers="output")
