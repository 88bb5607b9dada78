"""The CD loss, the RBM and AIS with the binary-row kernels on equal the dense path (same seed), kernels used.

Float32 RBMs with sparse binary data and negative hidden biases, so every product of a step (the
data's and the chains' pre-activations, the sweep's ``h.W^T``, both gradient halves) is sparse
enough for the kernels; non-binary rows (validation off) fall back to the dense ops.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI

from pyro_bdl.inference import ContrastiveDivergence, ais_log_partition
from pyro_bdl.models import RBM, RBMGuide
from tests.triton_kernels.helpers import count_binary_row_calls
from triton_kernels import cpu_bernoulli
from triton_kernels import cpu_binary_rows as rows_module
from triton_kernels.cpu_binary_rows import binary_columns, binary_kernels

pytestmark = [
    pytest.mark.usefixtures("pyro_state"),
    pytest.mark.skipif(rows_module._jit() is None, reason="numba does not import here"),
]

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture
def calls(monkeypatch):
    """Counts of the compiled loops' calls. The Bernoulli draws stay on the compiled sampler whether the
    products' kernels are on or off (it follows the same switch), so both runs draw the same bits and only
    the products differ."""
    counts = count_binary_row_calls(monkeypatch)
    monkeypatch.setattr(rows_module, "MIN_MULTIPLY_ADDS", 0)  # these RBMs are small
    if cpu_bernoulli._jit() is not None:
        monkeypatch.setattr(cpu_bernoulli, "binary_kernels_enabled", lambda: True)
    return counts


def sparse_rbm() -> RBM:
    torch.manual_seed(0)
    rbm = RBM(40, 12, init_scale=0.3)
    with torch.no_grad():
        rbm.visible_bias.fill_(-2.0)
        rbm.hidden_bias.fill_(-2.5)
    return rbm


def train(kernels: bool, data: torch.Tensor, loss: ContrastiveDivergence, method: str) -> tuple:
    """Three steps of SGD on the CD loss (``loss_and_grads`` through SVI, or ``differentiable_loss``)."""
    pyro.clear_param_store()
    rbm = sparse_rbm()
    model = poutine.scale(rbm, scale=1.0 / 16)
    optimizer = torch.optim.SGD(rbm.parameters(), lr=0.1)
    svi = SVI(model, RBMGuide(), pyro.optim.SGD({"lr": 0.1}), loss)
    torch.manual_seed(1)
    with binary_kernels(kernels):
        for batch in data.split(16):
            if method == "svi":
                svi.step(batch)
            else:
                optimizer.zero_grad()
                loss.differentiable_loss(model, RBMGuide(), batch).backward()
                optimizer.step()
    return tuple(p.detach().clone() for p in rbm.params()), {k: c.clone() for k, c in loss.chains.items()}


@pytest.mark.parametrize("k,persistent,method", [(1, True, "svi"), (2, False, "svi"), (1, True, "autograd")])
def test_cd_steps_with_the_kernels_equal_the_dense_steps(calls, k, persistent, method):
    pyro.enable_validation(False)
    torch.manual_seed(2)
    data = torch.bernoulli(torch.full((48, 40), 0.13))
    got, chains = train(True, data, ContrastiveDivergence(k, persistent=persistent), method)
    used = dict(calls)
    expected, dense_chains = train(False, data, ContrastiveDivergence(k, persistent=persistent), method)
    assert calls == used  # nothing ran compiled with the kernels off
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)
    assert chains.keys() == dense_chains.keys()
    for name in chains:
        assert torch.equal(chains[name], dense_chains[name])
    # the chains' and the sweeps' products every step, the rows' once traces are recorded without a graph
    assert used["rows_sum"] >= 3 * (k + 1) + 2
    assert used["outer_add"] == 3 * 2  # both gradient halves, in .grad or in the closed form's backward


def test_non_binary_rows_take_the_dense_ops(calls):
    """A Bernoulli RBM fed probabilities with validation off: the rows' products run dense (the same
    numbers), only the chains' (binary draws) by the kernels."""
    pyro.enable_validation(False)
    torch.manual_seed(3)
    data = torch.rand(16, 40) * 0.3
    assert binary_columns(data) is None
    got, _ = train(True, data, ContrastiveDivergence(1, persistent=True), "svi")
    expected, _ = train(False, data, ContrastiveDivergence(1, persistent=True), "svi")
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)
    assert calls["outer_add"] == 1  # one step: the chains' half of the weight gradient; the rows' dense


def test_ais_with_the_kernels_equals_the_dense_ais(calls):
    rbm = sparse_rbm()
    results = []
    for kernels in (True, False):
        with binary_kernels(kernels):
            results.append(ais_log_partition(rbm, num_betas=60, num_runs=16,
                                             generator=torch.Generator().manual_seed(4)))  # fmt: skip
    assert calls["rows_sum"] > 60
    torch.testing.assert_close(results[0].log_weights, results[1].log_weights, rtol=1e-6, atol=1e-5)
    assert results[0].log_z == pytest.approx(results[1].log_z, abs=1e-5)
