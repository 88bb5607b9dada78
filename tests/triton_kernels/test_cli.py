"""``triton-kernels selfcheck``: the README's main job checks every kernel against its reference."""

from triton_kernels.cli import main


def test_selfcheck_passes_reports_every_kernel_and_exits_zero(capsys):
    assert main(["selfcheck"]) == 0
    out = capsys.readouterr().out
    assert "selfcheck: all exact" in out and "MISMATCH" not in out
    assert "pixel" in out and "popcount" in out
