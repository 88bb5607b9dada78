"""UCI regression benchmarks in the standard-splits format, with the protocol's normalisation.

Hernandez-Lobato & Adams (2015, "Probabilistic Backpropagation for Scalable Learning of
Bayesian Neural Networks") published fixed 90/10 train/test splits of ten UCI regression
sets; Gal & Ghahramani (2016, "Dropout as a Bayesian Approximation") reused them, and they are
the standard BNN regression benchmark since. Nothing is downloaded: the caller passes the
folder holding one sub-folder per data set (``shared/data/uci/`` in this workspace;
:func:`uci_root_from_env` finds it). Each data set folder holds whitespace-separated text:

==========================  ===========================================================
file                        content
==========================  ===========================================================
``data.txt``                the table, one row per line, numbers only (blank lines skipped)
``index_features.txt``      0-based columns of the inputs, one per line
``index_target.txt``        the 0-based column of the target
``index_train_<k>.txt``     0-based rows of split k's training set, k = 0 .. n_splits - 1
``index_test_<k>.txt``      0-based rows of split k's test set (disjoint from training)
``n_splits.txt``            the number of splits (20; protein 5)
``n_hidden.txt``            hidden units of the protocol's network (50; protein 100)
``n_epochs.txt``            training epochs of the protocol (40; protein 20)
==========================  ===========================================================

The reader checks all of them and raises ``ValueError`` naming the file (ragged or
non-numeric rows, non-finite values, indices out of range or repeated, overlapping train and
test rows, a target that is also an input); a missing folder or file raises
``FileNotFoundError``.

**Normalisation (the protocol).** Inputs and targets of split k are standardised with the
mean and (population) standard deviation of split k's *training* rows only; the test rows
use the same statistics. An input that is constant on the training rows (naval has such
columns) is centred but left unscaled (its std is taken as 1), as the reference code of both
papers does. Metrics are reported in the original units: keep ``y_mean`` / ``y_std`` (a
normalised prediction mu, sigma becomes ``mu * y_std + y_mean``, ``sigma * y_std``) and
score against ``y_test_original``.

Shapes (N rows, D inputs)::

    load_uci_dataset(root, name) -> UCIDataset: inputs (N, D) float64, targets (N,) float64,
                                    train/test indices per split (n,) int64
    UCIDataset.split(k)          -> UCISplit: x_train (N_train, D), y_train (N_train,),
                                    x_test (N_test, D), y_test (N_test,), normalised
    load_uci(root, name, k)      -> the same UCISplit in one call

Example::

    from pyro_bdl.data import list_uci_datasets, load_uci, uci_root_from_env

    root = uci_root_from_env()
    print(list_uci_datasets(root))            # ['bostonHousing', 'concrete', ...]
    split = load_uci(root, "bostonHousing", 0)
    split.x_train.shape, split.y_test_original.shape  # (455, 13), (51,)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyro_bdl.data.mnist import DATA_ENV

__all__ = [
    "UCIDataset",
    "UCISplit",
    "list_uci_datasets",
    "load_uci",
    "load_uci_dataset",
    "uci_root_from_env",
]

DATA_FILE = "data.txt"
FEATURES_FILE = "index_features.txt"
TARGET_FILE = "index_target.txt"
SPLITS_FILE = "n_splits.txt"
HIDDEN_FILE = "n_hidden.txt"
EPOCHS_FILE = "n_epochs.txt"
REQUIRED_FILES = (DATA_FILE, FEATURES_FILE, TARGET_FILE, SPLITS_FILE, HIDDEN_FILE, EPOCHS_FILE)
"""Files every data set folder must hold, besides the per-split index files."""


@dataclass(frozen=True, eq=False)
class UCISplit:
    """Split k of a UCI data set, normalised with its training statistics.

    Attributes:
        name: the data set (its folder name).
        split: k.
        x_train: (N_train, D) standardised training inputs.
        y_train: (N_train,) standardised training targets.
        x_test: (N_test, D) test inputs, standardised with the training statistics.
        y_test: (N_test,) test targets, standardised with the training statistics.
        y_test_original: (N_test,) test targets in the original units, for reporting.
        x_mean: (D,) training input means. x_std: (D,) training input stds (1 where the
            input is constant on the training rows).
        y_mean: training target mean. y_std: training target std (positive).
        n_hidden: hidden units of the protocol's network. n_epochs: the protocol's epochs.

    Tensors are float32 unless another ``dtype`` was asked for.
    """

    name: str
    split: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_test_original: torch.Tensor
    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: float
    y_std: float
    n_hidden: int
    n_epochs: int

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    def unnormalize_targets(self, y: torch.Tensor) -> torch.Tensor:
        """Standardised targets or predictive means (...) back to the original units."""
        return y * self.y_std + self.y_mean


@dataclass(frozen=True, eq=False)
class UCIDataset:
    """A whole UCI data set with its standard splits, unnormalised.

    Attributes:
        name: the folder name, e.g. ``"bostonHousing"``.
        inputs: (N, D) float64 input columns, in file order.
        targets: (N,) float64 target column.
        train_indices: per split k, (N_train_k,) int64 training rows.
        test_indices: per split k, (N_test_k,) int64 test rows, disjoint from training.
        n_hidden: hidden units of the protocol's network.
        n_epochs: training epochs of the protocol.
    """

    name: str
    inputs: torch.Tensor
    targets: torch.Tensor
    train_indices: tuple[torch.Tensor, ...]
    test_indices: tuple[torch.Tensor, ...]
    n_hidden: int
    n_epochs: int

    @property
    def num_splits(self) -> int:
        return len(self.train_indices)

    def split(self, k: int, dtype: torch.dtype = torch.float32) -> UCISplit:
        """Split ``k`` (0 <= k < num_splits), normalised with its training rows' statistics.

        Args:
            k: the split index.
            dtype: floating dtype of the returned tensors; statistics are computed in float64.
        """
        self._check_split(k, dtype)
        return self._normalised(k, self.train_indices[k], self.test_indices[k], dtype)

    def validation_split(
        self, k: int, fraction: float = 0.2, seed: int = 0, dtype: torch.dtype = torch.float32
    ) -> UCISplit:
        """Split ``k``'s training rows cut in two, for choosing settings without the test rows.

        A random ``fraction`` of split ``k``'s training rows (drawn by a generator seeded with
        ``seed + k``) becomes the held-out part, returned in the ``x_test`` / ``y_test`` fields;
        the rest is the training part, and normalisation uses its statistics only (the
        protocol of Gal & Ghahramani 2016, who grid-search on such a validation part and then
        retrain on the whole training split). The test rows are never touched.

        Args:
            k: the split index.
            fraction: the held-out share of the training rows, 0 < fraction < 1.
            seed: base seed of the draw.
            dtype: floating dtype of the returned tensors.
        """
        self._check_split(k, dtype)
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must satisfy 0 < fraction < 1, got {fraction!r}")
        rows = self.train_indices[k]
        held_out = max(1, round(fraction * rows.numel()))
        if held_out >= rows.numel():
            raise ValueError(
                f"{self.name!r} split {k}: {rows.numel()} training rows are too few to hold out {fraction}"
            )
        order = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(seed + k))
        return self._normalised(k, rows[order[held_out:]], rows[order[:held_out]], dtype)

    def _check_split(self, k: int, dtype: torch.dtype) -> None:
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"split must be an int, got {type(k).__name__} {k!r}")
        if not 0 <= k < self.num_splits:
            raise ValueError(f"split must satisfy 0 <= split < {self.num_splits} for {self.name!r}, got {k}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")

    def _normalised(self, k: int, train: torch.Tensor, test: torch.Tensor, dtype: torch.dtype) -> UCISplit:
        """Rows ``train`` and ``test`` standardised with the statistics of ``train``."""
        x_train, y_train = self.inputs[train], self.targets[train]
        # a constant input's float mean and std may be off by rounding; centre it exactly instead
        constant = x_train.amax(0) == x_train.amin(0)
        x_mean = torch.where(constant, x_train[0], x_train.mean(0))
        x_std = torch.where(constant, torch.ones_like(x_mean), x_train.std(0, correction=0))
        y_mean = float(y_train.mean())
        y_std = float(y_train.std(correction=0))
        if not y_std > 0:
            raise ValueError(f"{self.name!r} split {k}: the target is constant on the training rows; cannot normalise")
        y_test = self.targets[test]
        return UCISplit(
            name=self.name,
            split=k,
            x_train=((x_train - x_mean) / x_std).to(dtype),
            y_train=((y_train - y_mean) / y_std).to(dtype),
            x_test=((self.inputs[test] - x_mean) / x_std).to(dtype),
            y_test=((y_test - y_mean) / y_std).to(dtype),
            y_test_original=y_test.to(dtype),
            x_mean=x_mean.to(dtype),
            x_std=x_std.to(dtype),
            y_mean=y_mean,
            y_std=y_std,
            n_hidden=self.n_hidden,
            n_epochs=self.n_epochs,
        )


def uci_root_from_env(default: str | os.PathLike[str] = "../shared/data") -> Path:
    """The UCI folder: ``$PYRO_BDL_DATA/uci``, else ``<default>/uci``.

    ``PYRO_BDL_DATA`` names the data folder that *contains* ``uci/`` (and ``mnist/``), as
    for :func:`pyro_bdl.data.mnist_root_from_env`. Nothing is checked here.
    """
    data = os.environ.get(DATA_ENV) or default
    return Path(data).expanduser() / "uci"


def list_uci_datasets(root: str | os.PathLike[str]) -> list[str]:
    """Sorted names of the sub-folders of ``root`` that hold a ``data.txt``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"UCI folder {str(root)!r} does not exist; pass the folder holding one sub-folder per data set "
            f"(or set {DATA_ENV} to the data folder containing uci/); "
            f"to download them: pyro-bdl data fetch uci NAME... --to {root.parent}"
        )
    return sorted(child.name for child in root.iterdir() if (child / DATA_FILE).is_file())


