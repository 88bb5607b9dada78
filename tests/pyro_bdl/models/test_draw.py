"""DRAW: the filterbank against a loop over the paper's equations, shapes, ELBO, scoring, errors."""

import math

import pyro
import pytest
import torch
from pyro.infer import Predictive, Trace_ELBO, TraceMeanField_ELBO

from pyro_bdl.data import binarize_dynamic, load_mnist, to_float
from pyro_bdl.figures.draw import canvas_sequence
from pyro_bdl.inference import elbo_per_datum, importance_log_likelihood
from pyro_bdl.inference.fit import fit
from pyro_bdl.models.draw import DRAW, DRAWGuide, step_site
from pyro_bdl.models.draw_attention import GaussianRead, GaussianWrite, filterbanks, read_patch, write_patch

pytestmark = pytest.mark.usefixtures("pyro_state")

ROWS, COLS = 5, 7  # B x A, deliberately not square


def paper_filterbank(raw: list[float], rows: int, cols: int, n: int):
    """Eqs. 19-26 of Gregor et al. 2015, scalar by scalar, pixel coordinates a = 1..A, b = 1..B."""
    gx_raw, gy_raw, log_var, log_delta, log_gamma = raw
    gx = (cols + 1) / 2 * (gx_raw + 1)
    gy = (rows + 1) / 2 * (gy_raw + 1)
    delta = (max(cols, rows) - 1) / (n - 1) * math.exp(log_delta)
    var, gamma = math.exp(log_var), math.exp(log_gamma)
    fx = [[0.0] * cols for _ in range(n)]
    fy = [[0.0] * rows for _ in range(n)]
    for i in range(1, n + 1):
        mu_x = gx + (i - n / 2 - 0.5) * delta
        mu_y = gy + (i - n / 2 - 0.5) * delta
        for a in range(1, cols + 1):
            fx[i - 1][a - 1] = math.exp(-((a - mu_x) ** 2) / (2 * var))
        for b in range(1, rows + 1):
            fy[i - 1][b - 1] = math.exp(-((b - mu_y) ** 2) / (2 * var))
        zx, zy = sum(fx[i - 1]), sum(fy[i - 1])
        fx[i - 1] = [v / zx for v in fx[i - 1]]
        fy[i - 1] = [v / zy for v in fy[i - 1]]
    return fx, fy, gamma


def loop_read(image, fx, fy, gamma):
    """gamma FY x FX^T, entry (j, i) = gamma sum_b sum_a FY[j, b] x[b, a] FX[i, a]."""
    n = len(fx)
    return [
        [gamma * sum(fy[j][b] * image[b][a] * fx[i][a] for b in range(ROWS) for a in range(COLS)) for i in range(n)]
        for j in range(n)
    ]


def loop_write(patch, fx, fy, gamma):
    """1 / gamma FY^T w FX, entry (b, a) = 1 / gamma sum_j sum_i FY[j, b] w[j, i] FX[i, a]."""
    n = len(fx)
    return [
        [sum(fy[j][b] * patch[j][i] * fx[i][a] for j in range(n) for i in range(n)) / gamma for a in range(COLS)]
        for b in range(ROWS)
    ]


@pytest.mark.parametrize("n", [2, 3])
def test_filterbank_read_and_write_match_the_papers_equations(n):
    torch.manual_seed(n)
    raw = torch.randn(4, 5, dtype=torch.float64) * 0.5
    images = torch.rand(4, ROWS, COLS, dtype=torch.float64)
    patches = torch.randn(4, n, n, dtype=torch.float64)
    fx, fy, gamma = filterbanks(raw, (ROWS, COLS), n)
    assert fx.shape == (4, n, COLS) and fy.shape == (4, n, ROWS)
    read = gamma[:, None, None] * read_patch(images, fx, fy)
    written = write_patch(patches, fx, fy) / gamma[:, None, None]
    for k in range(4):
        fx_ref, fy_ref, gamma_ref = paper_filterbank(raw[k].tolist(), ROWS, COLS, n)
        torch.testing.assert_close(fx[k], torch.tensor(fx_ref, dtype=torch.float64))
        torch.testing.assert_close(fy[k], torch.tensor(fy_ref, dtype=torch.float64))
        expected = loop_read(images[k].tolist(), fx_ref, fy_ref, gamma_ref)
        torch.testing.assert_close(read[k], torch.tensor(expected, dtype=torch.float64))
        expected = loop_write(patches[k].tolist(), fx_ref, fy_ref, gamma_ref)
        torch.testing.assert_close(written[k], torch.tensor(expected, dtype=torch.float64))


def test_read_and_write_modules_use_their_linear_map_of_h():
    hidden, n = 6, 3
    reader = GaussianRead((ROWS, COLS), 2, hidden).double()
    h = torch.randn(hidden, dtype=torch.float64)
    x, x_hat = torch.rand(ROWS * COLS, dtype=torch.float64), torch.randn(ROWS * COLS, dtype=torch.float64)
    fx, fy, gamma = paper_filterbank(reader.params(h).tolist(), ROWS, COLS, 2)
    expected = [v for image in (x, x_hat) for row in loop_read(image.view(ROWS, COLS).tolist(), fx, fy, gamma)
                for v in row]  # fmt: skip
    torch.testing.assert_close(reader(x, x_hat, h), torch.tensor(expected, dtype=torch.float64))
    pyro.clear_param_store()  # both modules, unnamed here, would share the name "params.weight"
    writer = GaussianWrite((ROWS, COLS), n, hidden).double()
    fx, fy, gamma = paper_filterbank(writer.params(h).tolist(), ROWS, COLS, n)
    w = writer.content(h).view(n, n).tolist()
    expected = torch.tensor(loop_write(w, fx, fy, gamma), dtype=torch.float64).flatten()
    torch.testing.assert_close(writer(h), expected)


