"""Example and benchmark tests: scripts change torch's global thread count, so put it back."""

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_threads():
    """The scripts set torch's thread count (``--threads``); restore it after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
