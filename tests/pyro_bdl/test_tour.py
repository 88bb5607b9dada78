"""The tour: its embedded data, one quick run end to end (shared by the checks), the report and the command line."""

from __future__ import annotations

import argparse
import base64
import fnmatch
import html
import json
import math
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_bdl.tour import PENDING, SECTIONS, add_tour_arguments, load_sample, main, run_tour
from pyro_bdl.tour.build_sample import main as build_sample_main
from pyro_bdl.tour.data import ATTRIBUTION_FILE, MNIST_FILE, SAMPLE_FOLDER, UCI_FILE, sample_file
from pyro_bdl.tour.report import format_value

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_tour(tmp_path_factory) -> Path:
    """One quick tour for every check below: the folder holding report.md, report.json and the figures."""
    out = tmp_path_factory.mktemp("tour")
    report = run_tour(out, quick=True, seed=0, progress=False)
    assert report == out / "report.md"
    return out


@pytest.fixture(scope="module")
def report(quick_tour: Path) -> dict:
    return json.loads((quick_tour / "report.json").read_text())


def test_embedded_sample_has_the_documented_shapes_and_balanced_labels():
    data = load_sample()
    assert data.train.images.shape == (3000, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (1000, 28, 28) and data.test.images.dtype == torch.uint8
    assert data.train.labels.dtype == torch.int64
    assert data.train.labels.bincount(minlength=10).tolist() == [300] * 10
    assert data.test.labels.bincount(minlength=10).tolist() == [100] * 10
    assert int(data.train.images.max()) == 255 and int(data.train.images.min()) == 0
    assert data.uci.name == "yacht" and tuple(data.uci.inputs.shape) == (308, 6)
    split = data.uci.split(0)
    assert (len(split.x_train), len(split.x_test)) == (277, 31)
    train, test = set(data.uci.train_indices[0].tolist()), set(data.uci.test_indices[0].tolist())
    assert not train & test and len(train | test) == 308


def test_embedded_files_ship_with_their_licences():
    for name in (MNIST_FILE, UCI_FILE, ATTRIBUTION_FILE):
        assert sample_file(name).is_file(), name
    attribution = sample_file(ATTRIBUTION_FILE).read_text(encoding="utf-8")
    for statement in (
        "Creative Commons Attribution-Share Alike 3.0",
        "CC BY-SA 3.0",
        "LeCun",
        "CC BY 4.0",
        "Gerritsma",
    ):
        assert statement in attribution
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["pyro_bdl.tour"]
    for name in (MNIST_FILE, UCI_FILE, ATTRIBUTION_FILE):
        assert any(fnmatch.fnmatch(f"{SAMPLE_FOLDER}/{name}", pattern) for pattern in patterns), name


def test_embedded_mnist_is_under_the_size_budget():
    assert (ROOT / "pyro_bdl" / "tour" / SAMPLE_FOLDER / MNIST_FILE).stat().st_size < 1_500_000


def test_build_sample_reproduces_the_embedded_files(tmp_path):
    data = Path(os.environ.get("PYRO_BDL_DATA") or ROOT.parent / "shared" / "data")
    if not (data / "mnist").is_dir() or not (data / "uci" / "yacht").is_dir():
        pytest.skip(f"the full data sets are not at {data} (set PYRO_BDL_DATA)")
    assert build_sample_main(["--mnist", str(data / "mnist"), "--uci", str(data / "uci"), "--out", str(tmp_path)]) == 0
    for name in (MNIST_FILE, UCI_FILE):
        with np.load(tmp_path / name) as rebuilt, sample_file(name).open("rb") as handle, np.load(handle) as shipped:
            assert sorted(rebuilt.files) == sorted(shipped.files)
            for key in shipped.files:
                np.testing.assert_array_equal(rebuilt[key], shipped[key], err_msg=f"{name}: {key}")


def test_every_section_ran_and_reported_finite_numbers(report):
    assert report["tour"]["quick"] is True
    assert list(report["sections"]) == list(SECTIONS)
    for key, entry in report["sections"].items():
        assert entry["error"] is None, f"{key}: {entry['error']}"
        assert entry["numbers"], key
        assert entry["seconds"] > 0
        for name, value in entry["numbers"].items():
            if isinstance(value, float):
                assert math.isfinite(value), f"{key}.{name} = {value}"
    environment = report["environment"]
    for field in ("torch", "pyro", "triton", "device", "xnor_kernels"):
        assert environment[field]


def test_trained_models_beat_their_untrained_baselines(report):
    dlgm = report["sections"]["dlgm"]["numbers"]
    assert dlgm["test_iw_log_likelihood"] > dlgm["untrained_test_iw_log_likelihood"] + 50
    assert dlgm["test_elbo"] > dlgm["untrained_test_elbo"] + 50
    assert dlgm["test_iw_log_likelihood"] >= dlgm["test_elbo"] - 1.0  # the IW bound is the tighter one
    rbm = report["sections"]["rbm"]["numbers"]
    assert rbm["test_log_likelihood"] > rbm["base_rate_test_log_likelihood"]
    assert rbm["log_z_standard_error"] >= 0 and 1 <= rbm["ais_effective_sample_size"] <= rbm["ais_runs"]
    m2 = report["sections"]["m2"]["numbers"]
    assert m2["test_error"] < 0.9 and m2["supervised_only_test_error"] < 0.9
    bnn = report["sections"]["bnn"]["numbers"]
    assert bnn["test_rmse"] < bnn["constant_mean_test_rmse"]
    assert bnn["digits_test_error"] < 0.9 and 0 <= bnn["digits_ece"] <= 1
    assert 0 <= bnn["test_coverage_95"] <= 1
    binary = report["sections"]["binary_mlp"]["numbers"]
    assert binary["test_error"] < 0.9 and binary["packed_test_error"] < 0.9
    assert binary["packed_dense_prediction_agreement"] > 0.95
    assert binary["batch1_latency_packed_us"] > 0 and binary["batch1_latency_dense_float32_us"] > 0
    bayes = report["sections"]["bayesian_binary"]["numbers"]
    assert bayes["test_error"] < 0.5  # one epoch on 3,000 digits; chance is 0.9
    assert bayes["test_log_likelihood"] > math.log(0.1)  # better than the uniform predictive
    assert 0.5 < bayes["permuted_digits_auroc_mutual_information"] <= 1
    kernels = report["sections"]["kernels"]["numbers"]
    assert kernels["all_exact"] is True
    assert kernels["triton_kernels_ran_on_gpu"] is torch.cuda.is_available()


def test_figures_exist_as_png_and_the_markdown_embeds_them(quick_tour, report):
    markdown = (quick_tour / "report.md").read_text()
    names = set()
    for entry in report["sections"].values():
        for relative in entry["figures"]:
            path = quick_tour / relative
            assert path.stat().st_size > 1000, relative
            assert path.read_bytes()[:8] == PNG_MAGIC, relative
            assert f"]({relative})" in markdown
            names.add(Path(relative).name)
    expected = {"samples.png", "latent.png", "imputation.png", "analogies.png", "coverage.png", "reliability.png"}
    assert expected | {"filters.png"} <= names
    for entry in report["sections"].values():
        assert f"## {entry['title']}" in markdown
    for key in PENDING:
        assert f"`{key}`" in markdown and "Not in this build yet" in markdown
    assert report["pending"] == PENDING


def test_the_html_report_holds_the_numbers_text_and_figures(quick_tour, report):
    page = (quick_tour / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for key, entry in report["sections"].items():
        assert f'<h2 id="{key}">{html.escape(entry["title"])}</h2>' in page
        for name, value in entry["numbers"].items():
            assert f'<td>{html.escape(name)}</td><td class="number">{html.escape(format_value(value))}</td>' in page
        for relative in entry["figures"]:  # each figure inside the page, byte for byte
            encoded = base64.b64encode((quick_tour / relative).read_bytes()).decode("ascii")
            assert f'src="data:image/png;base64,{encoded}"' in page
    assert "<code>" in page and "<script" not in page


def test_command_line_runs_one_section_and_prints_the_report(tmp_path, capsys):
    assert main(["--quick", "--sections", "rbm", "--no-progress", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {(tmp_path / 'report.md').resolve()}" in printed
    sections = json.loads((tmp_path / "report.json").read_text())["sections"]
    assert list(sections) == ["rbm"] and sections["rbm"]["error"] is None
    assert "Not in this build yet" not in (tmp_path / "report.md").read_text()  # only for the whole tour


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--threads", "0"], "--threads"), (["--sections", "nope"], "--sections"), (["--device", "tpu"], "--device")],
)
def test_command_line_rejects_bad_options_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_command_line_says_when_there_is_no_gpu(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--device", "cuda"])
    assert stop.value.code == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_tour_arguments_plug_into_another_parser():
    parser = add_tour_arguments(argparse.ArgumentParser(prog="pyro-bdl tour"))
    args = parser.parse_args([])
    assert (args.quick, args.seed, args.device, args.sections, args.threads) == (False, 0, "auto", None, None)
    assert parser.parse_args(["--quick", "--sections", "dlgm", "rbm"]).sections == ["dlgm", "rbm"]


def test_run_tour_rejects_unknown_sections(tmp_path):
    with pytest.raises(ValueError, match="sections must be among"):
        run_tour(tmp_path, quick=True, progress=False, sections=["dlgm", "nope"])
