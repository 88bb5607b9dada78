"""The M2 example runs end to end on a tiny slice of real MNIST and writes its results and figures."""

import importlib.util
import json
import os
from pathlib import Path

import pyro
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("PYRO_BDL_DATA", REPO.parent / "shared" / "data")) / "mnist"
pytestmark = pytest.mark.skipif(
    not (DATA / "train-images-idx3-ubyte.gz").exists(), reason=f"MNIST not found in {DATA} (set PYRO_BDL_DATA)"
)
TINY = ["--limit", "2000", "--validation", "500", "--labels", "20", "--batch-size", "100", "--labelled-batch", "20"]
TINY += ["--hidden", "64", "--latent-dim", "8", "--lr", "3e-3", "--threads", "1"]


@pytest.fixture(autouse=True)
def restore_threads_and_params():
    threads = torch.get_num_threads()
    pyro.clear_param_store()
    yield
    torch.set_num_threads(threads)
    pyro.clear_param_store()


def load_example():
    spec = importlib.util.spec_from_file_location("ssvae_mnist", REPO / "examples" / "ssvae_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ssvae_learns_from_few_labels_and_writes_results(tmp_path):
    """1,500 real training images, 20 labels, 3 epochs: the classifier learns (chance is 90% error) and
    the supervised-only baseline is reported beside it. (That M2 beats it needs far longer training;
    see docs/m2.md.)"""
    example = load_example()
    args = [*TINY, "--data", str(DATA), "--out", str(tmp_path), "--epochs", "3", "--baseline"]
    results = example.main(example.parse_args(args))
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["test_error"] == pytest.approx(results["test_error"])
    assert [entry["epoch"] for entry in written["history"]] == [1, 2, 3]
    assert results["validation_error"] < 0.8  # chance is 0.9
    assert 0 < results["supervised_only"]["test_error"] < 0.9
    assert 0 <= results["test_calibration"]["ece"] <= 1
    for name in ("analogies", "class_samples"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_ssvae_resumes_to_the_same_result_as_an_uninterrupted_run(tmp_path):
    example = load_example()
    straight = example.main(example.parse_args([*TINY, "--data", str(DATA), "--out", str(tmp_path / "a"),
                                                "--epochs", "2"]))  # fmt: skip
    pyro.clear_param_store()
    example.main(example.parse_args([*TINY, "--data", str(DATA), "--out", str(tmp_path / "b"), "--epochs", "1"]))
    pyro.clear_param_store()
    resumed = example.main(example.parse_args([*TINY, "--data", str(DATA), "--out", str(tmp_path / "b"),
                                               "--epochs", "2"]))  # fmt: skip
    assert [h["validation_error"] for h in resumed["history"]] == [h["validation_error"] for h in straight["history"]]
    assert resumed["test_error"] == straight["test_error"]


def test_ssvae_refuses_bad_flag_combinations(capsys):
    example = load_example()
    with pytest.raises(SystemExit):
        example.parse_args(["--limit", "100", "--validation", "200"])
    assert "--validation (200) must be smaller than --limit (100)" in capsys.readouterr().err