def small_pair(attention: bool, steps: int = 3, image_size=(ROWS, COLS)):
    model = DRAW(image_size, steps=steps, z_dim=4, hidden_dim=16, attention=attention, write_size=3)
    return model, DRAWGuide(model, read_size=2)


@pytest.mark.parametrize("attention", [False, True])
def test_canvas_shapes_and_finite_elbo(attention):
    model, guide = small_pair(attention)
    x = torch.bernoulli(torch.full((6, ROWS * COLS), 0.3))
    canvases = guide(x)
    assert len(canvases) == 3 and all(c.shape == (6, ROWS * COLS) for c in canvases)
    zs = [torch.randn(2, 6, 4) for _ in range(3)]  # a particle dimension broadcasts through
    assert model.canvases(zs).shape == (3, 2, 6, ROWS * COLS)
    for loss in (Trace_ELBO(), TraceMeanField_ELBO()):
        assert math.isfinite(loss.loss(model, guide, x))
    assert model(None, num_data=5).shape == (5, ROWS * COLS)
    mask = torch.rand(6, ROWS * COLS) < 0.5
    assert math.isfinite(Trace_ELBO().loss(model, guide, torch.where(mask, x, torch.nan), obs_mask=mask))


@pytest.mark.parametrize("attention", [False, True])
def test_importance_scores_and_predictive(attention):
    model, guide = small_pair(attention)
    x = torch.bernoulli(torch.full((5, ROWS * COLS), 0.3))
    elbo = elbo_per_datum(model, guide, x, num_samples=50, particle_chunk=25)
    iw = importance_log_likelihood(model, guide, x, num_samples=50, particle_chunk=25)
    assert elbo.shape == iw.shape == (5,) and torch.isfinite(iw).all()
    assert (iw > elbo).all()  # log of a mean of 50 weights vs the mean of their logs
    samples = Predictive(model, guide=guide, num_samples=4, parallel=True)(x)
    assert samples["obs"].shape == (4, 5, ROWS * COLS)
    assert samples[step_site(3)].shape == (4, 5, 4)
    prior = Predictive(model, num_samples=2)(None, num_data=3)
    assert set(prior) == {"z_1", "z_2", "z_3", "obs"} and prior["obs"].shape == (2, 3, ROWS * COLS)


@pytest.fixture(scope="module")
def digits(mnist_root):
    """600 training intensities and 200 held-out digits binarised once (seeded), each (n, 784)."""
    images = to_float(load_mnist(mnist_root, "train", limit=800).images, flatten=True)
    return images[:600], torch.bernoulli(images[600:], generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("attention", [False, True])
def test_elbo_improves_on_real_digits(digits, attention, tmp_path):
    train, held_out = digits
    model = DRAW(steps=3, z_dim=8, hidden_dim=32, attention=attention)
    guide = DRAWGuide(model)
    before = elbo_per_datum(model, guide, held_out, num_samples=2).mean().item()
    result = fit(model, guide, train, optim=pyro.optim.Adam({"lr": 3e-3}), epochs=3, batch_size=50,
                 loss=TraceMeanField_ELBO(), transform_batch=lambda b: (binarize_dynamic(b),),
                 validation_data=held_out, progress=False)  # fmt: skip
    after = elbo_per_datum(model, guide, held_out, num_samples=2).mean().item()
    assert before < -450  # about -784 log 2 = -543 untrained
    assert after > before + 200
    assert result.history[-1]["validation_elbo"] > result.history[0]["validation_elbo"]
    with torch.no_grad():
        canvases = torch.stack([model.mean(c) for c in guide(held_out[:3])])
    assert canvas_sequence(canvases, tmp_path / "canvas.png").stat().st_size > 0


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("build", "error", "words"),
    [
        (lambda: DRAW((28,)), ValueError, "image_size"),
        (lambda: DRAW((28, 0)), ValueError, "image_size"),
        (lambda: DRAW(steps=0), ValueError, "steps"),
        (lambda: DRAW(z_dim=2.5), (TypeError, ValueError), "z_dim"),
        (lambda: DRAW(attention="yes"), TypeError, "attention"),
        (lambda: DRAW(write_size=0), ValueError, "write_size"),
        (lambda: DRAW(observation="categorical"), ValueError, "observation"),
        (lambda: DRAW(observation="nope"), ValueError, "nope"),
        (lambda: DRAWGuide(object()), TypeError, "model"),
        (lambda: DRAWGuide(DRAW(), read_size=0), ValueError, "read_size"),
        (lambda: DRAWGuide(DRAW(attention=False), hidden_dim=0), ValueError, "hidden_dim"),
    ],
)
def test_bad_arguments_give_one_line_errors(build, error, words):
    with pytest.raises(error) as excinfo:
        build()
    assert words in one_line(excinfo)


def test_bad_data_give_one_line_errors(tmp_path):
    model, guide = small_pair(False)
    with pytest.raises(ValueError) as excinfo:
        guide(None)
    assert "x" in one_line(excinfo)
    with pytest.raises(ValueError) as excinfo:
        model(torch.zeros(3, 10))
    assert "x" in one_line(excinfo)
    with pytest.raises(ValueError) as excinfo:
        model.canvases([torch.zeros(2, 4)])
    assert "zs" in one_line(excinfo)
    with pytest.raises(ValueError) as excinfo:
        canvas_sequence(torch.zeros(3, 2, 10), tmp_path / "bad.png")
    assert "canvases" in one_line(excinfo)
