"""Datasets read from local folders; nothing is downloaded, at import or ever.

* :mod:`pyro_bdl.data.mnist`: MNIST from its IDX files, images (N, 28, 28) uint8 and
  labels (N,) int64, with the usual preprocessing (scaling to floats, dynamic
  binarisation, the 50,000 / 10,000 train/validation split).
* :mod:`pyro_bdl.data.shift`: out-of-distribution sets made from them (rotated, pixel-permuted).
* :mod:`pyro_bdl.data.uci`: the UCI regression sets with their standard train/test splits
  (Hernandez-Lobato & Adams 2015), normalised with training statistics.
* :mod:`pyro_bdl.data.ising`: 2-D Ising configurations by Swendsen-Wang, with the exact
  finite-lattice (Kaufman) and infinite-lattice (Onsager) energies to check them; import it
  from there (it needs scipy, which this package's import does not load).

Set ``PYRO_BDL_DATA`` to the data folder (the one holding ``mnist/`` and ``uci/``) or pass folders
explicitly. To get the files, run ``pyro-bdl data fetch`` or call
:func:`pyro_bdl.data.fetch.fetch` (the only code here that downloads, and only when called;
import it from its module, it is not re-exported here).
"""

from pyro_bdl.data.mnist import (
    MNIST,
    binarize_dynamic,
    default_validation_size,
    load_mnist,
    mnist_root_from_env,
    to_float,
    train_validation_split,
)
from pyro_bdl.data.shift import permute_pixels, rotate_images
from pyro_bdl.data.uci import (
    UCIDataset,
    UCISplit,
    list_uci_datasets,
    load_uci,
    load_uci_dataset,
    uci_root_from_env,
)

__all__ = [
    "MNIST",
    "UCIDataset",
    "UCISplit",
    "binarize_dynamic",
    "default_validation_size",
    "list_uci_datasets",
    "load_mnist",
    "load_uci",
    "load_uci_dataset",
    "mnist_root_from_env",
    "permute_pixels",
    "rotate_images",
    "to_float",
    "train_validation_split",
    "uci_root_from_env",
]
