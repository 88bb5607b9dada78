"""The SBN example runs end to end on a tiny slice of real MNIST, writes its results and resumes."""

import json

import pytest

from tests.examples.helpers import load_example

TINY = ["--limit", "600", "--validation", "100", "--test-limit", "20", "--iw-samples", "20", "--elbo-samples", "3"]
TINY += ["--batch-size", "50", "--latent-dims", "6", "--baseline-hidden", "8", "--no-progress"]


def test_sbn_mnist_trains_scores_and_resumes(tmp_path, capsys, mnist_root):
    example = load_example("sbn_mnist")
    common = [*TINY, "--data", str(mnist_root), "--out", str(tmp_path)]
    example.main(example.parse_args([*common, "--epochs", "1"]))
    results = example.main(example.parse_args([*common, "--epochs", "2"]))
    assert "resumed from" in capsys.readouterr().out
    written = json.loads((tmp_path / "results.json").read_text())
    assert [entry["epoch"] for entry in written["history"]] == [1, 2]
    assert written["test_nll"] == pytest.approx(results["test_nll"]) and written["iw_samples"] == 20
    assert -results["test_nll"] >= results["test_elbo"] - 1.0  # the IW bound is the tighter one
    assert results["test_nll"] < 543  # 784 log 2: a uniform model
    assert written["published_nll_nvil"] is None  # not the full protocol


@pytest.mark.parametrize(
    "argv", [["--latent-dims", "0"], ["--baseline", "vimco"], ["--baseline-beta", "1"], ["--iw-samples", "0"]]
)
def test_sbn_mnist_refuses_bad_flags(argv):
    with pytest.raises(SystemExit):
        load_example("sbn_mnist").parse_args(argv)
