"""Stacked RBMs trained greedily, layer by layer (Hinton, Osindero & Teh 2006).

Layer ``l`` is an :class:`~pyro_bdl.models.RBM` whose visible units are the hidden units of
layer ``l - 1``; it is trained on the previous layer's hidden states given the data (sampled
once, ``h ~ p(h | v)``, so every layer sees binary data). :func:`train_rbm` is the one training
loop: ``pyro.infer.SVI`` with :class:`~pyro_bdl.inference.ContrastiveDivergence`, the model
scaled by ``1 / batch`` so the gradient is the batch mean, and an optional L1 penalty on the
weights entered as a global factor ``-l1 * sum |W|`` (a Laplace prior; outside the data plate).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from tqdm.auto import tqdm

from pyro_bdl.inference.contrastive_divergence import ContrastiveDivergence
from pyro_bdl.models.rbm import RBM, RBMGuide, bernoulli
from pyro_bdl.validation import check_int

L1_SITE = "l1_penalty"
"""The global factor site ``-l1 * sum |W|`` of :func:`train_rbm`."""


def train_rbm(rbm: RBM, data: torch.Tensor, *, epochs: int, batch_size: int = 100, lr: float = 0.01,
              momentum: float = 0.5, weight_decay: float = 0.0, l1: float = 0.0, k: int = 1,
              persistent: bool = True, seed: int = 0, progress: bool = False) -> list[float]:  # fmt: skip
    """Train ``rbm`` on ``data`` (rows, D) by CD-k / PCD-k through SVI; returns the CD loss per epoch.

    ``lr`` applies to the batch-mean gradient; ``l1`` is the weight of ``sum |W|`` per data row;
    ``progress`` shows a tqdm bar over the epochs with the last epoch's CD loss.
    """
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    if not l1 >= 0:
        raise ValueError(f"l1 must be >= 0, got {l1}")
    data = rbm.check_visible(data, "data")

    def model(x: torch.Tensor) -> None:
        if l1:
            pyro.factor(L1_SITE, -l1 * x.shape[0] * rbm.weight.abs().sum())
        rbm(x)

    loss = ContrastiveDivergence(k, persistent=persistent)
    optim = pyro.optim.SGD({"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
    svi = SVI(poutine.scale(model, scale=1.0 / batch_size), RBMGuide(), optim, loss)
    generator = torch.Generator().manual_seed(seed)
    history = []
    bar = tqdm(range(epochs), desc=rbm.site_name, unit="epoch", disable=not progress)
    for _ in bar:
        batches = data[torch.randperm(data.shape[0], generator=generator)].split(batch_size)
        history.append(sum(svi.step(batch) for batch in batches) / len(batches))
        bar.set_postfix(cd_loss=f"{history[-1]:.4g}")
    return history


class RBMStack:
    """RBMs ``layers[0] .. layers[-1]``, each one's visible units the previous one's hidden units."""

    def __init__(self, layers: Sequence[RBM]) -> None:
        if not layers or not all(isinstance(layer, RBM) for layer in layers):
            raise ValueError(f"layers must be a non-empty sequence of RBM, got {layers!r}")
        for lower, upper in itertools.pairwise(layers):
            if upper.data_dim != lower.hidden_dim:
                raise ValueError(f"layer {upper.site_name!r} has {upper.data_dim} visible units, the layer below "
                                 f"{lower.hidden_dim} hidden units")  # fmt: skip
        self.layers = list(layers)

    @torch.no_grad()
    def up(self, v: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Mean-field hidden probabilities (rows, H_depth) of layer ``depth`` (default: the top) given ``v``."""
        for layer in self.layers[: depth or len(self.layers)]:
            v = layer.hidden_probs(v)
        return v

    @torch.no_grad()
    def receptive_fields(self, depth: int) -> torch.Tensor:
        """Linear receptive fields (D, H_depth) of layer ``depth`` (1-based): ``W_1 W_2 ... W_depth``."""
        check_int("depth", depth)
        if depth > len(self.layers):
            raise ValueError(f"depth must be <= {len(self.layers)} layers, got {depth}")
        fields = self.layers[0].weight.detach()
        for layer in self.layers[1:depth]:
            fields = fields @ layer.weight.detach()
        return fields


def greedy_stack(data: torch.Tensor, hidden_dims: Sequence[int], *, epochs: int | Sequence[int], seed: int = 0,
                 **train_kwargs) -> RBMStack:  # fmt: skip
    """Train RBMs ``D -> hidden_dims[0] -> ...`` greedily on ``data`` (rows, D) binary; ``epochs`` for every layer,
    or one entry per layer; ``train_kwargs`` go to :func:`train_rbm`. Layer ``l`` is named ``rbm<l>``."""
    if not hidden_dims:
        raise ValueError("hidden_dims must name at least one layer, got none")
    per_layer = [epochs] * len(hidden_dims) if isinstance(epochs, int) else list(epochs)
    if len(per_layer) != len(hidden_dims):
        raise ValueError(f"epochs must be an int or one per layer ({len(hidden_dims)}), got {epochs!r}")
    layers, visible = [], data
    for index, (hidden, layer_epochs) in enumerate(zip(hidden_dims, per_layer, strict=True), start=1):
        torch.manual_seed(seed + index)
        rbm = RBM(visible.shape[1], check_int("hidden_dims entry", hidden), name=f"rbm{index}")
        train_rbm(rbm, visible, epochs=layer_epochs, seed=seed + index, **train_kwargs)
        layers.append(rbm)
        visible = bernoulli(rbm.hidden_probs(visible).detach())
    return RBMStack(layers)


__all__ = ["L1_SITE", "RBMStack", "greedy_stack", "train_rbm"]
