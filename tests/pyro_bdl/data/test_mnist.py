"""The MNIST reader on the real files and on small synthetic IDX files, and its helpers.

The real data comes from the ``mnist_root`` fixture (tests/conftest.py: ``$PYRO_BDL_DATA/mnist``,
else the workspace's ``shared/data/mnist``; skipped where absent, a failure under ``CI=true``).
The expected values are those documented in
``shared/data/README.md``.
"""

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_bdl.data import (
    MNIST,
    binarize_dynamic,
    default_validation_size,
    load_mnist,
    mnist_root_from_env,
    to_float,
    train_validation_split,
)
from pyro_bdl.data.mnist import DATA_ENV, IMAGE_MAGIC, LABEL_MAGIC, SPLIT_FILES

REPO_ROOT = Path(__file__).resolve().parents[3]

TRAIN_SIZE, TEST_SIZE = 60_000, 10_000
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- real data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_train(mnist_root) -> MNIST:
    return load_mnist(mnist_root, "train")


@pytest.fixture(scope="module")
def real_test(mnist_root) -> MNIST:
    return load_mnist(mnist_root, "test")


@pytest.mark.parametrize(
    ("split", "size", "first_labels", "class_counts"),
    [
        ("train", TRAIN_SIZE, FIRST_TRAIN_LABELS, TRAIN_CLASS_COUNTS),
        ("test", TEST_SIZE, FIRST_TEST_LABELS, TEST_CLASS_COUNTS),
    ],
)
def test_real_split(request, split, size, first_labels, class_counts):
    data = request.getfixturevalue(f"real_{split}")
    assert len(data) == size
    assert data.images.shape == (size, 28, 28)
    assert data.images.dtype == torch.uint8
    assert data.labels.shape == (size,)
    assert data.labels.dtype == torch.int64
    assert data.labels[:10].tolist() == first_labels
    assert torch.bincount(data.labels, minlength=10).tolist() == class_counts
    assert int(data.images.min()) == 0
    assert int(data.images.max()) == 255


def test_real_limit(real_train, mnist_root):
    small = load_mnist(mnist_root, "train", limit=100)
    assert small.images.shape == (100, 28, 28)
    assert small.labels.shape == (100,)
    assert torch.equal(small.images, real_train.images[:100])
    assert torch.equal(small.labels, real_train.labels[:100])


def test_real_to_float(real_train):
    x01 = to_float(real_train.images[:1000])
    assert x01.dtype == torch.float32
    assert x01.shape == (1000, 28, 28)
    assert float(x01.min()) == 0.0
    assert float(x01.max()) == 1.0
    x = to_float(real_train.images[:1000], -1.0, 1.0, flatten=True)
    assert x.shape == (1000, 784)
    assert float(x.min()) == -1.0
    assert float(x.max()) == 1.0
    torch.testing.assert_close(x, x01.reshape(1000, 784) * 2 - 1)


def test_real_binarize_dynamic_mean(real_test):
    x01 = to_float(real_test.images)
    sample = binarize_dynamic(x01, generator=torch.Generator().manual_seed(0))
    assert sample.shape == x01.shape
    assert sample.dtype == torch.float32
    assert bool(((sample == 0) | (sample == 1)).all())
    # 7.84M independent Bernoulli draws: the standard error of the mean is <= 0.5 / 2800 ~ 1.8e-4.
    assert abs(float(sample.mean()) - float(x01.mean())) < 1e-3
    # Pixels that are exactly 0 or 1 stay put.
    assert torch.equal(sample[x01 == 0], x01[x01 == 0])
    assert torch.equal(sample[x01 == 1], x01[x01 == 1])


def test_real_train_validation_split(real_train):
    fit, valid = train_validation_split(real_train, 10_000)
    assert len(fit) == 50_000
    assert len(valid) == 10_000
    assert fit.images.shape == (50_000, 28, 28)
    assert valid.images.shape == (10_000, 28, 28)
    assert torch.equal(fit.images, real_train.images[:50_000])
    assert torch.equal(fit.labels, real_train.labels[:50_000])
    assert torch.equal(valid.images, real_train.images[-10_000:])
    assert torch.equal(valid.labels, real_train.labels[-10_000:])


# --- synthetic IDX files -----------------------------------------------------------------


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">{1 + len(dims)}I", magic, *dims) + payload


