"""The DLGM examples run end to end on a tiny slice of real MNIST, write their outputs, and resume."""

import json

import pytest

from tests.examples.helpers import load_example

TINY = ["--limit", "1500", "--validation", "300", "--test-limit", "40", "--iw-samples", "30", "--elbo-samples", "3"]
TINY += ["--impute-images", "20", "--impute-steps", "4", "--batch-size", "50", "--lr", "3e-3", "--no-progress"]
TINY += ["--latent-dims", "8", "--hidden-dims", "64"]


def test_dlgm_mnist_learns_writes_results_and_figures(tmp_path, mnist_root):
    example = load_example("dlgm_mnist")
    args = example.parse_args([*TINY, "--data", str(mnist_root), "--out", str(tmp_path), "--epochs", "2"])
    results = example.main(args)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["test_nll"] == pytest.approx(results["test_nll"])
    assert written["test_images"] == 40 and written["iw_samples"] == 30
    assert results["test_iw_log_likelihood"] >= results["test_elbo"] - 1.0  # IW bound is the tighter one
    assert results["test_nll"] < 260  # untrained: about 543 nats (784 log 2)
    assert [entry["epoch"] for entry in written["history"]] == [1, 2]
    assert set(written["imputation"]) == {"10%_observed", "50%_observed"}
    for name in ("samples", "latent", "imputation_10", "imputation_50", "elbo"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_dlgm_mnist_resumes_from_the_checkpoint(tmp_path, capsys, mnist_root):
    example = load_example("dlgm_mnist")
    common = [*TINY, "--data", str(mnist_root), "--out", str(tmp_path), "--no-figures", "--impute-images", "0"]
    example.main(example.parse_args([*common, "--epochs", "1"]))
    results = example.main(example.parse_args([*common, "--epochs", "2"]))
    assert "resumed from" in capsys.readouterr().out
    assert [entry["epoch"] for entry in results["history"]] == [1, 2]


def test_dlgm_mnist_refuses_bad_flags():
    example = load_example("dlgm_mnist")
    with pytest.raises(SystemExit):
        example.parse_args(["--latent-dims", "10,5", "--hidden-dims", "64"])  # one block for two layers
    with pytest.raises(SystemExit):
        example.parse_args(["--latent-dims", "0"])
    with pytest.raises(SystemExit):
        example.parse_args(["--iw-samples", "0"])


def test_model_selection_prints_a_table_and_writes_json(tmp_path, capsys, mnist_root):
    example = load_example("dlgm_model_selection")
    argv = [
        "--data",
        str(mnist_root),
        "--out",
        str(tmp_path),
        "--configs",
        "2",
        "6,3",
        "--epochs",
        "1",
        "--limit",
        "1000",
    ]
    argv += ["--test-limit", "40", "--iw-samples", "30", "--elbo-samples", "3", "--no-progress"]
    results = example.main(example.parse_args(argv))
    printed = capsys.readouterr().out
    assert "held-out ELBO" in printed and "z6-3" in printed
    written = json.loads((tmp_path / "model_selection.json").read_text())
    assert [row["name"] for row in written["models"]] == ["z2", "z6-3"]
    for row in results["models"]:
        assert row["heldout_iw_log_likelihood"] >= row["heldout_elbo"] - 1.0
    assert written["best_by_elbo"] in {"z2", "z6-3"}
    assert (tmp_path / "z2" / "latent.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(SystemExit):
        example.parse_args(["--configs", "2,0"])
