"""``pyro-bdl``: every command's --help, output and exit code, and every error as one stderr line.

Downloads go to a file server on 127.0.0.1 serving the real data (no internet). The kernel
commands are ``triton_kernels.cli``'s own (tested in tests/triton_kernels/test_cli.py); here
only their mounting is checked, with the selfcheck itself replaced where it would take minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import triton_kernels.cli
from pyro_bdl.cli import COMMANDS, main
from pyro_bdl.cli import bench as bench_command
from pyro_bdl.data import load_mnist, load_uci_dataset
from pyro_bdl.data.fetch import URL_ENV, uci_names
from tests.pyro_bdl.http_mirror import mirror_site, serve

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No proxy for the loopback server, no URL overrides, no default data folder."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "PYRO_BDL_DATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in URL_ENV.values():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def site(tmp_path, mnist_root, uci_root):
    return mirror_site(tmp_path / "site", mnist=mnist_root, uci=uci_root, uci_names=["yacht"])


def run_cli(*arguments: str, cwd: Path = REPO, **environment: str) -> subprocess.CompletedProcess:
    """``python -m pyro_bdl.cli ARGS`` in a subprocess (the real exit code and stderr)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **environment}
    return subprocess.run(
        [sys.executable, "-m", "pyro_bdl.cli", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def one_error_line(stderr: str, prefix: str) -> str:
    """The single stderr line, which must start with ``prefix``; no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


# --- the parser --------------------------------------------------------------------------------


def test_the_entry_point_is_declared_beside_triton_kernels():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"pyro-bdl": "pyro_bdl.cli:main", "triton-kernels": "triton_kernels.cli:main"}


def test_every_registered_command_loads_with_arguments_and_a_run():
    for entry in COMMANDS:
        command = entry.load()
        assert callable(command.add_arguments) and callable(command.run), entry.name


MODEL_COMMANDS = ["train", "evaluate", "sample"]


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ([], ["tour", "data", "selfcheck", "info", "tune", "bench"]),
        (["tour"], ["--quick", "--sections", "--out OUT", "(default: False)"]),
        (["data"], ["fetch", "list"]),
        (["data", "fetch"], ["--to DIR", "$PYRO_BDL_DATA", "--base-url URL", "(default: False)"]),
        (["data", "list"], ["with sizes"]),
        (["selfcheck"], ["(default: cuda)" if torch.cuda.is_available() else "(default: cpu)"]),
        (["info"], ["versions"]),
        (["tune"], ["MxNxK", "(default: None)"]),
        (["bench"], ["benchmarks in", "xnor_gemm", "dlgm_svi"]),
        (["train"], ["MODEL", "examples/dlgm_mnist.py", "bayes_binary", "--help shows the model's flags"]),
        (["evaluate"], ["RUN", "--epochs, --fresh, --config are fixed by the run"]),
        (["sample"], ["--num NUM", "(default: 100)", "generative (they can sample): dlgm, m2, rbm"]),
    ],
    ids=["pyro-bdl", "tour", "data", "data-fetch", "data-list", "selfcheck", "info", "tune", "bench", *MODEL_COMMANDS],
)
def test_help_exits_zero_and_shows_the_defaults(capsys, command, shown):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"usage: pyro-bdl {' '.join(command)}".rstrip())
    for text in shown:
        assert text in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip().startswith("pyro-bdl 0.")


def test_top_level_help_imports_no_command():
    """Only the chosen command's module is imported: --help needs neither torch nor the kernels."""
    probe = (
        "import sys\nfrom pyro_bdl.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'triton_kernels', 'pyro_bdl.data') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("arguments", "prefix", "fragment"),
    [
        ((), "pyro-bdl: error:", "required: COMMAND"),
        (("frob",), "pyro-bdl: error:", "invalid choice: 'frob'"),
        (("data",), "pyro-bdl data: error:", "required: SUBCOMMAND"),
        (("data", "fetch", "cifar", "--to", "x"), "pyro-bdl data fetch: error:", "invalid choice: 'cifar'"),
        (("data", "fetch", "mnist", "--bogus"), "pyro-bdl: error:", "unrecognized arguments: --bogus"),
        (("tune", "1x64"), "pyro-bdl tune: error:", "shape must look like MxNxK"),
        (("tour", "--sections", "cifar"), "pyro-bdl tour: error:", "invalid choice: 'cifar'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_two(arguments, prefix, fragment):
    done = run_cli(*arguments)
    assert done.returncode == 2
    assert fragment in one_error_line(done.stderr, prefix)


# --- data ----------------------------------------------------------------------------------------


def test_data_list_shows_every_set_with_sizes(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist                                4   11.6 MB" in out
    for name in uci_names():
        assert f"uci {name}" in out
    assert "all                                406   24.9 MB" in out
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/<file>" in out


def test_data_fetch_mnist_then_the_loader_reads_it_and_a_second_fetch_downloads_nothing(site, tmp_path, capsys):
    with serve(site) as server:
        argv = ["data", "fetch", "mnist", "--to", str(tmp_path / "data"), "--base-url", server.url + "mnist"]
        assert main(argv) == 0
        first = capsys.readouterr().out
        assert len(server.requests) == 4
        assert main(argv) == 0
        second = capsys.readouterr().out
        assert len(server.requests) == 4
    data = (tmp_path / "data").resolve()
    assert f"mnist: 4 files (11.6 MB) in {data / 'mnist'}: 4 downloaded, 0 replaced, 0 present" in first
    assert f"read them with --data {data} or export PYRO_BDL_DATA={data}" in first
    assert "0 downloaded, 0 replaced, 4 present" in second
    assert len(load_mnist(data / "mnist", "test")) == 10000


def test_data_fetch_uci_into_pyro_bdl_data_when_to_is_not_given(site, tmp_path, monkeypatch, capsys, uci_root):
    monkeypatch.setenv("PYRO_BDL_DATA", str(tmp_path / "data"))
    with serve(site) as server:
        monkeypatch.setenv("PYRO_BDL_UCI_URL", server.url + "uci")
        assert main(["data", "fetch", "uci", "yacht"]) == 0
    assert "uci/yacht: 48 files (34 kB)" in capsys.readouterr().out
    fetched = load_uci_dataset(tmp_path / "data/uci", "yacht")
    assert torch.equal(fetched.inputs, load_uci_dataset(uci_root, "yacht").inputs)


def test_data_fetch_without_a_folder_is_one_line(capsys):
    assert main(["data", "fetch", "mnist"]) == 2
    captured = capsys.readouterr()
    expected = "pyro-bdl data fetch: error: --to DIR is required (or set PYRO_BDL_DATA to the data folder)\n"
    assert captured.err == expected


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (["mnist", "yacht"], "mnist takes no data set names, got ['yacht']"),
        (["uci"], "uci needs one or more data set names from ['bostonHousing'"),
        (["uci", "yacht", "boston"], "unknown UCI data set 'boston'; choose from ['bostonHousing'"),
    ],
)
def test_bad_names_are_one_line_and_nothing_is_downloaded(tmp_path, capsys, names, fragment):
    assert main(["data", "fetch", *names, "--to", str(tmp_path), "--base-url", "http://127.0.0.1:9/"]) == 2
    assert fragment in one_error_line(capsys.readouterr().err, "pyro-bdl data fetch: error:")
    assert not any(tmp_path.iterdir())


def test_a_corrupted_download_is_one_line_and_exit_two(site, tmp_path):
    served = site / "uci/yacht/data/data.txt"
    content = served.read_bytes()
    served.unlink()
    served.write_bytes(content[:-10])
    with serve(site) as server:
        url = server.url + "uci"
        done = run_cli("data", "fetch", "uci", "yacht", "--to", str(tmp_path / "data"), "--base-url", url)
    assert done.returncode == 2
    line = one_error_line(done.stderr, "pyro-bdl data fetch: error: checksum mismatch for uci/yacht/data.txt")
    assert "the download was discarded" in line
    assert not (tmp_path / "data/uci/yacht/data.txt").exists()
    assert not list((tmp_path / "data").rglob("*.tmp"))


def test_a_missing_file_on_the_server_is_one_line_and_exit_two(tmp_path):
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as server:
        done = run_cli("data", "fetch", "mnist", "--to", str(tmp_path / "data"), "--base-url", server.url)
    assert done.returncode == 2
    prefix = "pyro-bdl data fetch: error: could not download mnist/train-images-idx3-ubyte.gz"
    line = one_error_line(done.stderr, prefix)
    assert line.endswith("HTTP 404 File not found")


def test_a_url_that_is_not_http_is_one_line(tmp_path, capsys):
    assert main(["data", "fetch", "mnist", "--to", str(tmp_path), "--base-url", "ftp://mirror/"]) == 2
    assert "base_url must be an http:// or https:// URL" in one_error_line(capsys.readouterr().err, "pyro-bdl data")


# --- kernel commands -----------------------------------------------------------------------------


@pytest.mark.parametrize(("exact", "code"), [(True, 0), (False, 1)])
def test_selfcheck_runs_the_kernel_selfcheck_and_returns_its_verdict(monkeypatch, exact, code):
    calls = []
    monkeypatch.setattr(triton_kernels.cli, "selfcheck", lambda device: calls.append(device) or exact)
    assert main(["selfcheck", "--device", "cpu"]) == code
    assert calls == [torch.device("cpu")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_kernel_commands_that_need_a_gpu_are_one_line_without_one(capsys):
    assert main(["selfcheck", "--device", "cuda"]) == 2
    assert capsys.readouterr().err == (
        "pyro-bdl selfcheck: error: --device cuda: torch sees no CUDA GPU; use --device cpu\n"
    )
    assert main(["tune", "1x64x64"]) == 2
    assert capsys.readouterr().err == (
        "pyro-bdl tune: error: tuning needs a CUDA GPU, but torch sees none (device='cuda')\n"
    )
    assert main(["tour", "--device", "cuda", "--out", "unused"]) == 2
    assert capsys.readouterr().err == "pyro-bdl tour: error: device 'cuda': torch sees no CUDA GPU here; use 'cpu'\n"


def test_info_prints_versions_and_the_cpu_gemm(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "CPU GEMM:" in out


# --- bench ---------------------------------------------------------------------------------------


def test_bench_forwards_its_arguments_to_the_script(capfd):
    assert main(["bench", "xnor_gemm", "--help"]) == 0
    assert "usage: bench_xnor_gemm.py" in capfd.readouterr().out


def test_bench_returns_the_scripts_exit_code(capfd):
    assert main(["bench", "dlgm_svi", "--steps", "2"]) == 2
    assert "--steps >= 4" in capfd.readouterr().err


def test_an_unknown_benchmark_is_one_line(capsys):
    assert main(["bench", "nope"]) == 2
    line = one_error_line(capsys.readouterr().err, "pyro-bdl bench: error: unknown benchmark 'nope'")
    assert "'xnor_gemm'" in line


def test_bench_outside_a_source_checkout_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(bench_command, "source_checkout", lambda: None)
    assert main(["bench", "xnor_gemm"]) == 2
    line = one_error_line(capsys.readouterr().err, "pyro-bdl bench: error: benchmarks live in the source checkout")
    assert "clone the repository" in line
