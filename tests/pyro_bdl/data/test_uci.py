"""The UCI standard-splits reader on the real files and on small broken folders.

The real data comes from the ``uci_root`` fixture (tests/conftest.py: ``$PYRO_BDL_DATA/uci``,
else the workspace's ``shared/data/uci``; skipped where absent, a failure under ``CI=true``).
Row counts and split counts are those documented in ``shared/data/README.md``.
"""

from pathlib import Path

import pytest
import torch

from pyro_bdl.data import UCIDataset, list_uci_datasets, load_uci, load_uci_dataset, uci_root_from_env
from pyro_bdl.data.mnist import DATA_ENV

# name: (rows, inputs, splits, hidden units)
EXPECTED = {
    "bostonHousing": (506, 13, 20, 50),
    "concrete": (1030, 8, 20, 50),
    "energy": (768, 8, 20, 50),
    "kin8nm": (8192, 8, 20, 50),
    "naval-propulsion-plant": (11934, 16, 20, 50),
    "power-plant": (9568, 4, 20, 50),
    "protein-tertiary-structure": (45730, 9, 5, 100),
    "wine-quality-red": (1599, 11, 20, 50),
    "yacht": (308, 6, 20, 50),
}


@pytest.fixture(scope="module")
def real_root(uci_root) -> Path:
    return uci_root


@pytest.fixture(scope="module")
def boston(real_root) -> UCIDataset:
    return load_uci_dataset(real_root, "bostonHousing")


# --- real data ---------------------------------------------------------------------------


def test_lists_the_nine_standard_sets(real_root):
    assert list_uci_datasets(real_root) == sorted(EXPECTED)


@pytest.mark.parametrize("name", ["bostonHousing", "yacht", "wine-quality-red", "naval-propulsion-plant"])
def test_shapes_and_disjoint_partitions(real_root, name):
    rows, inputs, splits, hidden = EXPECTED[name]
    data = load_uci_dataset(real_root, name)
    assert data.inputs.shape == (rows, inputs) and data.targets.shape == (rows,)
    assert data.num_splits == splits and data.n_hidden == hidden and data.n_epochs == 40
    for train, test in zip(data.train_indices, data.test_indices, strict=True):
        assert not set(train.tolist()) & set(test.tolist())
        assert len(train) + len(test) == rows  # the standard splits partition the rows
        assert 0.08 < len(test) / rows < 0.12


def test_first_boston_row_matches_the_original(boston):
    assert boston.inputs[0, 0].item() == pytest.approx(0.00632)
    assert boston.inputs[0, -1].item() == pytest.approx(4.98)
    assert boston.targets[0].item() == pytest.approx(24.0)


def test_normalisation_uses_training_statistics_only(boston):
    split = boston.split(3, dtype=torch.float64)
    train, test = boston.train_indices[3], boston.test_indices[3]
    assert split.x_train.shape == (len(train), 13) and split.x_test.shape == (len(test), 13)
    torch.testing.assert_close(split.x_train.mean(0), torch.zeros(13, dtype=torch.float64))
    torch.testing.assert_close(split.x_train.std(0, correction=0), torch.ones(13, dtype=torch.float64))
    assert split.y_train.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert split.y_train.std(correction=0).item() == pytest.approx(1.0)
    # the test rows reuse the training mean and std, so they are not exactly standardised
    x_mean = boston.inputs[train].mean(0)
    x_std = boston.inputs[train].std(0, correction=0)
    torch.testing.assert_close(split.x_test, (boston.inputs[test] - x_mean) / x_std)
    assert split.y_mean == pytest.approx(boston.targets[train].mean().item())
    assert split.y_std == pytest.approx(boston.targets[train].std(correction=0).item())
    assert split.y_test.mean().abs().item() > 1e-3
    torch.testing.assert_close(split.unnormalize_targets(split.y_test), boston.targets[test])
    torch.testing.assert_close(split.y_test_original, boston.targets[test])


def test_default_dtype_is_float32_and_load_uci_is_the_one_call_form(real_root, boston):
    split = load_uci(real_root, "bostonHousing", 7)
    assert split.x_train.dtype == torch.float32 and split.y_test_original.dtype == torch.float32
    assert (split.name, split.split, split.n_hidden, split.n_epochs) == ("bostonHousing", 7, 50, 40)
    torch.testing.assert_close(split.x_test, boston.split(7).x_test)


def test_constant_training_inputs_are_centred_not_scaled(real_root):
    data = load_uci_dataset(real_root, "naval-propulsion-plant")
    raw = data.inputs[data.train_indices[0]]
    constant = raw.amax(0) == raw.amin(0)
    naval = data.split(0, dtype=torch.float64)
    assert constant.any()  # naval has inputs that never change
    assert bool((naval.x_std[constant] == 1).all()) and bool((naval.x_train[:, constant] == 0).all())
    assert torch.isfinite(naval.x_test).all()


def test_unknown_name_and_split_are_refused(real_root, boston):
    with pytest.raises(ValueError, match=r"unknown UCI data set 'boston'.*bostonHousing"):
        load_uci_dataset(real_root, "boston")
    with pytest.raises(ValueError, match=r"0 <= split < 20"):
        boston.split(20)
    with pytest.raises(ValueError, match=r"0 <= split < 20"):
        boston.split(-1)
    with pytest.raises(TypeError, match="split must be an int"):
        boston.split(1.0)
    with pytest.raises(TypeError, match="floating dtype"):
        boston.split(0, dtype=torch.int64)


