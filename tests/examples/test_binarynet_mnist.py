"""The BinaryNet MNIST example runs end to end on real data with tiny flags, and resumes."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("PYRO_BDL_DATA", REPO.parent / "shared" / "data")) / "mnist"
pytestmark = pytest.mark.skipif(
    not (DATA / "train-images-idx3-ubyte.gz").exists(), reason=f"MNIST not found in {DATA} (set PYRO_BDL_DATA)"
)


def load_example():
    spec = importlib.util.spec_from_file_location("binarynet_mnist", REPO / "examples" / "binarynet_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--hidden", "64", "--depth", "2", "--limit", "3000", "--validation", "500", "--batch-size", "100"]
TINY += ["--dropout-in", "0", "--dropout-hidden", "0", "--no-progress", "--device", "cpu"]


def test_learns_and_writes_results(tmp_path):
    example = load_example()
    results = example.main(example.parse_args([*TINY, "--data", str(DATA), "--out", str(tmp_path), "--epochs", "2"]))
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["test_error"] == results["test_error"]
    assert results["test_error"] < 0.35  # chance is 0.90; 2 epochs on 2,500 images
    assert results["packed_test_error"] == pytest.approx(results["test_error"], abs=0.005)
    assert [entry["epoch"] for entry in written["history"]] == [1, 2]


def test_resumes_from_the_checkpoint(tmp_path, capsys):
    example = load_example()
    common = [*TINY, "--data", str(DATA), "--out", str(tmp_path)]
    example.main(example.parse_args([*common, "--epochs", "1"]))
    results = example.main(example.parse_args([*common, "--epochs", "2"]))
    assert "resumed from" in capsys.readouterr().out
    assert [entry["epoch"] for entry in results["history"]] == [1, 2]


def test_bad_flags_are_refused():
    example = load_example()
    with pytest.raises(SystemExit):
        example.parse_args(["--lr-start", "1e-3", "--lr-end", "1e-2"])
