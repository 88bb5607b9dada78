"""The UCI BNN example runs end to end on one real split with tiny flags, and resumes."""

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("PYRO_BDL_DATA", REPO.parent / "shared" / "data")) / "uci"
pytestmark = pytest.mark.skipif(
    not (DATA / "yacht" / "data.txt").exists(), reason=f"UCI data not found in {DATA} (set PYRO_BDL_DATA)"
)

TINY = ["--datasets", "yacht", "--max-splits", "1", "--min-steps", "150", "--num-samples", "20", "--no-progress"]


def load_example():
    spec = importlib.util.spec_from_file_location("bnn_uci", REPO / "examples" / "bnn_uci.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fits_one_split_and_writes_the_table(tmp_path, capsys):
    example = load_example()
    payload = example.main(example.parse_args([*TINY, "--data", str(DATA), "--out", str(tmp_path)]))
    written = json.loads((tmp_path / "results.json").read_text())
    (run,) = written["splits"]["yacht"]
    assert run["split"] == 0 and run["steps"] >= 150
    assert run["rmse"] < 4.0  # the targets' std is about 15; 150 full-batch steps already fit well
    assert math.isfinite(run["log_likelihood"]) and 0.5 <= run["coverage_95"] <= 1.0
    summary = payload["summary"]["yacht"]
    assert summary["splits_run"] == 1 and summary["splits_total"] == 20
    assert summary["rmse"] == [pytest.approx(run["rmse"]), 0.0]
    assert written["published"]["values"]["yacht"]["pbp_ll"] == [-1.634, 0.016]
    table = capsys.readouterr().out
    assert "yacht" in table and "1.015 ± 0.054" in table and "above PBP" in table and "z vs PBP" in table


def test_mc_dropout_baseline_runs(tmp_path):
    example = load_example()
    payload = example.main(
        example.parse_args([*TINY, "--data", str(DATA), "--out", str(tmp_path), "--method", "mc-dropout"])
    )
    assert payload["config"]["method"] == "mc-dropout"
    assert payload["summary"]["yacht"]["rmse"][0] < 6.0


def test_resumes_by_skipping_finished_splits(tmp_path):
    example = load_example()
    common = [*TINY, "--data", str(DATA), "--out", str(tmp_path)]
    first = example.main(example.parse_args(common))
    again = example.main(example.parse_args(common))
    assert again["splits"]["yacht"] == first["splits"]["yacht"]  # not refitted
    with pytest.raises(ValueError, match="other settings"):
        example.main(example.parse_args([*common, "--lr", "0.05"]))


def test_bad_flags_are_refused():
    example = load_example()
    for flags in (["--batch-size", "0"], ["--dropout", "1.5"], ["--max-splits", "0"], ["--method", "hmc"]):
        with pytest.raises(SystemExit):
            example.parse_args(flags)


def test_mean_and_standard_error_by_hand():
    example = load_example()
    mean, se = example.mean_and_standard_error([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and se == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3 / 4))