# --- small folders built here --------------------------------------------------------------


def write_dataset(root: Path, name: str = "toy", **overrides: str) -> Path:
    """A valid 10-row, 2-input data set with 2 splits; ``overrides`` replace file contents."""
    folder = root / name
    folder.mkdir(parents=True)
    files = {
        "data.txt": "\n".join(f" {i} {i * i}\t{2 * i + 1} " for i in range(10)) + "\n\n",
        "index_features.txt": "0\n1\n",
        "index_target.txt": "2\n",
        "n_splits.txt": "2",
        "n_hidden.txt": "50\n",
        "n_epochs.txt": "40\n",
        "index_train_0.txt": "\n".join(map(str, range(8))),
        "index_test_0.txt": "8\n9\n",
        "index_train_1.txt": "\n".join(map(str, range(2, 10))),
        "index_test_1.txt": "0\n1\n",
    }
    files.update(overrides)
    for file, text in files.items():
        if text is not None:
            (folder / file).write_text(text)
    return folder


def test_a_small_valid_folder_loads(tmp_path):
    write_dataset(tmp_path)
    split = load_uci(tmp_path, "toy", 1, dtype=torch.float64)
    assert split.x_train.shape == (8, 2) and split.y_test_original.tolist() == [1.0, 3.0]
    assert split.y_mean == pytest.approx(2 * 5.5 + 1)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"data.txt": "1 2 3\n4 5\n6 7 8\n"}, ValueError, r"data\.txt: not a whitespace-separated table"),
        ({"data.txt": "1 2 3\n4 x 6\n6 7 8\n"}, ValueError, r"data\.txt: not a whitespace-separated table"),
        ({"data.txt": "1 2 3\n4 nan 6\n6 7 8\n"}, ValueError, r"data\.txt: non-finite value .* row 1"),
        ({"index_features.txt": "0\n3\n"}, ValueError, r"index_features\.txt: column 3 out of range"),
        ({"index_features.txt": "0\n2\n"}, ValueError, r"index_target\.txt: target column 2 is also listed"),
        ({"index_features.txt": "0\n0.5\n"}, ValueError, r"index_features\.txt: expected integers"),
        ({"index_target.txt": "1\n2\n"}, ValueError, r"index_target\.txt: expected a single integer"),
        ({"n_splits.txt": "0"}, ValueError, r"n_splits\.txt: expected a positive integer"),
        ({"n_splits.txt": "3"}, FileNotFoundError, r"index_train_2\.txt"),
        ({"index_test_0.txt": "7\n8\n"}, ValueError, r"index_test_0\.txt: 1 row\(s\) also in index_train_0\.txt"),
        ({"index_test_1.txt": "0\n10\n"}, ValueError, r"index_test_1\.txt: row 10 out of range"),
        ({"index_test_1.txt": "0\n0\n"}, ValueError, r"index_test_1\.txt: repeated row"),
        ({"index_test_1.txt": ""}, ValueError, r"index_test_1\.txt: empty"),
        ({"n_epochs.txt": None}, FileNotFoundError, r"n_epochs\.txt"),
    ],
)
def test_broken_files_are_named_in_the_error(tmp_path, overrides, error, message):
    write_dataset(tmp_path, **overrides)
    with pytest.raises(error, match=message):
        load_uci_dataset(tmp_path, "toy")


def test_missing_root_and_constant_target_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="UCI folder"):
        list_uci_datasets(tmp_path / "absent")
    write_dataset(tmp_path, **{"data.txt": "\n".join(f"{i} {i} 5" for i in range(10))})
    with pytest.raises(ValueError, match="target is constant"):
        load_uci(tmp_path, "toy", 0)


def test_env_variable_names_the_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert uci_root_from_env() == tmp_path / "uci"
    monkeypatch.delenv(DATA_ENV)
    assert uci_root_from_env("somewhere") == Path("somewhere") / "uci"


# --- validation parts carved from a training split -----------------------------------------


def test_validation_split_holds_out_a_fifth_of_the_training_rows_and_never_a_test_row(boston):
    k = 3
    part = boston.validation_split(k, 0.2, seed=0)
    train_rows = boston.train_indices[k]
    assert part.x_train.shape[0] + part.x_test.shape[0] == train_rows.numel()
    assert part.x_test.shape[0] == round(0.2 * train_rows.numel())
    # every row of both parts is a training row of split k: match rows by their original targets
    targets = boston.targets
    part_targets = torch.cat([part.unnormalize_targets(part.y_train.double()), part.y_test_original.double()])
    assert torch.allclose(part_targets.sort().values, targets[train_rows].sort().values, atol=1e-4)
    # normalised with the training part's statistics only
    assert abs(float(part.y_train.double().mean())) < 1e-6
    assert abs(float(part.y_train.double().std(correction=0)) - 1) < 1e-5
    assert not torch.allclose(part.y_test.double().mean(), torch.zeros((), dtype=torch.float64), atol=1e-6)


def test_validation_split_is_fixed_by_the_seed_and_differs_between_seeds(boston):
    first, again, other = (boston.validation_split(0, seed=s) for s in (0, 0, 1))
    assert torch.equal(first.y_test_original, again.y_test_original)
    assert not torch.equal(first.y_test_original, other.y_test_original)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_validation_split_refuses_a_bad_fraction(boston, fraction):
    with pytest.raises(ValueError, match="fraction"):
        boston.validation_split(0, fraction)
