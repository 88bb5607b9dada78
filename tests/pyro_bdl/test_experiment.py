"""pyro_bdl.experiment: shared flags, data folders, environment capture, one-line errors, resume."""

from __future__ import annotations

import argparse
import json
import random
import sys

import numpy as np
import pytest
import torch

from pyro_bdl.experiment import (
    Checkpointer,
    UsageError,
    add_common_arguments,
    cpu_model,
    data_root,
    environment,
    environment_line,
    make_parser,
    run_main,
    setup,
    write_results,
)


def parser_with_everything() -> argparse.ArgumentParser:
    parser = make_parser("demo")
    add_common_arguments(parser, out="runs/demo", device="cpu")
    return parser


def test_common_flags_and_their_defaults_in_help(capsys):
    parser = parser_with_everything()
    args = parser.parse_args([])
    assert (args.data, str(args.out), args.threads, args.seed, args.device) == (None, "runs/demo", 1, 0, "cpu")
    help_text = " ".join(parser.format_help().split())
    assert "torch intra-op threads (default: 1)" in help_text and "(default: runs/demo)" in help_text


def test_data_root_takes_the_data_folder_or_the_subfolder(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    assert data_root(argparse.Namespace(data=tmp_path), "mnist") == tmp_path / "mnist"
    assert data_root(argparse.Namespace(data=tmp_path / "mnist"), "mnist") == tmp_path / "mnist"
    monkeypatch.setenv("PYRO_BDL_DATA", str(tmp_path))
    assert data_root(argparse.Namespace(data=None), "uci") == tmp_path / "uci"


def test_setup_applies_threads_and_refuses_cuda_without_it():
    threads = torch.get_num_threads()
    try:
        assert setup(argparse.Namespace(threads=1, seed=3, device="cpu")) == torch.device("cpu")
        assert torch.get_num_threads() == 1
        with pytest.raises(UsageError, match="--threads"):
            setup(argparse.Namespace(threads=0))
        if not torch.cuda.is_available():
            with pytest.raises(UsageError, match="no CUDA device"):
                setup(argparse.Namespace(device="cuda"))
    finally:
        torch.set_num_threads(threads)


def test_environment_names_the_cpu_and_the_versions():
    info = environment()
    assert info["cpu"] == cpu_model() and info["cpu"] not in ("", "unknown")
    assert info["torch"] == torch.__version__ and info["pyro"] and info["torch_threads"] >= 1
    assert info["cpu"] in environment_line(info)


def test_write_results_is_atomic_and_says_where(tmp_path, capsys):
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / ".r.json.x1.tmp").write_text("{partial")  # left by a killed write
    path = write_results(tmp_path / "deep" / "r.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert f"results written to {path}" in capsys.readouterr().out
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.parametrize("error", [UsageError("bad --x"), ValueError("bad --x"), FileNotFoundError("bad --x")])
def test_run_main_turns_expected_errors_into_one_line_and_exit_2(error, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["demo.py"])

    def main(args):
        raise error

    with pytest.raises(SystemExit) as exit_:
        run_main(main, lambda argv: None)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "demo.py: error: bad --x\n"


def test_run_main_keeps_the_traceback_of_a_bug(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["demo.py"])

    def main(args):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_main(main, lambda argv: None)


def test_checkpointer_restores_every_random_stream_and_clears_stale_temporaries(tmp_path):
    checkpointer = Checkpointer(tmp_path / "checkpoint.pt")
    assert checkpointer.load() is None
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    checkpointer.save({"epoch": 3, "weights": torch.arange(4.0)})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    stale = tmp_path / ".checkpoint.pt.abcd.tmp"
    stale.write_bytes(b"partial")
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    saved = checkpointer.load()
    assert not stale.exists()
    assert saved["epoch"] == 3 and torch.equal(saved["weights"], torch.arange(4.0))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1]) and again[2] == expected[2]


def test_checkpointer_refuses_a_checkpoint_without_random_streams(tmp_path):
    from pyro_bdl.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "c.pt", {"epoch": 1})
    with pytest.raises(ValueError, match="random-stream"):
        Checkpointer(tmp_path / "c.pt").load()


def test_print_history_writes_one_line_per_epoch_and_a_dash_without_validation(capsys):
    from pyro_bdl.experiment import print_history

    history = [
        {"epoch": 1, "train_elbo": -120.5, "validation_elbo": None, "seconds": 3.2},
        {"epoch": 2, "train_elbo": -110.25, "validation_elbo": -111.0, "seconds": 2.9},
    ]
    print_history(history, label="bayes epoch")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "bayes epoch    1  train ELBO -120.500  validation ELBO -  (3 s)",
        "bayes epoch    2  train ELBO -110.250  validation ELBO -111.000  (3 s)",
    ]
