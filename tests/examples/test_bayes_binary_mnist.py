"""The Bayesian-binary vs BinaryNet MNIST example runs end to end on a tiny slice of real MNIST."""

import json
import math

import pytest
import torch

from pyro_bdl.networks.packed_ensemble import posterior_mode_convnet, recalibrate_batch_norm
from tests.examples.helpers import load_example

TINY = ["--hidden", "32", "--limit", "1500", "--validation", "300", "--test-limit", "300", "--num-samples", "3"]
TINY += ["--calibration", "300", "--epochs", "2", "--likelihood-weight", "30", "--temperature", "0.1"]
TINY += ["--natural-lr", "0.05"]  # 24 steps on 1,200 images: a cold posterior and a long step, or nothing moves
TINY += ["--no-progress"]


@pytest.mark.parametrize(("optimizer", "estimator"), [("natural", "mean"), ("natural", "relaxed"), ("adam", "relaxed")])
def test_both_methods_train_and_report(tmp_path, mnist_root, optimizer, estimator):
    example = load_example("bayes_binary_mnist")
    flags = ["--data", str(mnist_root), "--out", str(tmp_path), "--optimizer", optimizer, "--estimator", estimator]
    args = example.parse_args([*TINY, *flags])
    results = example.main(args)
    written = json.loads((tmp_path / "results.json").read_text())
    for method in ("binarynet", "bayes", "bayes_mode"):
        test = written[method]["test"]
        assert test["error"] == results[method]["test"]["error"]
        # chance is 0.9; Adam on the straight-through logits needs more than these 24 steps to move
        assert test["error"] < 0.9 or (optimizer == "adam" and method != "binarynet")
        assert math.isfinite(test["log_likelihood"]) and test["log_likelihood"] < 0 and 0 <= test["ece"] <= 1
        assert set(test["ood_auroc"]) == {"rotated", "permuted"}
        assert all(0 <= value <= 1 for scores in test["ood_auroc"].values() for value in scores.values())
    assert "mutual_information" in written["bayes"]["test"]["ood_auroc"]["rotated"]
    assert [entry["epoch"] for entry in written["bayes"]["history"]] == [1, 2]


def test_bad_flags_are_refused():
    example = load_example("bayes_binary_mnist")
    for flags in (["--natural-lr", "1.5"], ["--temperature", "0"], ["--calibration", "-1"], ["--arch", "rnn"],
                  ["--likelihood-weight", "0"], ["--prior-probs", "1"], ["--max-logit", "0"], ["--bn-lr", "-1"],
                  ["--estimator", "gumbel"], ["--particles", "0"]):  # fmt: skip
        with pytest.raises(SystemExit):
            example.parse_args(flags)


def test_conv_ensemble_members_are_packed_networks_with_their_own_batch_norms(tmp_path, mnist_root):
    """ConvNet with calibration images: S packed ConvNets in one batched ensemble; each equals its float twin
    with re-estimated norms."""
    example = load_example("bayes_binary_mnist")
    flags = ["--arch", "conv", "--width", "4", "--hidden", "16", "--epochs", "1", "--num-samples", "2"]
    args = example.parse_args([*TINY, *flags, "--data", str(mnist_root), "--out", str(tmp_path)])
    data = example.load_data(args)
    model, guide = example.bayes_model(args)
    calibration = data["train"][0][:300]
    predictor = example.BayesPredictor(args, model, guide, calibration)
    assert predictor.ensemble.num_samples == 2 and predictor.ensemble.scale_0.shape[0] == 2  # own folds
    x = data["valid"][0][:50]
    logits = predictor.logits(x, chunk=20)
    assert logits.shape == (2, 50, 10)
    layers = [layer for _, layer in example.bayesian_binary_layers(model.net)]
    second = [weight[1] for weight in guide.by_layer(predictor.draws, layers)]
    twin = recalibrate_batch_norm(posterior_mode_convnet(model.net, second), calibration)
    with torch.no_grad():
        torch.testing.assert_close(logits[1], twin(x), rtol=1e-4, atol=1e-4)


def test_particles_reach_the_elbo(tmp_path, mnist_root, monkeypatch):
    """--particles k: the ELBO averages k weight samples per step (the network runs k - 1 more times per step)."""
    example = load_example("bayes_binary_mnist")
    fit, seen = example.fit, []

    def spy(*fit_args, **kwargs):
        seen.append(kwargs["loss"].num_particles)
        return fit(*fit_args, **kwargs)

    monkeypatch.setattr(example, "fit", spy)
    calls = {}
    for particles in (1, 3):
        flags = ["--methods", "bayes", "--epochs", "1", "--limit", "600", "--particles", str(particles), "--fresh"]
        args = example.parse_args([*TINY, *flags, "--data", str(mnist_root), "--out", str(tmp_path)])
        data = example.load_data(args)
        example.pyro.clear_param_store()
        model, guide = example.bayes_model(args)
        calls[particles] = 0

        def count(*_, particles=particles):
            calls[particles] += 1

        model.net.register_forward_hook(count)
        assert len(example.train_bayes(args, data, model, guide)) == 1
    steps = math.ceil(len(data["train"][1]) / args.batch_size)
    assert seen == [1, 3]
    assert calls[3] - calls[1] == 2 * steps


def test_mixture_objective_and_validation_only_scoring(tmp_path, mnist_root, monkeypatch):
    """--objective mixture trains with MixtureLikelihood_ELBO; --no-test scores the validation images only."""
    example = load_example("bayes_binary_mnist")
    fit, losses = example.fit, []

    def spy(*fit_args, **kwargs):
        losses.append(kwargs["loss"])
        return fit(*fit_args, **kwargs)

    monkeypatch.setattr(example, "fit", spy)
    flags = ["--objective", "mixture", "--particles", "2", "--epochs", "1", "--limit", "600", "--no-test"]
    args = example.parse_args([*TINY, *flags, "--data", str(mnist_root), "--out", str(tmp_path)])
    results = example.main(args)
    assert type(losses[0]) is example.MixtureLikelihood_ELBO and losses[0].num_particles == 2
    for method in ("binarynet", "bayes", "bayes_mode"):
        assert set(results[method]) - {"history", "train_seconds", "predict_seconds"} == {"valid"}
        valid = results[method]["valid"]
        assert -1 < valid["confidence_minus_accuracy"] < 1 and valid["member_log_likelihood"] < 0
    # one network: its own log-likelihood is the ensemble's
    assert results["bayes_mode"]["valid"]["member_log_likelihood"] == pytest.approx(
        results["bayes_mode"]["valid"]["log_likelihood"], rel=1e-5
    )
