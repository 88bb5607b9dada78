"""``triton-kernels``: selfcheck checks every kernel against its reference; expected errors are one line."""

import subprocess
import sys

import pytest
import torch

from triton_kernels.cli import main


def test_selfcheck_passes_reports_every_kernel_and_exits_zero(capsys):
    assert main(["selfcheck"]) == 0
    out = capsys.readouterr().out
    assert "selfcheck: all exact" in out and "MISMATCH" not in out
    assert "pixel" in out and "popcount" in out


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "triton_kernels", *arguments], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_tune_without_a_gpu_is_one_line_and_a_nonzero_exit():
    result = run_cli("tune", "1x64x64")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["triton-kernels tune: error: tuning needs a CUDA GPU, but torch sees none (device='cuda')"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_selfcheck_on_a_missing_gpu_is_one_line(capsys):
    assert main(["selfcheck", "--device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "triton-kernels selfcheck: error: --device cuda: torch sees no CUDA GPU; use --device cpu\n"


def test_bad_shape_is_a_usage_error_without_traceback():
    result = run_cli("tune", "1x64")
    assert result.returncode == 2
    assert "shape must look like MxNxK" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ([], ["selfcheck"], ["tune"]), ids=("main", "selfcheck", "tune"))
def test_help_shows_defaults(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help text wraps anywhere
    if command == ["selfcheck"]:
        assert "(default: cpu)" in out or "(default: cuda)" in out
    if command == ["tune"]:
        assert "(default: None)" in out


@pytest.mark.parametrize(
    ("path", "line"), (("auto", "CPU GEMM: compiled (numba"), ("numpy", "CPU GEMM: numpy fallback"))
)
def test_info_names_the_cpu_gemm_path(capsys, monkeypatch, path, line):
    monkeypatch.setenv("TRITON_KERNELS_CPU_GEMM", path)
    assert main(["info"]) == 0
    assert line in capsys.readouterr().out
