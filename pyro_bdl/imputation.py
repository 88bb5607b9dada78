"""Missing-data imputation with an amortised model/guide pair (Rezende, Mohamed & Wierstra 2014).

Given observed entries ``x_obs`` (``obs_mask`` True) the unobserved ``x_miss`` are imputed by
the Markov chain of Rezende et al. 2014 (their missing-data imputation experiment), alternating the
encoder and the decoder::

    x_miss <- init
    repeat num_steps times:
        z      ~ q(z | x_obs, x_miss)              the guide, on the completed data
        x_miss ~ p(x_miss | z)                      the model's observation site "obs"

Its stationary distribution approximates the posterior predictive ``p(x_miss | x_obs)``: when
``q`` is the true posterior and the likelihood factorises over features given ``z`` (as in the
DLGM), the chain is a Gibbs sampler of ``p(z, x_miss | x_obs)``. The estimate returned is the average of
``E[x_miss | z]`` over the steps after ``burn_in``, with the last state of the chain as a sample.

Works with any generative model/guide pair of the package's call shape, ``f(x)``
(:mod:`pyro_bdl.conventions`), whose observation site ``"obs"`` holds the
whole row ``x_n`` as one event (e.g. :class:`~pyro_bdl.models.DLGM` / ``DLGMGuide``), and
whose observation distribution has a ``mean`` (not ``categorical``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pyro import poutine
from tqdm.auto import tqdm

from pyro_bdl.conventions import OBS_SITE
from pyro_bdl.validation import check_int, check_table


@dataclass
class ImputationResult:
    """The chain's output, each (data, features), observed entries equal to ``x``.

    Attributes:
        mean: ``x`` with missing entries replaced by the chain average of ``E[x_miss | z]``.
        sample: ``x`` with missing entries replaced by the chain's last state.
    """

    mean: torch.Tensor
    sample: torch.Tensor


def observation_distribution_given_guide(model, guide, x: torch.Tensor):
    """``p(x | z)`` at the model's site ``"obs"`` for one draw ``z ~ q(z | x)``: the site's distribution."""
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    if OBS_SITE not in model_trace.nodes:
        raise ValueError(f"the model has no observation site named {OBS_SITE!r}")
    return model_trace.nodes[OBS_SITE]["fn"]


@torch.no_grad()
def impute(
    model,
    guide,
    x: torch.Tensor,
    obs_mask: torch.Tensor,
    *,
    num_steps: int = 100,
    burn_in: int = 20,
    init: Literal["zeros", "mean"] | torch.Tensor = "zeros",
    progress: bool = False,
) -> ImputationResult:
    """Impute the entries of ``x`` where ``obs_mask`` is False (see the module docstring).

    Args:
        model: with ``guide`` a fitted pair, called as ``model(x)``.
        guide: called as ``guide(x)``.
        x: (data, features); values at missing entries are ignored (NaN allowed).
        obs_mask: (data, features) bool, True where observed.
        num_steps: chain length (one step = one encoder and one decoder pass).
        burn_in: steps discarded before averaging, ``0 <= burn_in < num_steps``.
        init: starting value of ``x_miss``: ``"zeros"``, ``"mean"`` (per-feature mean of the
            observed entries) or a tensor broadcastable to ``x``.
        progress: show a tqdm bar.

    Returns:
        :class:`ImputationResult` with ``mean`` and ``sample``, each (data, features).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a floating tensor of shape (data, features), got {getattr(x, 'shape', x)!r}")
    if obs_mask is None:
        raise TypeError("obs_mask must be a bool tensor of the shape of x, got None")
    check_table("x", x, x.shape[1], obs_mask)
    check_int("num_steps", num_steps)
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or not 0 <= burn_in < num_steps:
        raise ValueError(f"burn_in must be an int in [0, num_steps={num_steps}), got {burn_in!r}")
    if isinstance(init, torch.Tensor):
        start = init.to(x).expand_as(x)
    elif init == "zeros":
        start = torch.zeros_like(x)
    elif init == "mean":
        counts = obs_mask.sum(0).clamp(min=1)
        start = (torch.where(obs_mask, x, 0.0).sum(0) / counts).expand_as(x)
    else:
        raise ValueError(f"init must be 'zeros', 'mean' or a tensor, got {init!r}")
    current = torch.where(obs_mask, x, start)
    total = torch.zeros_like(x)
    for step in tqdm(range(num_steps), desc="impute", disable=not progress):
        fn = observation_distribution_given_guide(model, guide, current)
        draw = fn.sample()
        if draw.shape != x.shape:
            raise ValueError(f"the observation site must be (data, features) {tuple(x.shape)}, got {tuple(draw.shape)}")
        current = torch.where(obs_mask, x, draw.to(x))
        if step >= burn_in:
            total += fn.mean.to(x)
    mean = torch.where(obs_mask, x, total / (num_steps - burn_in))
    return ImputationResult(mean=mean, sample=current)
