"""The predictive-mixture bound: the ELBO with each datum's likelihood averaged over the particles.

With K weight draws ``w_1..w_K ~ q`` per step, :class:`MixtureLikelihood_ELBO` maximises::

    L_K(q) = E_{w_1..K ~ q} [ sum_i log (1/K) sum_k p(y_i | x_i, w_k) ] - KL(q || p)

the "PAC^m" objective of Morningstar, Alemi & Dillon (AISTATS 2022; K = 2 is close to the
second-order bound of Masegosa, NeurIPS 2020). By Jensen's inequality ``L_1 = ELBO <= L_K <= L_{K+1}``,
and as K grows the data term tends to the log-likelihood of the posterior predictive
``(1/K) sum_k p(y | x, w_k)`` that predictions average. The ELBO scores each sampled network on
its own, so under a mean-field posterior every network is fitted to be confident alone and their
average comes out underconfident; ``L_K`` rewards the average instead. It is not the ELBO: its
optimum is not the KL projection of the posterior, and for K = 1 it is exactly the ELBO.

The KL and every site other than the observed one are TraceMeanField_ELBO's (analytic KL where
available), averaged over the K particles; the observed site's scaled log density (minibatch
scale ``N / B``, a likelihood weight, a mask) is replaced by the scaled per-datum mixture. The K
particles are traced one after another, then one backward pass runs through all of them.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import torch_item
from pyro.poutine.trace_struct import Trace
from pyro.util import warn_if_nan

from pyro_bdl.conventions import DATA_PLATE, OBS_SITE
from pyro_bdl.inference.traces import sum_to_particles_and_data

__all__ = ["MixtureLikelihood_ELBO"]


class MixtureLikelihood_ELBO(TraceMeanField_ELBO):  # noqa: N801 (Pyro's naming)
    """``TraceMeanField_ELBO`` whose observed site's per-datum likelihood is averaged over the particles.

    Args:
        num_particles: K, the weight draws per step; 1 gives the ELBO.
        obs_site: the observed site whose likelihood is mixed (the package's :data:`OBS_SITE`).
        data_plate: the plate over data points (:data:`DATA_PLATE`); the site's other batch dims
            are summed within each datum before the mixture.
        **kwargs: the rest of ``TraceMeanField_ELBO``'s arguments (``max_plate_nesting``, ...);
            ``vectorize_particles`` is not supported.

    ``loss`` and ``loss_and_grads`` return ``-L_K`` (module docstring) for one draw of the K particles.
    """

    def __init__(self, num_particles: int = 2, obs_site: str = OBS_SITE, data_plate: str = DATA_PLATE,
                 **kwargs) -> None:  # fmt: skip
        if kwargs.get("vectorize_particles"):
            raise ValueError("vectorize_particles: MixtureLikelihood_ELBO traces its particles one after another")
        if not isinstance(num_particles, int) or isinstance(num_particles, bool) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        super().__init__(num_particles=num_particles, **kwargs)
        self.obs_site, self.data_plate = obs_site, data_plate

    def _per_datum_log_likelihood(self, model_trace: Trace) -> tuple[torch.Tensor, float | torch.Tensor]:
        """The observed site's unmasked log density summed to ``(B,)`` (the data plate's dim), and its scale."""
        if self.obs_site not in model_trace.nodes or not model_trace.nodes[self.obs_site]["is_observed"]:
            raise ValueError(f"obs_site: the model has no observed site {self.obs_site!r}")
        site = model_trace.nodes[self.obs_site]
        dims = [frame.dim for frame in site["cond_indep_stack"] if frame.name == self.data_plate]
        if not dims:
            raise ValueError(f"data_plate: observed site {self.obs_site!r} is not inside a plate named "
                             f"{self.data_plate!r}")  # fmt: skip
        scale = site["scale"]
        if torch.is_tensor(scale) and scale.numel() > 1:
            raise ValueError(f"obs_site: {self.obs_site!r} carries a per-element scale; the mixture needs one "
                             "scale for the whole site (minibatch N / B, a likelihood weight)")  # fmt: skip
        log_prob, mask = site["unscaled_log_prob"], site["mask"]
        if mask is not None and mask is not True:  # masked entries drop out of their datum's likelihood
            log_prob = torch.where(mask, log_prob, log_prob.new_zeros(()))
        # One leading "particle" dim of size 1, left of every batch dim, for the shared reduction.
        particle_dim = min(dims[0], -log_prob.dim()) - 1
        return sum_to_particles_and_data(log_prob, particle_dim, dims[0])[0], scale

    def _mixture_surrogate(self, model, guide, args, kwargs) -> torch.Tensor:
        """``-L_K`` as a differentiable tensor, from K freshly traced particles."""
        elbo_terms, per_datum = 0.0, []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            _, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
            log_lik, scale = self._per_datum_log_likelihood(model_trace)
            # The particle's ELBO without its observed term (KL and any other site), and its log-likelihoods.
            obs_term = model_trace.nodes[self.obs_site]["log_prob_sum"]
            elbo_terms = elbo_terms + (-surrogate - obs_term) / self.num_particles
            per_datum.append(log_lik)
        stacked = torch.stack(torch.broadcast_tensors(*per_datum))  # (K, B)
        mixture = torch.logsumexp(stacked, dim=0) - math.log(self.num_particles)
        return -(elbo_terms + scale * mixture.sum())

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            loss = torch_item(self._mixture_surrogate(model, guide, args, kwargs))
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        surrogate = self._mixture_surrogate(model, guide, args, kwargs)
        warn_if_nan(surrogate, "loss")
        return surrogate

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        surrogate = self._mixture_surrogate(model, guide, args, kwargs)
        if getattr(surrogate, "requires_grad", False):
            surrogate.backward(retain_graph=self.retain_graph)
        loss = torch_item(surrogate)
        warn_if_nan(loss, "loss")
        return loss
