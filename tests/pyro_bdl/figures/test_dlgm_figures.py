"""The DLGM figures write valid PNGs and refuse mis-shaped input."""

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.image import imread

from pyro_bdl.figures import dlgm as figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 50
    return image


def test_figures_work_under_the_agg_backend(tmp_path):
    matplotlib.use("Agg")
    images = torch.rand(23, 784)
    read_png(figures.sample_grid(images, tmp_path / "a" / "samples.png", columns=5))
    read_png(figures.sample_grid(images.reshape(23, 28, 28).numpy(), tmp_path / "samples3d.png"))
    read_png(figures.latent_scatter(torch.randn(50, 2), torch.randint(0, 10, (50,)), tmp_path / "latent.png"))
    mask = torch.rand(4, 784) < 0.5
    read_png(figures.imputation_panels(images[:4], mask, images[4:8], tmp_path / "imputation.png"))
    history = [{"epoch": e, "train_elbo": -100.0 / e, "validation_elbo": -90.0 / e, "seconds": 1.0} for e in (1, 2, 3)]
    read_png(figures.elbo_curve(history, tmp_path / "elbo.png"))
    no_validation = [{**entry, "validation_elbo": None} for entry in history]
    read_png(figures.elbo_curve(no_validation, tmp_path / "elbo_train_only.png"))


def test_imputation_panel_marks_the_unobserved_pixels_red(tmp_path):
    original = np.zeros((1, 28, 28), dtype=np.float32)
    mask = np.zeros((1, 28, 28), dtype=bool)  # nothing observed: the middle row is all red
    image = read_png(figures.imputation_panels(original, mask, original, tmp_path / "red.png"))
    red = (image[..., 0] > 0.7) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    assert red.sum() > 500


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: figures.sample_grid(torch.rand(4, 100), p), "images must be"),
        (lambda p: figures.latent_scatter(torch.rand(5, 3), torch.zeros(5), p), r"z must be \(n, 2\)"),
        (lambda p: figures.latent_scatter(torch.rand(5, 2), torch.zeros(4), p), r"labels must be \(5,\)"),
        (lambda p: figures.imputation_panels(torch.rand(2, 784), torch.ones(3, 784), torch.rand(2, 784), p), "shape"),
        (lambda p: figures.elbo_curve([], p), "history"),
    ],
)
def test_bad_input_is_refused(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "bad.png")