def write_split(
    folder: Path,
    split: str = "train",
    n: int = 5,
    *,
    n_labels: int | None = None,
    image_magic: int = IMAGE_MAGIC,
    label_magic: int = LABEL_MAGIC,
    size: int = 28,
    cut_images: int = 0,
    extra_images: bytes = b"",
    labels: bytes | None = None,
    compress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write one split's two IDX files into ``folder``; return their (images, labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    n_labels = n if n_labels is None else n_labels
    images = np.random.default_rng(n).integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = bytes(i % 10 for i in range(n_labels)) if labels is None else labels
    image_data = idx_bytes(image_magic, (n, size, size), images.tobytes() + extra_images)
    if cut_images:
        image_data = image_data[:-cut_images]
    label_data = idx_bytes(label_magic, (n_labels,), labels)
    for name, data in zip(SPLIT_FILES[split], (image_data, label_data), strict=True):
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return torch.from_numpy(images), torch.tensor(list(labels), dtype=torch.int64)


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_synthetic_roundtrip(tmp_path, split, compress):
    images, labels = write_split(tmp_path, split, n=7, compress=compress)
    data = load_mnist(tmp_path, split)
    assert data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64
    assert torch.equal(data.images, images)
    assert torch.equal(data.labels, labels)


def test_gz_preferred_over_raw(tmp_path):
    images, _labels = write_split(tmp_path, n=3, compress=True)
    write_split(tmp_path, n=4, compress=False)
    assert torch.equal(load_mnist(tmp_path).images, images)


def test_accepts_str_root(tmp_path):
    write_split(tmp_path, n=2)
    assert len(load_mnist(str(tmp_path))) == 2


@pytest.mark.parametrize("limit", [1, 3, 5, 100])
def test_limit(tmp_path, limit):
    images, labels = write_split(tmp_path, n=5)
    data = load_mnist(tmp_path, limit=limit)
    assert len(data) == min(limit, 5)
    assert torch.equal(data.images, images[:limit])
    assert torch.equal(data.labels, labels[:limit])


@pytest.mark.parametrize(("limit", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_limit(tmp_path, limit, error):
    write_split(tmp_path)
    with pytest.raises(error, match="limit"):
        load_mnist(tmp_path, limit=limit)


@pytest.mark.parametrize("split", ["valid", "training", "TRAIN", ""])
def test_unknown_split(tmp_path, split):
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\]"):
        load_mnist(tmp_path, split)


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(missing, "test")
    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert "t10k-images-idx3-ubyte.gz" in message
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert DATA_ENV in message


def test_missing_file(tmp_path):
    write_split(tmp_path, "train")
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path, "train")
    message = str(info.value)
    assert str(tmp_path) in message
    assert "train-labels-idx1-ubyte.gz" in message
    assert "train-images-idx3-ubyte.gz" in message


def test_missing_split(tmp_path):
    write_split(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_mnist(tmp_path, "test")


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_bad_image_magic(tmp_path, compress):
    write_split(tmp_path, image_magic=LABEL_MAGIC, compress=compress)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*magic number 2051, got 2049"):
        load_mnist(tmp_path)


def test_bad_label_magic(tmp_path):
    write_split(tmp_path, label_magic=IMAGE_MAGIC)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz.*magic number 2049, got 2051"):
        load_mnist(tmp_path)


def test_wrong_image_size(tmp_path):
    write_split(tmp_path, size=32)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*28x28 images, got 32x32"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("limit", [None, 1])
def test_truncated_data(tmp_path, compress, limit):
    write_split(tmp_path, n=5, cut_images=10, compress=compress)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated.*5 images \(3920 bytes.*got 3910 bytes"):
        load_mnist(tmp_path, limit=limit)


def test_truncated_header(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">I", LABEL_MAGIC)))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz.*truncated.*8-byte IDX labels header"):
        load_mnist(tmp_path)


def test_trailing_bytes(tmp_path):
    write_split(tmp_path, extra_images=b"\x00" * 3)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*3 unexpected trailing bytes"):
        load_mnist(tmp_path)


def test_truncated_gzip_stream(tmp_path):
    write_split(tmp_path, n=50)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*corrupt or truncated gzip"):
        load_mnist(tmp_path)


def test_not_gzip(tmp_path):
    write_split(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all, plain text")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*corrupt or truncated gzip"):
        load_mnist(tmp_path)


def test_count_mismatch(tmp_path):
    write_split(tmp_path, n=5, n_labels=4)
    with pytest.raises(ValueError, match=r"images-idx3-ubyte\.gz holds 5 images but .*labels-idx1-ubyte\.gz holds 4"):
        load_mnist(tmp_path)


def test_label_out_of_range(tmp_path):
    write_split(tmp_path, n=3, labels=bytes([1, 10, 2]))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz.*digit labels 0-9, got 10 at index 1"):
        load_mnist(tmp_path)


# --- mnist_root_from_env -----------------------------------------------------------------


def test_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert mnist_root_from_env() == tmp_path / "mnist"


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_root_from_env_default(monkeypatch, tmp_path, value):
    if value is None:
        monkeypatch.delenv(DATA_ENV, raising=False)
    else:
        monkeypatch.setenv(DATA_ENV, value)
    assert mnist_root_from_env() == Path("../shared/data/mnist")
    assert mnist_root_from_env(default=tmp_path) == tmp_path / "mnist"


def test_root_from_env_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(DATA_ENV, "~/data")
    assert mnist_root_from_env() == tmp_path / "data" / "mnist"


# --- MNIST container ---------------------------------------------------------------------


def test_mnist_container_checks_shapes():
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    assert len(MNIST(images, torch.zeros(3, dtype=torch.int64))) == 3
    with pytest.raises(ValueError, match="same number of examples, got 3 images and 2 labels"):
        MNIST(images, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="images must have shape"):
        MNIST(images.reshape(3, 784), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels must have shape"):
        MNIST(images, torch.zeros(3, 1, dtype=torch.int64))


def test_mnist_is_frozen():
    data = MNIST(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64))
    with pytest.raises(AttributeError):
        data.images = data.images


# --- to_float ----------------------------------------------------------------------------


ALL_PIXELS = torch.arange(256, dtype=torch.uint8)


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-1.0, 1.0), (0.1, 0.7), (-3.0, 255.0)])
def test_to_float_end_points_and_linearity(low, high):
    x = to_float(ALL_PIXELS, low, high)
    assert x.dtype == torch.float32
    assert x.shape == (256,)
    assert float(x[0]) == torch.tensor(low).item()
    assert float(x[-1]) == torch.tensor(high).item()
    expected = low + (high - low) * ALL_PIXELS.double() / 255
    torch.testing.assert_close(x, expected.float())
    assert bool((x[1:] > x[:-1]).all())


