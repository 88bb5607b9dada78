"""The BinaryNet MNIST example runs end to end on real data with tiny flags, and resumes."""

import json

import pytest
import torch

from pyro_bdl.checkpoint import load_checkpoint
from tests.examples.helpers import load_example

TINY = ["--hidden", "64", "--depth", "2", "--limit", "3000", "--validation", "500", "--batch-size", "100"]
TINY += ["--dropout-in", "0", "--dropout-hidden", "0", "--no-progress", "--device", "cpu"]


def test_learns_and_writes_results(tmp_path, mnist_root):
    example = load_example("binarynet_mnist")
    results = example.main(
        example.parse_args([*TINY, "--data", str(mnist_root), "--out", str(tmp_path), "--epochs", "2"])
    )
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["test_error"] == results["test_error"]
    assert results["test_error"] < 0.35  # chance is 0.90; 2 epochs on 2,500 images
    assert results["packed_test_error"] == pytest.approx(results["test_error"], abs=0.005)
    assert [entry["epoch"] for entry in written["history"]] == [1, 2]


def test_resumes_from_the_checkpoint(tmp_path, capsys, mnist_root):
    example = load_example("binarynet_mnist")
    common = [*TINY, "--data", str(mnist_root), "--out", str(tmp_path)]
    example.main(example.parse_args([*common, "--epochs", "1"]))
    results = example.main(example.parse_args([*common, "--epochs", "2"]))
    assert "resumed from" in capsys.readouterr().out
    assert [entry["epoch"] for entry in results["history"]] == [1, 2]


def test_bad_flags_are_refused():
    example = load_example("binarynet_mnist")
    with pytest.raises(SystemExit):
        example.parse_args(["--lr-start", "1e-3", "--lr-end", "1e-2"])


def test_a_run_killed_in_epoch_two_resumes_to_the_uninterrupted_result(tmp_path, mnist_root, monkeypatch):
    """Dropout on: the resumed run must restore torch's global generator, not only the shuffling one."""
    argv = [*TINY, "--dropout-in", "0.2", "--dropout-hidden", "0.5", "--data", str(mnist_root), "--epochs", "2"]
    example = load_example("binarynet_mnist")
    whole = example.main(example.parse_args([*argv, "--out", str(tmp_path / "whole")]))

    killed = load_example("binarynet_mnist")
    real_train_epoch, calls = killed.train_epoch, []

    def dies_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill after epoch 1's checkpoint
        return real_train_epoch(*args, **kwargs)

    monkeypatch.setattr(killed, "train_epoch", dies_in_epoch_two)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        killed.main(killed.parse_args([*argv, "--out", str(out)]))
    stale = out / ".checkpoint.pt.x1y2z3.tmp"  # what a kill during a checkpoint write leaves
    stale.write_bytes(b"partial")
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    resumed = load_example("binarynet_mnist").main(example.parse_args([*argv, "--out", str(out)]))
    assert not stale.exists()
    assert resumed["history"] == whole["history"]
    assert resumed["test_error"] == whole["test_error"]
    final = [load_checkpoint(path / "checkpoint.pt")["model"] for path in (tmp_path / "whole", out)]
    assert final[0].keys() == final[1].keys()
    assert all(torch.equal(final[0][key], final[1][key]) for key in final[0])


def test_threads_flag_and_one_line_errors(tmp_path):
    example = load_example("binarynet_mnist")
    assert example.parse_args(["--threads", "2"]).threads == 2
    with pytest.raises(SystemExit):
        example.parse_args(["--threads", "0"])
    with pytest.raises(SystemExit):
        example.parse_args(["--limit", "1200", "--validation", "5000"])
    assert example.parse_args(["--limit", "1200"]).validation is None  # a sixth of --limit, chosen at load time
