"""The calibration figures (reliability diagram, interval coverage) write valid PNGs of the expected size."""

import struct

import pytest
import torch
from matplotlib.image import imread

from pyro_bdl.evaluation import reliability_bins
from pyro_bdl.figures.calibration import plot_interval_coverage, plot_reliability_diagram

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def bins():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(300, 10, generator=generator), dim=-1)
    labels = torch.randint(0, 10, (300,), generator=generator)
    return reliability_bins(probs, labels, num_bins=10)


def test_writes_a_valid_png(tmp_path, bins):
    path = plot_reliability_diagram(bins, tmp_path / "sub" / "reliability.png", title="random", dpi=50)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk follows the signature
    assert (width, height) == (225, 275)  # figsize (4.5, 5.5) inches at 50 dpi
    image = imread(path)
    assert image.shape[:2] == (275, 225)
    assert image.std() > 0.05  # something was drawn


def test_empty_bins_are_drawn_too(tmp_path):
    probs = torch.tensor([[0.95, 0.05], [0.97, 0.03]])
    bins = reliability_bins(probs, torch.tensor([0, 1]), num_bins=5)
    assert plot_reliability_diagram(bins, tmp_path / "two.png").read_bytes().startswith(PNG_SIGNATURE)


def test_bad_arguments_are_refused(tmp_path, bins):
    with pytest.raises(ValueError, match=r"\.png"):
        plot_reliability_diagram(bins, tmp_path / "reliability.pdf")
    with pytest.raises(TypeError, match="ReliabilityBins"):
        plot_reliability_diagram({"counts": []}, tmp_path / "reliability.png")


def test_interval_coverage_writes_a_valid_png(tmp_path):
    path = plot_interval_coverage([0.5, 0.9, 0.95], [0.4, 0.85, 0.97], tmp_path / "sub" / "coverage.png", dpi=50)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert struct.unpack(">II", data[16:24]) == (225, 225)  # figsize (4.5, 4.5) inches at 50 dpi
    assert imread(path).std() > 0.05


def test_interval_coverage_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="one length"):
        plot_interval_coverage([0.5, 0.9], [0.4], tmp_path / "coverage.png")
    with pytest.raises(ValueError, match="one length"):
        plot_interval_coverage([], [], tmp_path / "coverage.png")
    with pytest.raises(ValueError, match=r"\.png"):
        plot_interval_coverage([0.5], [0.4], tmp_path / "coverage.svg")