def load_uci(
    root: str | os.PathLike[str], name: str, split: int = 0, *, dtype: torch.dtype = torch.float32
) -> UCISplit:
    """Read data set ``name`` from ``root`` and return its split ``split``, normalised.

    See :func:`load_uci_dataset` (which reads and checks the files) and
    :meth:`UCIDataset.split`; load the data set once to iterate over all its splits.
    """
    return load_uci_dataset(root, name).split(split, dtype=dtype)


def load_uci_dataset(root: str | os.PathLike[str], name: str) -> UCIDataset:
    """Read and check every file of data set ``name`` in ``root`` (see the module docstring).

    Args:
        root: the folder holding one sub-folder per data set.
        name: a sub-folder name, one of :func:`list_uci_datasets`.

    Raises:
        ValueError: unknown ``name``, or a file with bad content (the message names it).
        FileNotFoundError: ``root`` or a required file is missing.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    available = list_uci_datasets(root)
    if name not in available:
        raise ValueError(f"unknown UCI data set {name!r}; {str(root)!r} holds {available}")
    folder = Path(root) / name
    for file in REQUIRED_FILES:
        _require(folder / file)

    table = _read_table(folder / DATA_FILE)
    rows, columns = table.shape
    features = _read_ints(folder / FEATURES_FILE)
    target = _read_single_int(folder / TARGET_FILE)
    _check_columns(folder / FEATURES_FILE, features, columns)
    _check_columns(folder / TARGET_FILE, np.array([target]), columns)
    if target in set(features.tolist()):
        raise ValueError(f"{folder / TARGET_FILE}: target column {target} is also listed in {FEATURES_FILE}")
    n_splits = _read_positive_int(folder / SPLITS_FILE)

    train_indices, test_indices = [], []
    for k in range(n_splits):
        train_path, test_path = folder / f"index_train_{k}.txt", folder / f"index_test_{k}.txt"
        train = _read_rows(_require(train_path), rows)
        test = _read_rows(_require(test_path), rows)
        overlap = np.intersect1d(train, test)
        if overlap.size:
            raise ValueError(
                f"{test_path}: {overlap.size} row(s) also in {train_path.name} (e.g. row {int(overlap[0])}); "
                "train and test rows must be disjoint"
            )
        train_indices.append(torch.from_numpy(train))
        test_indices.append(torch.from_numpy(test))
    return UCIDataset(
        name=name,
        inputs=torch.from_numpy(np.ascontiguousarray(table[:, features])),
        targets=torch.from_numpy(np.ascontiguousarray(table[:, target])),
        train_indices=tuple(train_indices),
        test_indices=tuple(test_indices),
        n_hidden=_read_positive_int(folder / HIDDEN_FILE),
        n_epochs=_read_positive_int(folder / EPOCHS_FILE),
    )


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"UCI file {str(path)!r} not found; a data set folder must hold {list(REQUIRED_FILES)}")
    return path


def _read_table(path: Path) -> np.ndarray:
    """data.txt as a (rows, columns) float64 array; ragged, non-numeric or non-finite is an error."""
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(f"{path}: not a whitespace-separated table of numbers ({err})") from err
    if table.shape[0] < 2:
        raise ValueError(f"{path}: expected at least 2 rows of data, got {table.shape[0]}")
    if not np.isfinite(table).all():
        row = int(np.argwhere(~np.isfinite(table))[0, 0])
        raise ValueError(f"{path}: non-finite value (NaN or inf) in data row {row}")
    return table


def _read_ints(path: Path) -> np.ndarray:
    """All whitespace-separated integers of a file as int64 (at least one)."""
    tokens = path.read_text().split()
    if not tokens:
        raise ValueError(f"{path}: empty, expected integers")
    try:
        return np.array([int(token) for token in tokens], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{path}: expected integers, one per line ({err})") from err


def _read_single_int(path: Path) -> int:
    values = _read_ints(path)
    if values.size != 1:
        raise ValueError(f"{path}: expected a single integer, got {values.size}")
    return int(values[0])


def _read_positive_int(path: Path) -> int:
    value = _read_single_int(path)
    if value < 1:
        raise ValueError(f"{path}: expected a positive integer, got {value}")
    return value


def _check_columns(path: Path, columns: np.ndarray, num_columns: int) -> None:
    bad = columns[(columns < 0) | (columns >= num_columns)]
    if bad.size:
        raise ValueError(f"{path}: column {int(bad[0])} out of range; {DATA_FILE} has {num_columns} columns")
    if np.unique(columns).size != columns.size:
        raise ValueError(f"{path}: repeated column indices")


def _read_rows(path: Path, num_rows: int) -> np.ndarray:
    rows = _read_ints(path)
    bad = rows[(rows < 0) | (rows >= num_rows)]
    if bad.size:
        raise ValueError(f"{path}: row {int(bad[0])} out of range; {DATA_FILE} has {num_rows} rows")
    if np.unique(rows).size != rows.size:
        raise ValueError(f"{path}: repeated row indices")
    return rows
