"""MNIST from a local folder of IDX files: a strict reader and the usual preprocessing.

Nothing is ever downloaded. The caller passes the folder that holds the four canonical
files (``shared/data/mnist/`` in this workspace; :func:`mnist_root_from_env` finds it):

=========  ==============================  ==============================
split      images                          labels
=========  ==============================  ==============================
``train``  ``train-images-idx3-ubyte.gz``  ``train-labels-idx1-ubyte.gz``
``test``   ``t10k-images-idx3-ubyte.gz``   ``t10k-labels-idx1-ubyte.gz``
=========  ==============================  ==============================

The same names without ``.gz`` (already decompressed) are accepted too; when both exist
the ``.gz`` file is read.

**IDX layout** (all header fields are big-endian uint32):

* images: magic 2051, N, rows = 28, cols = 28, then N * 784 uint8 pixels, image after
  image, each row-major; 0 is background and 255 full ink.
* labels: magic 2049, N, then N uint8 digits 0-9; label i belongs to image i.

The reader checks the magic numbers, the 28x28 image size, the byte count against the
header (truncated data and trailing bytes are both errors), that the two files agree on
N, and that every label is a digit. Problems with the files raise ``ValueError`` naming the
file; a missing folder or file raises ``FileNotFoundError`` listing the expected names.

Shapes (N examples; "batch" dimensions come first, the image is the event):

===========================  ============================  ==============================
function                     input                         output
===========================  ============================  ==============================
``load_mnist``               folder, split                 ``MNIST``: images (N, 28, 28)
                                                           uint8, labels (N,) int64
``to_float``                 (..., 28, 28) uint8           same shape float32 in
                                                           [low, high]; (..., 784) with
                                                           ``flatten=True``
``binarize_dynamic``         (...) float in [0, 1]         same shape and dtype, {0, 1}
``train_validation_split``   ``MNIST`` of N, V             ``MNIST`` of N - V, ``MNIST``
                                                           of V (the last V examples)
===========================  ============================  ==============================

Example::

    from pyro_bdl.data import load_mnist, mnist_root_from_env, to_float, train_validation_split

    train, valid = train_validation_split(load_mnist(mnist_root_from_env(), "train"), 10_000)
    x = to_float(train.images, -1.0, 1.0, flatten=True)  # (50000, 784) in [-1, 1], BinaryNet
    y = train.labels  # (50000,) int64

Reference: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to
document recognition", Proc. IEEE 86(11), 1998. The data is CC BY-SA 3.0 (see
``shared/data/README.md``).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch

DATA_ENV = "PYRO_BDL_DATA"
"""Environment variable naming the data folder that holds ``mnist/``."""
MNIST_TRAIN_SIZE = 60000
"""Images in MNIST's training file."""
STANDARD_VALIDATION = 10000
"""The usual held-out tail of the training images (the 50,000 / 10,000 split)."""

IMAGE_SIZE = 28
NUM_CLASSES = 10
IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049

SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Split name -> (images, labels) base file names, without the optional ``.gz``."""

_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, eq=False)
class MNIST:
    """A set of MNIST examples; index i of ``images`` and ``labels`` is one example.

    Attributes:
        images: (N, 28, 28) uint8 pixels, row-major, 0 = background, 255 = full ink.
            N is the batch dimension, (28, 28) the event.
        labels: (N,) int64 digits 0-9.

    ``eq=False``: tensors have no single truth value, so compare fields with
    :func:`torch.equal` instead of ``==``.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dim() != 3:
            raise ValueError(f"images must have shape (N, 28, 28), got {tuple(self.images.shape)}")
        if self.labels.dim() != 1:
            raise ValueError(f"labels must have shape (N,), got {tuple(self.labels.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"images and labels must hold the same number of examples, "
                f"got {self.images.shape[0]} images and {self.labels.shape[0]} labels"
            )

    def __len__(self) -> int:
        """The number of examples N."""
        return self.labels.shape[0]


def mnist_root_from_env(default: str | os.PathLike[str] = "../shared/data") -> Path:
    """The MNIST folder: ``$PYRO_BDL_DATA/mnist``, else ``<default>/mnist``.

    ``PYRO_BDL_DATA`` names the data folder that *contains* ``mnist/`` (the same folder
    holds ``uci/``). An unset or empty variable falls back to ``default``, whose value
    suits a process started in the repository root of this workspace. ``~`` is expanded;
    a relative path stays relative, so it is resolved against the working directory when
    the files are opened. Nothing is checked here: :func:`load_mnist` reports a missing
    folder.

    Args:
        default: the data folder to use when ``PYRO_BDL_DATA`` is unset or empty.

    Returns:
        The path of the ``mnist`` folder.
    """
    data = os.environ.get(DATA_ENV) or default
    return Path(data).expanduser() / "mnist"


