"""Contrastive divergence (CD-k, persistent CD) as a Pyro ELBO for models holding RBM factors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import torch_item
from pyro.poutine import Trace
from pyro.util import warn_if_nan

from pyro_bdl.models.rbm import ACTIVATION_KEY, RBM_KEY, VISIBLE_KEY
from pyro_bdl.validation import check_int


class ContrastiveDivergence(ELBO):
    """CD-k (Hinton 2002) or persistent CD (Tieleman 2008) for every RBM factor of a model.

    For an RBM factor ``-F(v)`` of a batch of ``B`` rows (site scale ``s``, ``N / B`` under
    :func:`~pyro_bdl.inference.fit`), the surrogate loss is::

        s * B * (mean_batch F(v_data) - mean_chains F(v_neg))

    with ``v_neg`` detached: ``k`` block-Gibbs sweeps from the batch itself (CD-k), or the
    persistent chains, advanced ``k`` sweeps per step (PCD; the statistics are taken before the
    last sweep, whose ``h`` reuses them). Each pre-activation ``b + v.W`` is computed once, so a
    step costs ``2k + 1`` forward matmuls and autograd's two. Its gradient is the CD estimate of
    ``-d log p(v_data) / d theta = dF(v_data)/d theta - E_model[dF/d theta]``: the positive phase
    by autograd through ``F``, the negative phase with the model expectation replaced by the
    Gibbs samples. Every other site of the model (and a reparameterised guide) contributes its
    ``Trace_ELBO`` term, so an RBM can be the prior of a larger model.

    **The value is not a bound.** :meth:`loss` returns the surrogate above (plus the other
    terms' negative ELBO): a difference of free energies that tends to 0 as the chains mix,
    and can be negative. Score a model with annealed importance sampling
    (:func:`~pyro_bdl.inference.ais_log_partition`), or monitor it with the pseudo-likelihood
    or the reconstruction error of :class:`~pyro_bdl.models.RBM`.

    Args:
        k: Gibbs sweeps per step, >= 1.
        persistent: keep one set of chains per RBM site across steps (PCD).
        num_chains: persistent chains per site (default: the first batch's rows); CD-k uses
            the batch rows as its chains and refuses this argument.
        num_particles: independent evaluations averaged per step.

    References:
        Hinton (2002), Training products of experts by minimizing contrastive divergence.
        Tieleman (2008), Training restricted Boltzmann machines using approximations to the
        likelihood gradient.
    """

    def __init__(self, k: int = 1, *, persistent: bool = False, num_chains: int | None = None,
                 num_particles: int = 1, max_plate_nesting: float = float("inf")) -> None:  # fmt: skip
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.k = check_int("k", k)
        if not isinstance(persistent, bool):
            raise ValueError(f"persistent must be a bool, got {persistent!r}")
        self.persistent = persistent
        self.num_chains = check_int("num_chains", num_chains, allow_none=True)
        if num_chains is not None and not persistent:
            raise ValueError(f"num_chains needs persistent=True (CD-k starts one chain per row), got {num_chains}")
        self.chains: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ persistent state
    def state_dict(self) -> dict[str, Any]:
        """The persistent chains (a copy), for checkpoints."""
        return {"chains": {name: chains.clone() for name, chains in self.chains.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore chains saved by :meth:`state_dict`."""
        if not isinstance(state, dict) or not isinstance(state.get("chains"), dict):
            raise ValueError(f"state must be a dict with a 'chains' dict, got {type(state).__name__}")
        self.chains = {name: chains.clone() for name, chains in state["chains"].items()}

    # ------------------------------------------------------------------ traces and particles
    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Trace, Trace]:
        """One model trace replayed against one guide trace, with log-probs computed."""
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def _negative_free_energy(self, name: str, site: dict) -> tuple[torch.Tensor, int]:
        """``(sum_chains F(v_neg), chains)`` of an RBM site, with one matmul per Gibbs half-sweep.

        CD-k: the first sweep starts from the site's own pre-activations ``b + v.W`` (already computed
        for ``F(v_data)``), then ``k - 1`` sweeps. PCD-k: ``k - 1`` sweeps of the persistent chains,
        the negative phase at their state ``v_neg``, whose pre-activations also draw the last sweep's
        ``h``; the advanced chains are kept for the next step (so the statistics of step t are taken
        at the chains' state before its last sweep: PCD with the sweep and the statistics swapped,
        k sweeps per step as before).
        """
        rbm, visible = site["infer"][RBM_KEY], site["infer"][VISIBLE_KEY].detach()
        if visible.dim() != 2:
            raise ValueError(f"the RBM site {name!r} must hold visible rows (batch, D), got {tuple(visible.shape)}")
        if not self.persistent:
            activation = site["infer"].get(ACTIVATION_KEY)
            negative = rbm.gibbs(visible, 1) if activation is None else rbm.sweep_from_activation(activation)
            if self.k > 1:
                negative = rbm.gibbs(negative, self.k - 1)
            return rbm.free_energy(negative).sum(), negative.shape[0]
        chains = self.chains.get(name)
        if chains is None:
            rows = self.num_chains or visible.shape[0]
            chains = visible[torch.arange(rows) % visible.shape[0]].clone()
        elif chains.shape[-1] != visible.shape[-1]:
            raise ValueError(f"persistent chains of site {name!r} have {chains.shape[-1]} units, "
                             f"the site {visible.shape[-1]}")  # fmt: skip
        if self.k > 1:
            chains = rbm.gibbs(chains, self.k - 1)
        activation = rbm.hidden_activation(chains)
        self.chains[name] = rbm.sweep_from_activation(activation)
        return rbm.free_energy(chains, activation).sum(), chains.shape[0]

    def _differentiable_loss_particle(self, model_trace: Trace, guide_trace: Trace) -> tuple[float, torch.Tensor]:
        """``(loss, surrogate)`` of one particle: the CD terms of the RBM sites, ``Trace_ELBO`` for the rest."""
        surrogate = torch.zeros(())
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            surrogate = surrogate - site["log_prob_sum"]  # -(-F(v_data)) summed and scaled, or -log p
            if RBM_KEY in site["infer"]:
                negative, chains = self._negative_free_energy(name, site)
                surrogate = surrogate - site["scale"] * site["infer"][VISIBLE_KEY].shape[0] / chains * negative
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample":
                continue
            _, score_function_term, entropy_term = site["score_parts"]
            if not is_identically_zero(score_function_term):
                raise ValueError(f"ContrastiveDivergence needs a reparameterised guide; site {name!r} is not")
            if not is_identically_zero(entropy_term):
                surrogate = surrogate + entropy_term.sum()
        return torch_item(surrogate), surrogate

    def _particles(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            yield self._differentiable_loss_particle(model_trace, guide_trace)

    # ------------------------------------------------------------------ the ELBO interface
    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The CD surrogate's value (a float; see the class docstring: not a bound). Advances PCD chains."""
        with torch.no_grad():
            loss = sum(value for value, _ in self._particles(model, guide, args, kwargs)) / self.num_particles
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        """The CD surrogate as a tensor whose gradient is the CD estimate."""
        surrogate = sum(value for _, value in self._particles(model, guide, args, kwargs)) / self.num_particles
        warn_if_nan(surrogate, "loss")
        return surrogate

    def loss_and_grads(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """Backward through the surrogate of each particle; returns the value (a float)."""
        loss = 0.0
        for value, surrogate in self._particles(model, guide, args, kwargs):
            loss += value / self.num_particles
            if surrogate.requires_grad:
                (surrogate / self.num_particles).backward(retain_graph=self.retain_graph)
        warn_if_nan(loss, "loss")
        return loss


__all__ = ["ContrastiveDivergence"]
