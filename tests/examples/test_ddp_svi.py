"""examples/ddp_svi.py: a bad launch is one line on stderr and exit code 2.

The 2-process run itself is the documented ``--processes 2`` command, run at tiny size by
``test_documented_commands.py`` (it re-runs the script under ``python -m torch.distributed.run``).
"""

from __future__ import annotations

import pytest

from tests.examples.helpers import REPO, run_script

SCRIPT = "examples/ddp_svi.py"
TINY = ["--limit", "600", "--epochs", "1", "--latent-dim", "4", "--hidden-dim", "16", "--no-progress"]


@pytest.mark.parametrize(
    ("environment", "argv", "message"),
    [
        ({"RANK": "0"}, [], "incomplete torch.distributed launch: RANK set but WORLD_SIZE, MASTER_ADDR, MASTER_PORT"),
        ({"RANK": "3", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, [], "RANK must lie in"),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
            ["--processes", "2"],
            "--processes starts its own processes; under torchrun leave it out",
        ),
        ({}, ["--processes", "2", "--batch-size", "5"], "--batch-size must be a multiple of --processes 2, got 5"),
    ],
)
def test_a_bad_launch_is_one_line(environment, argv, message, tmp_path, mnist_root):
    done = run_script([SCRIPT, *TINY, *argv, "--data", str(mnist_root), "--out", str(tmp_path)], cwd=REPO,
                      **environment)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("ddp_svi.py: error:") and "Traceback" not in done.stderr
