"""Issue 10: on a small real subset of MNIST, M2 beats a supervised-only classifier trained on the same labels.

The task: tell MNIST's fives from its eights with 10 labelled images of each. Both classifiers are the
same network q(y | x) (``M2Guide``'s classifier, one hidden layer of 256 units) and see the same 20
labelled rows. The supervised-only one is the example's ``--baseline`` (:func:`supervised_baseline`: cross-
entropy on the labelled rows alone, as many steps as M2 takes); M2 is the example's training loop
(:func:`fit_m2`) with 3,000 unlabelled fives and eights besides. Both keep the epoch of lowest error on
200 validation rows (from MNIST's last 10,000 training images, the example's protocol) and are scored
once on every five and eight of the 10,000 test images (1,866 rows), which neither saw.

The settings are fixed here, not tuned on the test rows: z of 2 dimensions, alpha = 1 (per labelled row
alpha N / N_l), 12 epochs of 30 steps, the first 5 a classifier warm-up (``--classifier-warmup``: q(y | x)
learns from the labels only while the unlabelled term trains the generative model). docs/m2.md, "The
small-subset test", gives the margins over ten label draws and the time.
"""

from pathlib import Path

import pyro
import pytest
import torch

from pyro_bdl.data import load_mnist, to_float, train_validation_split
from pyro_bdl.data.mnist import STANDARD_VALIDATION
from pyro_bdl.data.semi_supervised import balanced_labelled_subset, select_classes
from tests.examples.helpers import load_example

DIGITS = (5, 8)
LABELS_PER_CLASS = 10
UNLABELLED = 3000
VALIDATION = 200
FLAGS = ["--labels", str(LABELS_PER_CLASS * len(DIGITS)), "--hidden", "256", "--latent-dim", "2",
         "--batch-size", "100", "--labelled-batch", "50", "--lr", "1e-3", "--alpha", "1", "--epochs", "12",
         "--classifier-warmup", "5", "--threads", "1"]  # fmt: skip
SEEDS = (0, 1)
MARGIN = 0.02
"""M2's test error must be at least this much lower: 2 points, 37 of the 1,866 test rows. Over label draws 0-9
the margin was 2.4 to 10.7 points, 5.9 on average (docs/m2.md)."""


@pytest.fixture(autouse=True)
def clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def digit_subset(mnist_root: Path, seed: int) -> dict[str, torch.Tensor]:
    """The example's data dictionary for ``DIGITS``, labels renumbered 0 .. K - 1: ``LABELS_PER_CLASS``
    labelled rows of each digit drawn by ``seed`` from MNIST's first 50,000 training images, the first
    ``UNLABELLED`` other rows of those digits without labels, the first ``VALIDATION`` rows of those
    digits among the last 10,000 training images, and every test image of those digits."""
    train, validation = train_validation_split(load_mnist(mnist_root, "train"), STANDARD_VALIDATION)
    parts = {}
    for name, split in (("train", train), ("validation", validation), ("test", load_mnist(mnist_root, "test"))):
        rows, labels = select_classes(split.labels, DIGITS)
        parts[name] = (to_float(split.images[rows], flatten=True), labels)
    x, y = parts["train"]
    labelled = balanced_labelled_subset(y, LABELS_PER_CLASS * len(DIGITS), len(DIGITS), seed=seed)
    others = torch.ones(len(y), dtype=torch.bool)
    others[labelled] = False
    return {
        "labelled_x": x[labelled], "labelled_y": y[labelled], "unlabelled_x": x[others][:UNLABELLED],
        "validation_x": parts["validation"][0][:VALIDATION], "validation_y": parts["validation"][1][:VALIDATION],
        "test_x": parts["test"][0], "test_y": parts["test"][1],
    }  # fmt: skip


def m2_and_supervised_only(data: dict, seed: int, out: Path) -> tuple[float, float]:
    """Test errors of M2's q(y | x) and of the supervised-only classifier, each at its best validation epoch."""
    example = load_example("ssvae_mnist")
    args = example.parse_args([*FLAGS, "--seed", str(seed), "--out", str(out)])
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    model, guide, _ = example.fit_m2(data, args, num_classes=len(DIGITS))
    m2_error = example.error_rate(guide, data["test_x"], data["test_y"])
    return m2_error, example.supervised_only(model, data, args)["test_error"]


@pytest.mark.parametrize("seed", SEEDS)
def test_m2_beats_the_supervised_only_classifier_on_the_same_labels(mnist_root, tmp_path, seed):
    data = digit_subset(mnist_root, seed)
    assert len(data["labelled_y"]) == 20 and len(data["unlabelled_x"]) == UNLABELLED
    assert len(data["test_y"]) == 1866  # every five and eight of MNIST's test images
    m2_error, supervised_error = m2_and_supervised_only(data, seed, tmp_path)
    assert m2_error <= supervised_error - MARGIN, f"M2 {m2_error:.3f}, supervised-only {supervised_error:.3f}"
