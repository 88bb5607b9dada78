"""The tour's embedded data: a class-balanced MNIST sample and the UCI yacht set, shipped in the package.

``pyro_bdl/tour/sample_data/`` holds (see ``ATTRIBUTION.md`` there for licences and provenance):

* ``mnist_sample.npz``: 3,000 training digits (300 per class, from the 60,000 MNIST training
  images) and 1,000 test digits (100 per class, from the 10,000 test images), chosen by a
  seeded permutation; ``train_images`` (3000, 28, 28) uint8, ``train_labels`` (3000,) uint8,
  ``test_images`` (1000, 28, 28) uint8, ``test_labels`` (1000,) uint8, and ``train_index`` /
  ``test_index``, the rows in the original files.
* ``uci_yacht.npz``: the 308 rows of Yacht Hydrodynamics, ``inputs`` (308, 6) and ``targets``
  (308,) float64, with split 0 of the standard splits (``train_index``, ``test_index``) and the
  protocol's ``n_hidden`` and ``n_epochs``.

:func:`load_sample` reads them through :mod:`importlib.resources` (no path, no download);
:func:`sample_mnist_folder` writes the digits as the four IDX files (a temporary folder), which every
example reads with ``--sample-data``; :func:`build_sample` rebuilds them from the full data sets
(``python -m pyro_bdl.tour.build_sample``).
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from pyro_bdl.data import MNIST, UCIDataset, load_mnist, load_uci_dataset
from pyro_bdl.data.mnist import IMAGE_MAGIC, LABEL_MAGIC, SPLIT_FILES
from pyro_bdl.validation import check_int
from triton_kernels.files import atomic_write

SAMPLE_PACKAGE = "pyro_bdl.tour"
SAMPLE_FOLDER = "sample_data"
MNIST_FILE = "mnist_sample.npz"
UCI_FILE = "uci_yacht.npz"
ATTRIBUTION_FILE = "ATTRIBUTION.md"
UCI_NAME = "yacht"
UCI_SPLIT = 0
TRAIN_PER_CLASS = 300
TEST_PER_CLASS = 100
SAMPLE_SEED = 20140101
"""Seed of the permutation that picks the digits (any fixed value; this one is documented)."""


@dataclass(frozen=True, eq=False)
class TourData:
    """The tour's data: MNIST digits (uint8 images, int64 labels) and one UCI regression set.

    Attributes:
        train: 3,000 training digits, images (3000, 28, 28) uint8, labels (3000,) int64.
        test: 1,000 test digits, images (1000, 28, 28), labels (1000,).
        uci: the yacht set with one split (``uci.split(0)`` normalises it).
    """

    train: MNIST
    test: MNIST
    uci: UCIDataset


def sample_file(name: str):
    """A :mod:`importlib.resources` handle of one embedded file (works from a wheel or a checkout)."""
    return resources.files(SAMPLE_PACKAGE).joinpath(SAMPLE_FOLDER, name)


def load_sample() -> TourData:
    """The embedded MNIST sample and UCI yacht split as a :class:`TourData`."""
    with sample_file(MNIST_FILE).open("rb") as handle, np.load(handle) as arrays:
        train = MNIST(torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"]).long())
        test = MNIST(torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"]).long())
    with sample_file(UCI_FILE).open("rb") as handle, np.load(handle) as arrays:
        uci = UCIDataset(
            name=UCI_NAME,
            inputs=torch.from_numpy(arrays["inputs"]),
            targets=torch.from_numpy(arrays["targets"]),
            train_indices=(torch.from_numpy(arrays["train_index"]),),
            test_indices=(torch.from_numpy(arrays["test_index"]),),
            n_hidden=int(arrays["n_hidden"]),
            n_epochs=int(arrays["n_epochs"]),
        )
    return TourData(train=train, test=test, uci=uci)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: big-endian magic, then each dimension, then the uint8 values."""
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def sample_mnist_folder(root: str | os.PathLike[str] | None = None) -> Path:
    """The embedded MNIST sample as the four uncompressed IDX files that :func:`~pyro_bdl.data.load_mnist` reads.

    Written once into ``root`` (default: ``<tempdir>/pyro-bdl-sample-<hash of the sample>/mnist``),
    each file atomically, so concurrent runs share it; returns the folder.
    """
    source = sample_file(MNIST_FILE)
    if root is None:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        root = Path(tempfile.gettempdir()) / f"pyro-bdl-sample-{digest}" / "mnist"
    root = Path(root)
    with source.open("rb") as handle, np.load(handle) as arrays:
        for split, (images_name, labels_name) in SPLIT_FILES.items():
            for name, key, magic in ((images_name, "images", IMAGE_MAGIC), (labels_name, "labels", LABEL_MAGIC)):
                path = root / name
                if not path.is_file():
                    content = idx_bytes(arrays[f"{split}_{key}"], magic)
                    atomic_write(path, lambda temporary, content=content: temporary.write_bytes(content))
    return root


def balanced_rows(labels: torch.Tensor, per_class: int, seed: int, num_classes: int = 10) -> torch.Tensor:
    """``per_class`` rows of each class, the first ones in a seeded permutation, sorted: (num_classes * per_class,)."""
    check_int("per_class", per_class)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    chosen = []
    for digit in range(num_classes):
        rows = order[labels[order] == digit][:per_class]
        if len(rows) < per_class:
            raise ValueError(f"class {digit} has {len(rows)} rows, fewer than per_class={per_class}")
        chosen.append(rows)
    return torch.cat(chosen).sort().values


def build_sample(
    mnist_root: str | os.PathLike[str],
    uci_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    train_per_class: int = TRAIN_PER_CLASS,
    test_per_class: int = TEST_PER_CLASS,
    seed: int = SAMPLE_SEED,
) -> list[Path]:
    """Rebuild the embedded files in ``out`` from the MNIST IDX files and the UCI folder; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, per_class, offset in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        data = load_mnist(mnist_root, split)
        rows = balanced_rows(data.labels, per_class, seed + offset)
        arrays[f"{split}_images"] = data.images[rows].numpy()
        arrays[f"{split}_labels"] = data.labels[rows].to(torch.uint8).numpy()
        arrays[f"{split}_index"] = rows.to(torch.int32).numpy()
    mnist_path = out / MNIST_FILE
    np.savez_compressed(mnist_path, **arrays)
    uci = load_uci_dataset(uci_root, UCI_NAME)
    uci_path = out / UCI_FILE
    np.savez_compressed(
        uci_path,
        inputs=uci.inputs.numpy(),
        targets=uci.targets.numpy(),
        train_index=uci.train_indices[UCI_SPLIT].numpy(),
        test_index=uci.test_indices[UCI_SPLIT].numpy(),
        n_hidden=np.int64(uci.n_hidden),
        n_epochs=np.int64(uci.n_epochs),
    )
    return [mnist_path, uci_path]