def load_mnist(
    root: str | os.PathLike[str],
    split: Literal["train", "test"] = "train",
    *,
    limit: int | None = None,
) -> MNIST:
    """Read one MNIST split from the IDX files in ``root``.

    Args:
        root: the folder holding the IDX files (see the module docstring for the names).
            Never downloaded into.
        split: ``"train"`` (60,000 examples) or ``"test"`` (10,000). For a validation
            set, split the training set with :func:`train_validation_split`.
        limit: if given, keep only the first ``limit`` examples (a positive int); a
            limit above the split size keeps them all. Only those examples are stored,
            but the whole files are still read and checked.

    Returns:
        ``MNIST`` with images (N, 28, 28) uint8 and labels (N,) int64, in file order.

    Raises:
        ValueError: unknown ``split``; ``limit`` not positive; a file with the wrong
            magic number, image size or length, corrupt gzip data, a label outside
            0-9, or image and label files that disagree on N.
        TypeError: ``limit`` is not an int.
        FileNotFoundError: ``root`` or one of the two files is missing.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be a positive int or None, got {type(limit).__name__} {limit!r}")
        if limit <= 0:
            raise ValueError(f"limit must be a positive int or None, got {limit}")
    images_name, labels_name = SPLIT_FILES[split]
    images_path = _find_file(Path(root), split, images_name)
    labels_path = _find_file(Path(root), split, labels_name)

    n_images, images = _read_idx(images_path, IMAGE_MAGIC, limit)
    n_labels, labels = _read_idx(labels_path, LABEL_MAGIC, limit)
    if n_images != n_labels:
        raise ValueError(
            f"{images_path} holds {n_images} images but {labels_path} holds {n_labels} labels; "
            f"the two files of split {split!r} must hold the same number of examples"
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        index = int(np.argmax(labels >= NUM_CLASSES))
        raise ValueError(f"{labels_path}: expected digit labels 0-9, got {int(labels[index])} at index {index}")
    return MNIST(
        images=torch.from_numpy(images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)),
        labels=torch.from_numpy(labels).to(torch.int64),
    )


def to_float(
    images: torch.Tensor,
    low: float = 0.0,
    high: float = 1.0,
    *,
    flatten: bool = False,
) -> torch.Tensor:
    """Map uint8 pixels linearly to float32, 0 -> ``low`` and 255 -> ``high`` exactly.

    Use the default [0, 1] for Bernoulli likelihoods and :func:`binarize_dynamic`, and
    ``low=-1.0, high=1.0`` for BinaryNet-style inputs.

    Args:
        images: (..., 28, 28) uint8 pixels, e.g. ``MNIST.images`` (N, 28, 28). Any
            leading batch shape; with ``flatten=False`` any shape at all.
        low: the value of pixel 0.
        high: the value of pixel 255; must be greater than ``low``.
        flatten: merge the last two (row, column) dimensions, giving (..., 784).

    Returns:
        (..., 28, 28) float32 in [low, high], or (..., 784) with ``flatten=True``. A new
        tensor on the device of ``images``.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 pixels 0-255, got {images.dtype}")
    if not low < high:
        raise ValueError(f"low must be less than high, got low={low}, high={high}")
    if flatten and images.dim() < 2:
        raise ValueError(f"flatten=True needs images of shape (..., rows, cols), got {tuple(images.shape)}")
    weight = images.to(torch.float32).div_(255.0)
    if (low, high) != (0.0, 1.0):
        # lerp hits both end points exactly, which ``low + (high - low) * w`` may miss by an ulp.
        ends = torch.tensor([low, high], dtype=torch.float32, device=images.device)
        weight = torch.lerp(ends[0], ends[1], weight)
    return weight.flatten(-2) if flatten else weight


