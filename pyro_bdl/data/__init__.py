"""Datasets read from local folders; nothing is downloaded, at import or ever.

* :mod:`pyro_bdl.data.mnist`: MNIST from its IDX files, images (N, 28, 28) uint8 and
  labels (N,) int64, with the usual preprocessing (scaling to floats, dynamic
  binarisation, the 50,000 / 10,000 train/validation split).

Set ``PYRO_BDL_DATA`` to the data folder (the one holding ``mnist/``) or pass folders
explicitly.
"""

from pyro_bdl.data.mnist import (
    MNIST,
    binarize_dynamic,
    load_mnist,
    mnist_root_from_env,
    to_float,
    train_validation_split,
)

__all__ = [
    "MNIST",
    "binarize_dynamic",
    "load_mnist",
    "mnist_root_from_env",
    "to_float",
    "train_validation_split",
]
