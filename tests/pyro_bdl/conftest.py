"""Pyro test setup shared by the Pyro-side tests."""

import pyro
import pytest


@pytest.fixture
def pyro_state():
    """A clean param store, validation on, and a fixed seed; the store is cleared afterwards."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
