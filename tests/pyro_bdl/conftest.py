"""Pyro test setup shared by the Pyro-side tests."""

import pyro
import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """One intra-op thread: the Pyro-side models are tiny, and on a 2-core machine torch's
    thread pool made SVI steps several times slower than a single thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def pyro_state():
    """A clean param store, validation on, and a fixed seed; the store is cleared afterwards."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
