"""Checkpoints are written atomically and read back without running pickled code."""

import pytest
import torch

from pyro_bdl.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.randn(4, 5)}, "history": [{"loss": 0.5}], "best": float("inf")}
    save_checkpoint(tmp_path / "run" / "ckpt.pt", state)
    loaded = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    assert loaded["epoch"] == 3 and loaded["history"] == [{"loss": 0.5}] and loaded["best"] == float("inf")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["ckpt.pt"]  # no temporary files left


def test_failed_write_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot save this")

    with pytest.raises(RuntimeError, match="cannot save"):
        save_checkpoint(path, {"epoch": 2, "thing": Unpicklable()})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_arbitrary_objects_are_not_loaded(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": ValueError("not a tensor")}, path)
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_checkpoint(path)


def test_missing_file_and_non_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="checkpoint dict"):
        load_checkpoint(tmp_path / "tensor.pt")
