"""The tutorial page's code runs: docs/tutorial.md shows only sections of docs/tutorial_code.py.

The page includes its code blocks from the script (``--8<--`` snippets), so running the
script at tiny size runs every block the page shows; a code block written into the page
directly would be untested, and the first test forbids it.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest

from pyro_bdl.data import load_uci

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "tutorial.md"
SCRIPT = REPO / "docs" / "tutorial_code.py"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SNIPPET = re.compile(r'^--8<-- "docs/tutorial_code\.py:(\w+)"$')


def test_page_code_comes_from_the_script():
    blocks = FENCE.findall(PAGE.read_text())
    python = [body for language, body in blocks if language == "python"]
    assert python, "the tutorial shows no Python"
    script = SCRIPT.read_text()
    for body in python:
        for line in body.strip().splitlines():
            match = SNIPPET.match(line.strip())
            assert match, f"a Python line in docs/tutorial.md not included from the script: {line!r}"
            section = match.group(1)
            assert f"# --8<-- [start:{section}]" in script and f"# --8<-- [end:{section}]" in script, section


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")  # arviz's LOO, shown to users
def test_tutorial_runs_and_learns(uci_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_BDL_DATA", str(uci_root.parent))
    spec = importlib.util.spec_from_file_location("tutorial_code", SCRIPT)
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    results = tutorial.main(max_epochs=8, patience=3, num_samples=100, out=tmp_path, progress=False)
    assert 1 <= results["epochs"] <= 8
    numbers = [value for value in results.values() if isinstance(value, float)]
    assert all(math.isfinite(value) for value in numbers), results
    # better than the baseline that predicts the training mean (an RMSE of 15.4 on yacht's split 0)
    split = load_uci(uci_root, "yacht", 0)
    baseline = (split.y_test_original - split.y_mean).pow(2).mean().sqrt().item()
    assert results["test_rmse"] < 0.75 * baseline, (results, baseline)
    assert results["elbo_per_datum"] <= results["iw_bound_per_datum"], results
    assert 0.0 <= results["coverage_95"] <= 1.0
    assert Path(results["figure"]).stat().st_size > 10_000


def test_getting_started_matches_the_readme():
    """The page repeats the README's two commands; they must not drift apart."""
    page = (REPO / "docs" / "getting-started.md").read_text()
    readme = (REPO / "README.md").read_text()
    commands = [line for line in page.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2, commands
    for command in commands:
        assert command in readme.splitlines(), f"not in README.md: {command}"


def test_getting_started_python_runs(mnist_root, uci_root, monkeypatch):
    """The page's Python block, run as written against the real data folders."""
    monkeypatch.setenv("PYRO_BDL_DATA", str(mnist_root.parent))
    page = (REPO / "docs" / "getting-started.md").read_text()
    (block,) = [body for language, body in FENCE.findall(page) if language == "python"]
    scope: dict = {}
    exec(compile(block, "getting-started.md", "exec"), scope)
    assert scope["train"].images.shape == (60000, 28, 28)
    assert scope["split"].x_train.shape == (277, 6)
