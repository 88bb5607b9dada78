"""The Bayes-by-Backprop MNIST example runs end to end on a tiny slice of real MNIST, and resumes."""

import json
import math

import pytest

from tests.examples.helpers import load_example

TINY = ["--hidden", "32", "--limit", "1500", "--validation", "300", "--test-limit", "500", "--num-samples", "3"]
TINY += ["--batch-size", "100", "--lr", "3e-3", "--no-progress"]


def test_learns_and_writes_results_and_the_reliability_diagram(tmp_path, mnist_root):
    example = load_example("bnn_mnist")
    results = example.main(
        example.parse_args([*TINY, "--data", str(mnist_root), "--out", str(tmp_path), "--epochs", "2"])
    )
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["test_error"] == results["test_error"] and written["num_test"] == 500
    assert results["test_error"] < 0.6  # chance is 0.9; 24 steps on 1,200 images
    assert math.isfinite(results["test_log_likelihood"]) and results["test_log_likelihood"] < 0
    assert 0 <= results["ece"] <= 1 and sum(results["reliability_bins"]["counts"]) == 500
    entropy, information = results["predictive_entropy"], results["mutual_information"]
    assert 0 < entropy["all"] <= math.log(10) and 0 <= information["all"] <= entropy["all"]
    assert (tmp_path / "reliability.png").read_bytes().startswith(b"\x89PNG")
    assert [entry["epoch"] for entry in written["history"]] == [1, 2]


def test_resumes_from_the_checkpoint(tmp_path, mnist_root):
    example = load_example("bnn_mnist")
    common = [*TINY, "--data", str(mnist_root), "--out", str(tmp_path), "--prior", "gaussian"]
    example.main(example.parse_args([*common, "--epochs", "1"]))
    results = example.main(example.parse_args([*common, "--epochs", "2"]))
    assert [entry["epoch"] for entry in results["history"]] == [1, 2]
    assert results["history"][0]["seconds"] > 0


def test_bad_flags_are_refused():
    example = load_example("bnn_mnist")
    for flags in (["--pi", "1.0"], ["--hidden", "0"], ["--prior", "laplace"], ["--test-limit", "0"]):
        with pytest.raises(SystemExit):
            example.parse_args(flags)
