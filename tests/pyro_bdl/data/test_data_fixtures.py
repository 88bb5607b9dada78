"""The data fixtures of tests/conftest.py: skip on a user's machine, fail under CI=true."""

import pytest

from tests.conftest import data_folder


def test_missing_data_skips_with_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_BDL_DATA", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=str(tmp_path / "uci")):
        data_folder("uci", "yacht/data.txt")


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_missing_data_fails_under_ci(tmp_path, monkeypatch, value):
    monkeypatch.setenv("PYRO_BDL_DATA", str(tmp_path))
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        data_folder("mnist", "train-images-idx3-ubyte.gz")


def test_present_data_is_returned(tmp_path, monkeypatch):
    (tmp_path / "uci" / "yacht").mkdir(parents=True)
    (tmp_path / "uci" / "yacht" / "data.txt").write_text("1 2\n")
    monkeypatch.setenv("PYRO_BDL_DATA", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert data_folder("uci", "yacht/data.txt") == tmp_path / "uci"
