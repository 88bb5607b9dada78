"""The Bayesian-binary vs BinaryNet MNIST example runs end to end on a tiny slice of real MNIST."""

import json
import math

import pytest

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
                  ["--estimator", "gumbel"]):  # fmt: skip
        with pytest.raises(SystemExit):
            example.parse_args(flags)
