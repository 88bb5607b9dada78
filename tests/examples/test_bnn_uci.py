"""The UCI BNN example runs end to end on one real split with tiny flags, and resumes."""

import json
import math

import pytest

from pyro_bdl.experiment import UsageError
from tests.examples.helpers import load_example

TINY = ["--datasets", "yacht", "--max-splits", "1", "--min-steps", "150", "--num-samples", "20", "--no-progress"]


def test_fits_one_split_and_writes_the_table(tmp_path, capsys, uci_root):
    example = load_example("bnn_uci")
    payload = example.main(example.parse_args([*TINY, "--data", str(uci_root), "--out", str(tmp_path)]))
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
    assert "yacht" in table and "1.015 ± 0.054" in table and "above PBP" in table and "z PBP" in table
    assert "-1.250 ± 0.010" in table and "2018 MC dropout" in table  # the grid-search rerun, the stronger baseline
    assert written["published"]["values"]["yacht"]["dropout_2018_ll"] == [-1.25, 0.01]
    assert written["environment"]["cpu"] and written["environment"]["torch_threads"] >= 1
    assert f"results written to {tmp_path / 'results.json'}" in table


def test_mc_dropout_baseline_runs(tmp_path, uci_root):
    example = load_example("bnn_uci")
    payload = example.main(
        example.parse_args([*TINY, "--data", str(uci_root), "--out", str(tmp_path), "--method", "mc-dropout"])
    )
    assert payload["config"]["method"] == "mc-dropout"
    assert payload["summary"]["yacht"]["rmse"][0] < 6.0


def test_resumes_by_skipping_finished_splits(tmp_path, uci_root):
    example = load_example("bnn_uci")
    common = [*TINY, "--data", str(uci_root), "--out", str(tmp_path)]
    first = example.main(example.parse_args(common))
    again = example.main(example.parse_args(common))
    assert again["splits"]["yacht"] == first["splits"]["yacht"]  # not refitted
    with pytest.raises(UsageError, match="other settings"):
        example.main(example.parse_args([*common, "--lr", "0.05"]))


def test_bad_flags_are_refused():
    example = load_example("bnn_uci")
    for flags in (["--batch-size", "0"], ["--dropout", "1.5"], ["--max-splits", "0"], ["--method", "hmc"]):
        with pytest.raises(SystemExit):
            example.parse_args(flags)


def test_mean_and_standard_error_by_hand():
    example = load_example("bnn_uci")
    mean, se = example.mean_and_standard_error([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and se == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3 / 4))


TWO_SETTINGS = {
    "gamma(1,0.1)": {"noise_prior": (1.0, 0.1), "lr": 1e-2, "min_steps": 60},
    "gamma(6,6)": {"noise_prior": (6.0, 6.0), "lr": 1e-2, "min_steps": 60},
}


def test_selection_uses_validation_rows_of_the_training_split_only(tmp_path, uci_root, monkeypatch):
    example = load_example("bnn_uci")
    monkeypatch.setattr(example, "GRID", TWO_SETTINGS)
    seen = []
    real_run_split = example.run_split

    def recording_run_split(args, split):
        seen.append((split.x_train.shape[0], split.x_test.shape[0], tuple(args.noise_prior)))
        return real_run_split(args, split)

    monkeypatch.setattr(example, "run_split", recording_run_split)
    argv = [*TINY, "--data", str(uci_root), "--out", str(tmp_path), "--select-on-validation", "--selection-splits", "2"]
    payload = example.main(example.parse_args(argv))
    data = example.load_uci_dataset(uci_root, "yacht")
    train_rows = [data.train_indices[k].numel() for k in (0, 1)]
    held_out = [round(0.2 * n) for n in train_rows]
    # 2 splits x 2 settings on (80%, 20%) of the training rows, then one fit on split 0's real partition
    expected_validation = {(n - h, h) for n, h in zip(train_rows, held_out, strict=True)}
    assert {(a, b) for a, b, _ in seen[:4]} == expected_validation and len(seen) == 5
    assert seen[4][:2] == (train_rows[0], data.test_indices[0].numel())
    record = payload["selection"]["yacht"]
    means = record["mean_validation_log_likelihood"]
    assert record["chosen"] == max(means, key=means.get)
    assert seen[4][2] == TWO_SETTINGS[record["chosen"]]["noise_prior"]
    assert payload["config"]["selection"]["splits"] == 2
    seen.clear()
    example.main(example.parse_args(argv))  # resumed: nothing refitted
    assert seen == []


def test_a_folder_without_uci_sets_is_an_error(tmp_path):
    example = load_example("bnn_uci")
    (tmp_path / "uci").mkdir()
    with pytest.raises(UsageError, match="no UCI data sets"):
        example.main(example.parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "out")]))
