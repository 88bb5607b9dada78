"""A small DLGM learns real MNIST digits through ``fit``, and a resumed run ends where an uninterrupted one does."""

import pyro
import pytest
import torch

from pyro_bdl.data import binarize_dynamic, load_mnist, to_float
from pyro_bdl.inference import elbo_per_datum
from pyro_bdl.inference.fit import fit
from pyro_bdl.models import DLGM, DLGMGuide

pytestmark = pytest.mark.usefixtures("pyro_state")

@pytest.fixture(scope="module")
def digits(mnist_root):
    """2,000 training intensities in [0, 1] and 500 held-out digits binarised once (seeded), each (n, 784)."""
    images = to_float(load_mnist(mnist_root, "train", limit=2500).images, flatten=True)
    held_out = torch.bernoulli(images[2000:], generator=torch.Generator().manual_seed(1))
    return images[:2000], held_out


def dynamic(batch):
    return (binarize_dynamic(batch),)


def make_pair(flow=None):
    model = DLGM(784, (10,), ((100,),))
    return model, DLGMGuide.for_model(model, flow=flow)


def test_held_out_elbo_improves_by_a_clear_margin(digits):
    train, held_out = digits
    model, guide = make_pair()
    before = elbo_per_datum(model, guide, held_out, num_samples=2).mean().item()
    result = fit(model, guide, train, optim=pyro.optim.Adam({"lr": 3e-3}), epochs=4, batch_size=50,
                 transform_batch=dynamic, validation_data=held_out, progress=False)  # fmt: skip
    after = elbo_per_datum(model, guide, held_out, num_samples=2).mean().item()
    # untrained: about -784 log 2 = -543 nats; independent pixels at the training mean: about -206
    assert before < -450
    assert after > before + 300
    assert after > -195  # better than independent pixels
    assert [entry["epoch"] for entry in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["validation_elbo"] > result.history[0]["validation_elbo"]


@pytest.mark.parametrize("flow", [None, "iaf"])
def test_checkpoint_resume_continues_to_the_same_result(digits, tmp_path, flow):
    train = digits[0][:400]

    def run(epochs, path, init_seed):
        pyro.clear_param_store()
        pyro.set_rng_seed(init_seed)
        model, guide = make_pair(flow)
        pyro.set_rng_seed(0)
        fit(model, guide, train, optim=pyro.optim.Adam({"lr": 3e-3}), epochs=epochs, batch_size=100,
            transform_batch=dynamic, checkpoint_path=path, progress=False)  # fmt: skip
        return {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}

    straight = run(2, tmp_path / "straight.pt", init_seed=0)
    run(1, tmp_path / "interrupted.pt", init_seed=0)
    resumed = run(2, tmp_path / "interrupted.pt", init_seed=123)  # fresh modules: everything comes from the file
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0, msg=name)
