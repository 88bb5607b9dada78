"""Stacked RBMs: greedy training, receptive fields, the L1 factor and bad stacks."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_bdl.models import RBM, RBMStack, greedy_stack, train_rbm
from pyro_bdl.models.rbm import bernoulli

pytestmark = pytest.mark.usefixtures("pyro_state")


def stripes(rows: int = 200) -> torch.Tensor:
    """Rows of 12 bits: either the first or the last six on, with 5% of bits flipped."""
    torch.manual_seed(0)
    half = torch.randint(2, (rows, 1)).float()
    clean = torch.cat([half.expand(-1, 6), 1 - half.expand(-1, 6)], -1)
    return (clean + torch.bernoulli(torch.full_like(clean, 0.05))) % 2


def test_train_rbm_raises_the_exact_log_likelihood():
    data = stripes()
    rbm = RBM(12, 4)
    before = float(rbm.log_likelihood(data, rbm.exact_log_partition()).mean())
    history = train_rbm(rbm, data, epochs=30, batch_size=20, lr=0.05, persistent=False)
    after = float(rbm.log_likelihood(data, rbm.exact_log_partition()).mean())
    assert len(history) == 30 and after > before + 4  # uniform bits: -8.3 nats; the noisy stripes: -3.1


def test_greedy_stack_layers_chain_and_fields_multiply():
    stack = greedy_stack(stripes(), [6, 3], epochs=2, batch_size=20)
    assert [(layer.data_dim, layer.hidden_dim) for layer in stack.layers] == [(12, 6), (6, 3)]
    assert [layer.site_name for layer in stack.layers] == ["rbm1", "rbm2"]
    torch.testing.assert_close(
        stack.receptive_fields(2), stack.layers[0].weight.detach() @ stack.layers[1].weight.detach()
    )
    assert stack.up(stripes(5)).shape == (5, 3)


def test_progress_bar_names_each_layer_and_counts_its_epochs(capsys):
    """``progress=True`` (the examples' default) draws one bar per layer on stderr; the default draws none."""
    greedy_stack(stripes(), [6, 3], epochs=[2, 3], batch_size=20, progress=True)
    shown = capsys.readouterr().err
    assert "rbm1" in shown and "2/2" in shown and "rbm2" in shown and "3/3" in shown and "cd_loss" in shown
    greedy_stack(stripes(), [6, 3], epochs=2, batch_size=20)
    assert capsys.readouterr().err == ""


def test_epochs_per_layer_train_each_layer_that_long():
    """``epochs=[2, 5]``: one entry per layer, the same as training each layer alone for its epochs."""
    data = stripes()
    per_layer = greedy_stack(data, [6, 3], epochs=[2, 5], batch_size=20)
    fields = [layer.weight.detach().clone() for layer in per_layer.layers]
    pyro.clear_param_store()  # the same layer names again: fresh parameters
    torch.manual_seed(1)
    first = RBM(12, 6, name="rbm1")
    train_rbm(first, data, epochs=2, batch_size=20, seed=1)
    visible = bernoulli(first.hidden_probs(data).detach())
    torch.manual_seed(2)
    second = RBM(6, 3, name="rbm2")
    train_rbm(second, visible, epochs=5, batch_size=20, seed=2)
    torch.testing.assert_close(fields[0], first.weight.detach())
    torch.testing.assert_close(fields[1], second.weight.detach())


def test_l1_penalty_is_a_global_factor():
    """With ``l1`` (a factor outside the data plate, ``L1_SITE``) training shrinks the weights."""
    data = stripes()
    plain, sparse = RBM(12, 4, name="plain"), RBM(12, 4, name="sparse")
    sparse.load_state_dict(plain.state_dict())
    train_rbm(plain, data, epochs=10, batch_size=20, lr=0.1, seed=1)
    train_rbm(sparse, data, epochs=10, batch_size=20, lr=0.1, l1=0.05, seed=1)
    assert float(sparse.weight.detach().abs().sum()) < 0.8 * float(plain.weight.detach().abs().sum())


def test_bad_stacks_and_arguments():
    with pytest.raises(ValueError, match="layer 'b' has 5 visible units, the layer below 4 hidden units"):
        RBMStack([RBM(8, 4, name="a"), RBM(5, 2, name="b")])
    with pytest.raises(ValueError, match="hidden_dims must name at least one layer"):
        greedy_stack(stripes(), [], epochs=1)
    with pytest.raises(ValueError, match=r"epochs must be an int or one per layer \(2\), got \[1, 2, 3\]"):
        greedy_stack(stripes(), [6, 3], epochs=[1, 2, 3])
    with pytest.raises(ValueError, match="data must hold only 0 and 1"):
        train_rbm(RBM(12, 2), stripes() * 0.5, epochs=1)
    with pytest.raises(ValueError, match="depth must be <= 1 layers, got 2"):
        RBMStack([RBM(8, 4)]).receptive_fields(2)
