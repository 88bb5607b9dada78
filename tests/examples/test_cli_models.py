"""``pyro-bdl train | evaluate | sample MODEL`` at tiny size on the package's MNIST sample, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyro_bdl.cli import main
from pyro_bdl.cli.models import MODELS

TINY = {
    "dlgm": "--limit 600 --validation 100 --test-limit 20 --iw-samples 10 --elbo-samples 2 --impute-images 0 "
    "--latent-dims 4 --hidden-dims 16 --batch-size 50",
    "m2": "--limit 600 --validation 100 --labels 20 --labelled-batch 20 --batch-size 100 --hidden 16 --latent-dim 4",
    "bnn": "--limit 600 --validation 100 --hidden 16 --test-limit 100 --num-samples 2 --batch-size 100",
    "rbm": "--limit 600 --test-limit 100 --hidden 16 --ais-betas 100 --ais-runs 10 --no-ais-check",
    "binarynet": "--limit 600 --validation 100 --hidden 32 --depth 1 --batch-size 100 --device cpu",
    "bayes_binary": "--limit 600 --validation 100 --hidden 16 --test-limit 100 --num-samples 2 --calibration 100 "
    "--methods bayes",
}
QUIET = {"rbm": ["--no-progress", "--no-figures"], "m2": [], "binarynet": ["--no-progress"]}
"""The flags that turn off progress bars and figures, where a script has them."""


def quiet(model: str) -> list[str]:
    return QUIET.get(model, ["--no-progress", "--no-figures"] if model == "dlgm" else ["--no-progress"])


def train(model: str, out, *extra: str) -> dict:
    argv = ["train", model, "--sample-data", "--threads", "1", "--epochs", "1", *TINY[model].split(), *quiet(model)]
    assert main([*argv, "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("model", [name for name in MODELS if name not in ("dlgm", "bnn")])
def test_train_each_model_on_the_sample(model, tmp_path):
    results = train(model, tmp_path)
    checkpoint = "bayes_checkpoint.pt" if model == "bayes_binary" else "checkpoint.pt"
    assert (tmp_path / checkpoint).is_file()
    assert results.get("config", results.get("settings"))["sample_data"] is True


def test_dlgm_from_a_toml_config_then_evaluate_and_sample(tmp_path, capsys):
    config = tmp_path / "run.toml"
    words = TINY["dlgm"].split()
    lines = [f"{flag[2:]} = {value}" for flag, value in zip(words[::2], words[1::2], strict=True) if "dims" not in flag]
    lines += ["latent-dims = [4]", "hidden-dims = [[16]]", "sample-data = true", "epochs = 3", "no-figures = true"]
    config.write_text("\n".join([*lines, "no-progress = true", "threads = 1"]) + "\n")
    out = tmp_path / "run"
    assert main(["train", "dlgm", "--config", str(config), "--epochs", "1", "--out", str(out)]) == 0  # flag wins
    trained = json.loads((out / "results.json").read_text())
    assert trained["epochs_trained"] == 1 and trained["architecture"]["latent_dims"] == [4]
    assert main(["evaluate", "dlgm", str(out)]) == 0
    evaluated = json.loads((out / "evaluation" / "results.json").read_text())
    assert evaluated["epochs_trained"] == 1  # nothing more was trained
    assert evaluated["test_iw_log_likelihood"] == pytest.approx(trained["test_iw_log_likelihood"], abs=1e-6)
    assert main(["sample", "dlgm", str(out), "--num", "20", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    means = np.load(tmp_path / "s.npy")
    assert means.shape == (20, 784) and means.min() >= 0 and means.max() <= 1
    assert "samples:" in capsys.readouterr().out
    assert main(["train", "dlgm", "--config", str(config), "--epochs", "2", "--out", str(out)]) == 0  # resumes
    assert f"resumed from {out / 'checkpoint.pt'}" in capsys.readouterr().out
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["epochs_trained"] == 2 and resumed["history"][0] == trained["history"][0]


def test_sample_m2_and_rbm_and_refuse_a_classifier(tmp_path, capsys):
    for model in ("m2", "rbm"):
        train(model, tmp_path / model)
        assert main(["sample", model, str(tmp_path / model), "--num", "20"]) == 0
        means = np.load(tmp_path / model / "samples_cli.npy")
        assert means.shape == ((2, 10, 784) if model == "m2" else (20, 784))
    train("bnn", tmp_path / "bnn")
    capsys.readouterr()
    assert main(["sample", "bnn", str(tmp_path / "bnn")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "classifier" in error and "pyro-bdl evaluate bnn" in error
    assert main(["evaluate", "bnn", str(tmp_path / "bnn"), "--test-limit", "50"]) == 0
    evaluated = json.loads((tmp_path / "bnn" / "evaluation" / "results.json").read_text())
    assert evaluated["epochs"] == 1 and evaluated["config"]["test_limit"] == 50 and 0 <= evaluated["test_error"] <= 1
    assert "on 50 test images after 1 epochs" in capsys.readouterr().out


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "vae"])
    assert exit_.value.code == 2
    assert "invalid choice: 'vae'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochs": 1, "epoch": 2}))
    with pytest.raises(SystemExit) as exit_:
        main(["train", "dlgm", "--config", str(bad)])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "unknown key(s) ['epoch']" in error and "epochs" in error
    bad.write_text(json.dumps({"epochs": 1.5}))
    with pytest.raises(SystemExit) as exit_:
        main(["train", "dlgm", "--config", str(bad)])
    assert exit_.value.code == 2 and "invalid int value: '1.5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "dlgm", "--config", str(tmp_path / "missing.toml")])
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    for command in ("evaluate", "sample"):
        assert main([command, "dlgm", str(tmp_path / "empty")]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "no checkpoint checkpoint.pt" in error and "pyro-bdl train dlgm" in error
    assert main(["evaluate", "dlgm", str(tmp_path / "empty"), "--epochs", "3"]) == 2
    assert "--epochs is fixed by the run" in capsys.readouterr().err
    (tmp_path / "empty" / "checkpoint.pt").write_bytes(b"not a torch file")
    assert main(["evaluate", "dlgm", str(tmp_path / "empty")]) == 2
    assert "no results.json, so training has not finished" in capsys.readouterr().err
    (tmp_path / "empty" / "results.json").write_text(json.dumps({"config": {"epochs": 1}}))
    assert main(["evaluate", "dlgm", str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "not a readable weights-only checkpoint" in error


def test_help_of_a_model_shows_its_flags_and_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "rbm", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: pyro-bdl train rbm") and "--config FILE" in text and "(default: 500)" in text
