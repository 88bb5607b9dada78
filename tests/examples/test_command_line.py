"""The scripts as a user meets them: --help shows defaults, expected errors are one line and exit 2."""

from __future__ import annotations

import pytest
import torch

from tests.examples.helpers import REPO, load_script, run_script

SCRIPTS = [
    "examples/binarynet_mnist.py",
    "examples/bnn_mnist.py",
    "examples/bnn_uci.py",
    "examples/dlgm_mnist.py",
    "examples/dlgm_model_selection.py",
    "benchmarks/bench_dlgm_svi.py",
    "benchmarks/bench_binarynet_mlp.py",
    "benchmarks/bench_xnor_gemm.py",
]


def assert_one_line_error(done, *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 or lines[0].startswith("usage:"), done.stderr  # argparse adds its usage line
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_the_defaults(script, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script(script).parse_args(["--help"])
    assert exit_.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default:" in shown
    if "--threads" in shown:
        assert "torch intra-op threads (default: 1)" in shown


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("script", ["examples/binarynet_mnist.py", "benchmarks/bench_binarynet_mlp.py"])
def test_device_cuda_without_cuda_is_one_line(script, tmp_path):
    done = run_script([str(REPO / script), "--device", "cuda", "--out", str(tmp_path / "x.json")], cwd=tmp_path)
    assert_one_line_error(done, "--device cuda", "no CUDA device")


def test_a_data_folder_without_uci_sets_is_one_line(tmp_path):
    (tmp_path / "uci").mkdir()
    done = run_script([str(REPO / "examples/bnn_uci.py"), "--data", str(tmp_path)], cwd=tmp_path)
    assert_one_line_error(done, "no UCI data sets", str(tmp_path / "uci"))


def test_a_missing_mnist_folder_is_one_line(tmp_path):
    done = run_script([str(REPO / "examples/bnn_mnist.py"), "--data", str(tmp_path / "nowhere")], cwd=tmp_path)
    assert_one_line_error(done, "nowhere")


def test_too_few_benchmark_steps_is_one_line(tmp_path):
    done = run_script([str(REPO / "benchmarks/bench_dlgm_svi.py"), "--steps", "2"], cwd=tmp_path)
    assert_one_line_error(done, "--steps >= 4", "2")


def test_bad_flag_combinations_are_refused_by_the_parser(tmp_path):
    done = run_script([str(REPO / "examples/bnn_mnist.py"), "--limit", "1200", "--validation", "5000"], cwd=tmp_path)
    assert_one_line_error(done, "--validation", "5000")
    done = run_script([str(REPO / "benchmarks/bench_xnor_gemm.py"), "--out", "x.json", "--record"], cwd=tmp_path)
    assert_one_line_error(done, "not allowed with")
