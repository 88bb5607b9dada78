"""Missing-data imputation with an amortised model/guide pair (Rezende, Mohamed & Wierstra 2014).

Given observed entries ``y_obs`` (``obs_mask`` True) the unobserved ``y_miss`` are imputed by
the Markov chain of Rezende et al. 2014 (their missing-data imputation experiment), alternating the
encoder and the decoder::

    y_miss <- init
    repeat num_steps times:
        z      ~ q(z | y_obs, y_miss)              the guide, on the completed data
        y_miss ~ p(y_miss | z)                      the model's observation site "obs"

Its stationary distribution approximates the posterior predictive ``p(y_miss | y_obs)``: when
``q`` is the true posterior and the likelihood factorises over features given ``z`` (as in the
DLGM), the chain is a Gibbs sampler of ``p(z, y_miss | y_obs)``. The estimate returned is the average of
``E[y_miss | z]`` over the steps after ``burn_in``, with the last state of the chain as a sample.

Works with any model/guide called as ``f(y)`` whose observation site ``"obs"`` holds the
whole row ``y_n`` as one event (e.g. :class:`~pyro_bdl.models.DLGM` / ``DLGMGuide``), and
whose observation distribution has a ``mean`` (not ``categorical``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pyro import poutine
from tqdm.auto import tqdm

OBS_SITE = "obs"


@dataclass
class ImputationResult:
    """The chain's output, each (data, features), observed entries equal to ``y``.

    Attributes:
        mean: ``y`` with missing entries replaced by the chain average of ``E[y_miss | z]``.
        sample: ``y`` with missing entries replaced by the chain's last state.
    """

    mean: torch.Tensor
    sample: torch.Tensor


def _check(y: torch.Tensor, obs_mask: torch.Tensor, num_steps: int, burn_in: int) -> None:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.dim() != 2:
        raise ValueError(f"y must be a floating tensor of shape (data, features), got {getattr(y, 'shape', y)}")
    if not isinstance(obs_mask, torch.Tensor) or obs_mask.dtype != torch.bool:
        raise TypeError(f"obs_mask must be a bool tensor of the shape of y, got {getattr(obs_mask, 'dtype', obs_mask)}")
    if obs_mask.shape != y.shape:
        raise ValueError(f"obs_mask must have the shape of y {tuple(y.shape)}, got {tuple(obs_mask.shape)}")
    if bool((torch.isnan(y) & obs_mask).any()):
        raise ValueError("y contains NaN at observed entries (obs_mask True)")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not isinstance(burn_in, int) or not 0 <= burn_in < num_steps:
        raise ValueError(f"burn_in must be an int in [0, num_steps={num_steps}), got {burn_in!r}")


def observation_distribution_given_guide(model, guide, y: torch.Tensor):
    """``p(y | z)`` at the model's site ``"obs"`` for one draw ``z ~ q(z | y)``: the site's distribution."""
    guide_trace = poutine.trace(guide).get_trace(y)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(y)
    if OBS_SITE not in model_trace.nodes:
        raise ValueError(f"the model has no observation site named {OBS_SITE!r}")
    return model_trace.nodes[OBS_SITE]["fn"]


@torch.no_grad()
def impute(
    model,
    guide,
    y: torch.Tensor,
    obs_mask: torch.Tensor,
    *,
    num_steps: int = 100,
    burn_in: int = 20,
    init: Literal["zeros", "mean"] | torch.Tensor = "zeros",
    progress: bool = False,
) -> ImputationResult:
    """Impute the entries of ``y`` where ``obs_mask`` is False (see the module docstring).

    Args:
        model, guide: a fitted pair called as ``model(y)`` / ``guide(y)``.
        y: (data, features); values at missing entries are ignored (NaN allowed).
        obs_mask: (data, features) bool, True where observed.
        num_steps: chain length (one step = one encoder and one decoder pass).
        burn_in: steps discarded before averaging, ``0 <= burn_in < num_steps``.
        init: starting value of ``y_miss``: ``"zeros"``, ``"mean"`` (per-feature mean of the
            observed entries) or a tensor broadcastable to ``y``.
        progress: show a tqdm bar.

    Returns:
        :class:`ImputationResult` with ``mean`` and ``sample``, each (data, features).
    """
    _check(y, obs_mask, num_steps, burn_in)
    if isinstance(init, torch.Tensor):
        start = init.to(y).expand_as(y)
    elif init == "zeros":
        start = torch.zeros_like(y)
    elif init == "mean":
        counts = obs_mask.sum(0).clamp(min=1)
        start = (torch.where(obs_mask, y, 0.0).sum(0) / counts).expand_as(y)
    else:
        raise ValueError(f"init must be 'zeros', 'mean' or a tensor, got {init!r}")
    current = torch.where(obs_mask, y, start)
    total = torch.zeros_like(y)
    for step in tqdm(range(num_steps), desc="impute", disable=not progress):
        fn = observation_distribution_given_guide(model, guide, current)
        draw = fn.sample()
        if draw.shape != y.shape:
            raise ValueError(f"the observation site must be (data, features) {tuple(y.shape)}, got {tuple(draw.shape)}")
        current = torch.where(obs_mask, y, draw.to(y))
        if step >= burn_in:
            total += fn.mean.to(y)
    mean = torch.where(obs_mask, y, total / (num_steps - burn_in))
    return ImputationResult(mean=mean, sample=current)