def test_to_float_flatten():
    images = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    flat = to_float(images, flatten=True)
    assert flat.shape == (2, 3, 784)
    assert torch.equal(flat, to_float(images).reshape(2, 3, 784))
    assert to_float(images[0, 0]).shape == (28, 28)


def test_to_float_errors():
    with pytest.raises(TypeError, match="images must be uint8"):
        to_float(ALL_PIXELS.float())
    with pytest.raises(TypeError, match=r"images must be a torch\.Tensor"):
        to_float(np.zeros((1, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"low must be less than high, got low=1\.0, high=1\.0"):
        to_float(ALL_PIXELS, 1.0, 1.0)
    with pytest.raises(ValueError, match="flatten=True"):
        to_float(ALL_PIXELS, flatten=True)


# --- binarize_dynamic --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_binarize_dynamic_values_and_mean(dtype):
    probs = torch.linspace(0, 1, 101, dtype=dtype).expand(2000, 101)
    sample = binarize_dynamic(probs, generator=torch.Generator().manual_seed(1))
    assert sample.shape == probs.shape
    assert sample.dtype == dtype
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    # Per-column means over 2000 draws: standard error <= 0.5 / sqrt(2000) ~ 0.011.
    torch.testing.assert_close(sample.mean(0), probs[0], atol=0.06, rtol=0)


def test_binarize_dynamic_seeded_and_fresh():
    probs = torch.full((1000,), 0.5)
    first = binarize_dynamic(probs, generator=torch.Generator().manual_seed(3))
    again = binarize_dynamic(probs, generator=torch.Generator().manual_seed(3))
    other = binarize_dynamic(probs, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_binarize_dynamic_errors():
    with pytest.raises(TypeError, match="images01 must be a floating tensor"):
        binarize_dynamic(ALL_PIXELS)
    with pytest.raises(ValueError, match=r"images01 must lie in \[0, 1\]"):
        binarize_dynamic(torch.tensor([0.0, 1.5]))
    with pytest.raises(ValueError, match=r"images01 must lie in \[0, 1\]"):
        binarize_dynamic(torch.tensor([-0.5, 0.5]))
    assert binarize_dynamic(torch.empty(0, 784)).shape == (0, 784)


# --- train_validation_split --------------------------------------------------------------


def _toy(n: int) -> MNIST:
    images = torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1).expand(n, 28, 28).contiguous()
    return MNIST(images, torch.arange(n, dtype=torch.int64))


@pytest.mark.parametrize("validation", [0, 1, 3, 9])
def test_train_validation_split_takes_last(validation):
    train, valid = train_validation_split(_toy(10), validation)
    assert train.labels.tolist() == list(range(10 - validation))
    assert valid.labels.tolist() == list(range(10 - validation, 10))
    assert valid.images.shape == (validation, 28, 28)
    assert torch.equal(valid.images[:, 0, 0].long(), valid.labels)


@pytest.mark.parametrize(("validation", "error"), [(10, ValueError), (-1, ValueError), (2.0, TypeError)])
def test_train_validation_split_errors(validation, error):
    with pytest.raises(error, match="validation"):
        train_validation_split(_toy(10), validation)


def test_train_validation_split_needs_mnist():
    with pytest.raises(TypeError, match="data must be an MNIST"):
        train_validation_split((torch.zeros(3, 28, 28), torch.zeros(3)), 1)


# --- imports -----------------------------------------------------------------------------


def test_public_api():
    import pyro_bdl.data

    assert {
        "MNIST",
        "binarize_dynamic",
        "load_mnist",
        "mnist_root_from_env",
        "to_float",
        "train_validation_split",
    } <= set(pyro_bdl.data.__all__)


def test_import_is_lean():
    """Importing the data package loads neither Pyro nor Triton."""
    code = (
        "import sys; import pyro_bdl.data; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyro', 'triton', 'triton_kernels')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("num_train", "expected"), [(60_000, 10_000), (10_000, 1_666), (1_200, 200), (6, 1), (2, 1)])
def test_default_validation_size_is_the_standard_tail_or_a_sixth(num_train, expected):
    assert default_validation_size(num_train) == expected


def test_default_validation_size_needs_two_images():
    with pytest.raises(ValueError, match="at least 2"):
        default_validation_size(1)