def binarize_dynamic(images01: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarisation: draw each pixel from Bernoulli(intensity).

    Call it afresh on every minibatch (hence "dynamic"), as is standard for VAEs and
    other Bernoulli-likelihood models on MNIST; the expected image equals ``images01``.

    Args:
        images01: (...) floating tensor of intensities in [0, 1], e.g.
            ``to_float(images)`` (N, 28, 28) or (N, 784).
        generator: the random generator to draw from (on the device of ``images01``);
            ``None`` uses torch's default generator.

    Returns:
        A tensor of the same shape, dtype and device holding 0.0 and 1.0.
    """
    if not isinstance(images01, torch.Tensor):
        raise TypeError(f"images01 must be a torch.Tensor, got {type(images01).__name__}")
    if not images01.is_floating_point():
        raise TypeError(f"images01 must be a floating tensor in [0, 1] (see to_float), got {images01.dtype}")
    if images01.numel():
        low, high = float(images01.min()), float(images01.max())
        if not (low >= 0.0 and high <= 1.0):  # also rejects NaN
            raise ValueError(f"images01 must lie in [0, 1], got values in [{low}, {high}]")
    return torch.bernoulli(images01, generator=generator)


def default_validation_size(num_train: int) -> int:
    """10,000 of the full 60,000 training images, else a sixth of ``num_train`` (at least 1).

    The rule behind the examples' ``--validation`` default, so that ``--limit`` alone always
    leaves five sixths of the images for training.
    """
    if num_train < 2:
        raise ValueError(f"need at least 2 training images to hold some out, got {num_train}")
    return max(1, min(STANDARD_VALIDATION, num_train // 6))


def train_validation_split(data: MNIST, validation: int) -> tuple[MNIST, MNIST]:
    """Hold out the last ``validation`` examples, e.g. the standard 50,000 / 10,000 split.

    This is the split used by BinaryNet and most MNIST papers: training examples
    0 ... N - V - 1 and validation examples N - V ... N - 1, in file order, with no
    shuffling.

    Args:
        data: the examples to split, images (N, 28, 28) and labels (N,).
        validation: V, the number of examples to hold out, with 0 <= V < N; 0 gives an
            empty validation set.

    Returns:
        ``(train, valid)``: ``MNIST`` of the first N - V examples and of the last V.
        Both are views that share memory with ``data``.
    """
    if not isinstance(data, MNIST):
        raise TypeError(f"data must be an MNIST, got {type(data).__name__}")
    if isinstance(validation, bool) or not isinstance(validation, int):
        raise TypeError(f"validation must be an int, got {type(validation).__name__} {validation!r}")
    n = len(data)
    if not 0 <= validation < n:
        raise ValueError(f"validation must satisfy 0 <= validation < {n} (the number of examples), got {validation}")
    cut = n - validation
    train = MNIST(images=data.images[:cut], labels=data.labels[:cut])
    valid = MNIST(images=data.images[cut:], labels=data.labels[cut:])
    return train, valid


def _find_file(root: Path, split: str, name: str) -> Path:
    """``root / (name + ".gz")`` if it exists, else ``root / name``; raise if neither does."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    expected = " and ".join(f"{base}.gz" for base in SPLIT_FILES[split])
    if not root.is_dir():
        raise FileNotFoundError(
            f"MNIST folder {str(root)!r} does not exist; it should hold {expected} "
            f"(or the same names without .gz) for split {split!r}. "
            f"Pass the folder that holds the IDX files, or set {DATA_ENV} to the data folder containing mnist/; "
            f"to download them: pyro-bdl data fetch mnist --to {root.parent}"
        )
    raise FileNotFoundError(
        f"MNIST file {name}.gz (or {name}) not found in folder {str(root)!r}; "
        f"split {split!r} expects {expected} (or the same names without .gz)"
    )


def _read_idx(path: Path, magic: int, limit: int | None) -> tuple[int, np.ndarray]:
    """Read and check one IDX file; return (N from the header, the first ``limit`` items).

    The items come back as a flat writable uint8 array of ``min(limit, N) * item_bytes``
    bytes (784 per image, 1 per label). The rest of the file is still read, to check its
    length, but not kept.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            return _parse_idx(stream, path, magic, limit)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err


def _parse_idx(stream: BinaryIO, path: Path, magic: int, limit: int | None) -> tuple[int, np.ndarray]:
    is_images = magic == IMAGE_MAGIC
    kind = "images" if is_images else "labels"
    header_bytes = 16 if is_images else 8
    header = stream.read(header_bytes)
    if len(header) < header_bytes:
        raise ValueError(
            f"{path}: truncated, expected a {header_bytes}-byte IDX {kind} header, got {len(header)} bytes"
        )
    fields = struct.unpack(f">{header_bytes // 4}I", header)
    if fields[0] != magic:
        raise ValueError(f"{path}: expected IDX {kind} magic number {magic}, got {fields[0]}")
    n = fields[1]
    if is_images and fields[2:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{path}: expected {IMAGE_SIZE}x{IMAGE_SIZE} images, got {fields[2]}x{fields[3]}")
    item_bytes = IMAGE_SIZE * IMAGE_SIZE if is_images else 1
    keep = n if limit is None else min(limit, n)

    items = np.empty(keep * item_bytes, dtype=np.uint8)
    got = _read_into(stream, memoryview(items))
    rest = 0
    while chunk := stream.read(_CHUNK_BYTES):
        rest += len(chunk)
    total, expected = got + rest, n * item_bytes
    if total < expected:
        raise ValueError(
            f"{path}: truncated, the header promises {n} {kind} ({expected} bytes after the header), got {total} bytes"
        )
    if total > expected:
        raise ValueError(
            f"{path}: {total - expected} unexpected trailing bytes after the {n} {kind} the header promises"
        )
    return n, items


def _read_into(stream: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream``; return the bytes read (fewer only at end of file)."""
    filled = 0
    while filled < len(buffer):
        count = stream.readinto(buffer[filled:])
        if not count:
            break
        filled += count
    return filled
