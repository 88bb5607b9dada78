"""ArviZ ``InferenceData`` from a Pyro MCMC run or from any SVI guide.

:func:`to_inference_data` is the one entry point. It returns the groups ``posterior``,
``log_likelihood`` (pointwise, one value per datum and observed site), ``posterior_predictive``
(optional), ``observed_data`` and, for MCMC, ``sample_stats`` (``diverging``), with named
dimensions: plates give their names to the dimensions they cover (the data plate names the
data dimension of every group), other dimensions are ``f"{site}_dim_{i}"``. So
``az.summary``, ``az.plot_posterior``, ``az.loo`` and ``az.compare`` work on the result.

* MCMC: the draws are ``mcmc.get_samples(group_by_chain=True)``, divergences come from
  ``mcmc.diagnostics()``; the model's arguments are passed by the caller (the run keeps
  them only in private attributes). ``az.from_pyro`` is not used: it reads those private
  attributes, and its log-likelihood takes ``fn.log_prob(obs)`` as is, so a
  ``(data, features)`` observation becomes ``data * features`` "observations" for LOO and
  masks are ignored.
* SVI guides (autoguides or our own, amortised or not): ``pyro.infer.Predictive(guide,
  num_samples=...)`` draws the latents; the draws are independent, so they form **one chain**
  (``chain`` has size 1; ``r_hat`` is then NaN, ESS is meaningful).

The log-likelihood group and local latents. PSIS-LOO and WAIC need, per datum, the
predictive density ``p(x_n | theta_s)`` given posterior draws ``theta_s`` of the *global*
parameters. For a model whose latents sit outside the data plate (GLMs, BNNs) that is the
pointwise log-likelihood of the replayed model (``log_likelihood="conditional"``,
:func:`~pyro_bdl.diagnostics.replay.pointwise_log_likelihood`). A model with local latents
``z_n`` inside the data plate (DLGM, BXPCA) gives instead ``log p(x_n | z_n^(s), theta_s)``,
the fit of a datum to its *own* posterior latent: not a predictive density, so
``az.loo`` / ``az.waic`` on it are meaningless (a DLGM on MNIST reads p_loo 1186 and k-hat
6.96). For such models ``log_likelihood="auto"`` leaves the group out with a
:class:`LocalLatentWarning`; ``log_likelihood="importance"`` fills it with the
importance-weighted marginal ``log (1/K) sum_k p(x_n, z_n^(k) | theta_s) / q(z_n^(k) | x_n)``
(:func:`~pyro_bdl.inference.importance_log_likelihood` with the global draws fixed), which
makes ``az.loo`` / ``az.waic`` meaningful.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer import MCMC
from tqdm.auto import tqdm

from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.diagnostics.replay import (
    guide_draws,
    inspect_model,
    posterior_predictive_draws,
    replay_log_likelihood,
)
from pyro_bdl.inference.scoring import importance_log_likelihood
from pyro_bdl.inference.traces import TraceLayout
from pyro_bdl.validation import check_choice, check_int

DATA_GROUPS = ("observed_data", "constant_data")
"""Groups without (chain, draw) dims."""

LOG_LIKELIHOOD_CHOICES = ("auto", "conditional", "importance", "none")
"""Values of ``to_inference_data(log_likelihood=...)``."""


class SingleChainWarning(UserWarning):
    """An MCMC run with one chain: R-hat cannot be estimated."""


class LocalLatentWarning(UserWarning):
    """The model has latent sites inside the data plate: its conditional log-likelihood is no basis for LOO/WAIC."""


def _marginal_log_likelihood(
    model: Callable,
    guide: Callable,
    draws: Mapping[str, torch.Tensor],
    sites: TraceLayout,
    model_args: tuple,
    model_kwargs: Mapping,
    *,
    importance_samples: int,
    particle_chunk: int | None,
    progress: bool,
) -> torch.Tensor:
    """(S, N): per draw s, the IW estimate of ``log p(x_n | theta_s)`` with ``importance_samples`` local draws.

    Model and guide are conditioned on the draw's global latents and every site outside
    the data plate is hidden, so only the local latents are integrated out.
    """

    def locally(fn: Callable, values: dict[str, torch.Tensor]) -> Callable:
        def outside(msg: dict) -> bool:
            return msg["type"] == "sample" and all(frame.name != sites.data_plate for frame in msg["cond_indep_stack"])

        return poutine.block(poutine.condition(fn, data=values), hide_fn=outside)

    global_names = [name for name in sites.latent if not sites.in_data_plate(name)]
    num_draws = next(iter(draws.values())).shape[0]
    rows = []
    for s in tqdm(range(num_draws), desc="importance log-likelihood", disable=not progress, leave=False):
        values = {name: draws[name][s] for name in global_names}
        rows.append(
            importance_log_likelihood(
                locally(model, values),
                locally(guide, values),
                *model_args,
                num_samples=importance_samples,
                data_plate=sites.data_plate,
                particle_chunk=particle_chunk or importance_samples,
                **model_kwargs,
            )
        )
    return torch.stack(rows)


def _log_likelihood_group(
    choice: str, sites: TraceLayout, guide: Callable | None, conditional: dict[str, torch.Tensor], marginal: Callable
) -> dict[str, torch.Tensor]:
    """The variables of the ``log_likelihood`` group for ``choice`` (see :func:`to_inference_data`)."""
    local = sites.local_latents
    if choice == "none":
        return {}
    if choice == "conditional" or (choice == "auto" and not local):
        return conditional
    if choice == "auto":
        warnings.warn(
            f"the model has latent site(s) {list(local)} inside the data plate {sites.data_plate!r}: log p(x_n | z_n) "
            "given a posterior draw of z_n is not a predictive density, so az.loo / az.waic on it would be "
            "meaningless; the log_likelihood group is left out. Pass log_likelihood='importance' for the "
            "importance-weighted marginal per datum (pyro_bdl.inference.importance_log_likelihood), or "
            "log_likelihood='conditional' to keep the conditional one anyway",
            LocalLatentWarning,
            stacklevel=3,
        )
        return {}
    if guide is None:
        raise ValueError(
            "log_likelihood='importance' needs a guide q(z_n | x_n) for the local latents; pass the guide as "
            "posterior (an MCMC run has none)"
        )
    if len(sites.observed) != 1:
        raise ValueError(
            f"log_likelihood='importance' gives one marginal per datum, so the model must observe one site; "
            f"it observes {list(sites.observed)}"
        )
    return {next(iter(sites.observed)): marginal()}


def _inference_data(
    groups: Mapping[str, Mapping[str, np.ndarray]],
    dims: Mapping[str, Mapping[str, Sequence[str]]],
    coords: Mapping[str, Sequence] | None,
) -> Any:
    """``arviz.InferenceData`` from ``{group: {variable: array}}``; sample groups hold ``(chain, draw, *shape)``."""
    import arviz as az

    datasets = {
        group: az.dict_to_dataset(
            dict(variables),
            library=None,
            coords=coords,
            dims=dims.get(group),
            default_dims=[] if group in DATA_GROUPS else None,
        )
        for group, variables in groups.items()
        if variables
    }
    return az.InferenceData(**datasets)


def _mcmc_draws(mcmc: MCMC) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """``({site: (chains * draws, *shape)}, diverging (chains, draws))`` of a finished run."""
    samples = mcmc.get_samples(group_by_chain=True)
    if not samples:
        raise ValueError("the MCMC run has no draws yet: call mcmc.run(*args, **kwargs) first")
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    diverging = np.zeros((num_chains, num_draws), dtype=bool)
    divergences = mcmc.diagnostics().get("divergences", {})
    for chain in range(num_chains):
        diverging[chain, divergences.get(f"chain {chain}", [])] = True
    draws = {name: value.reshape(-1, *value.shape[2:]) for name, value in samples.items()}
    return draws, diverging


def _variable_dims(
    sites: TraceLayout, user_dims: Mapping[str, Sequence[str]] | None, values: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, list[str]]]:
    """Dims of every variable of every group: plate names, else ``f"{site}_dim_{i}"``; user dims override."""
    user_dims = {} if user_dims is None else {name: list(value) for name, value in user_dims.items()}
    known = {name: site for name, site in sites.sites.items() if site.role != "auxiliary"}
    unknown = [name for name in user_dims if name not in known]
    if unknown:
        raise ValueError(f"dims names variable(s) {unknown} that the model does not have (it has {list(known)})")
    for name, names in user_dims.items():
        if len(names) != len(known[name].value_shape):
            raise ValueError(
                f"dims[{name!r}] must name {len(known[name].value_shape)} dim(s) for shape "
                f"{tuple(known[name].value_shape)}, got {names}"
            )
    site_dims = {name: user_dims.get(name, info.dim_names()) for name, info in known.items()}
    result = {}
    for group, variables in values.items():
        if group == "log_likelihood":
            result[group] = {name: [sites.data_plate] for name in variables}
        elif group == "sample_stats":
            result[group] = {name: [] for name in variables}
        else:
            result[group] = {name: site_dims[name] for name in variables}
    return result


def _check_coords(
    coords: Mapping[str, Sequence] | None, dims: Mapping[str, Mapping[str, list[str]]], values: Mapping
) -> dict[str, Sequence] | None:
    """Check that each coordinate names a dimension and has its length."""
    if coords is None:
        return None
    sizes: dict[str, int] = {}
    for group, variables in dims.items():
        offset = 0 if group in DATA_GROUPS else 2
        for name, names in variables.items():
            for axis, dim in enumerate(names):
                sizes[dim] = np.shape(values[group][name])[axis + offset]
    for dim, coord in coords.items():
        if dim not in sizes:
            raise ValueError(f"coords names dim {dim!r}, which no variable has; dims are {sorted(sizes)}")
        if len(coord) != sizes[dim]:
            raise ValueError(f"coords[{dim!r}] must have {sizes[dim]} values (the size of that dim), got {len(coord)}")
    return dict(coords)


def _numpy(tensors: Mapping[str, torch.Tensor], chains: int | None) -> dict[str, np.ndarray]:
    """Tensors to numpy, ``(chains * draws, ...)`` reshaped to ``(chains, draws, ...)`` when ``chains`` is given."""
    out = {}
    for name, value in tensors.items():
        array = value.detach().cpu().numpy()
        out[name] = array if chains is None else array.reshape((chains, -1, *array.shape[1:]))
    return out


def to_inference_data(
    posterior: MCMC | Callable,
    model: Callable | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping | None = None,
    *,
    num_samples: int | None = None,
    data_plate: str = DATA_PLATE,
    coords: Mapping[str, Sequence] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    posterior_predictive: bool = True,
    log_likelihood: str = "auto",
    importance_samples: int = 100,
    vectorize: bool = True,
    particle_chunk: int | None = 100,
    progress: bool = False,
) -> Any:
    """ArviZ InferenceData of a Pyro MCMC run or an SVI guide.

    Args:
        posterior: a finished ``pyro.infer.MCMC`` run, or a guide (any callable taking the
            model's arguments: an autoguide or our own, amortised or not).
        model: the model; for MCMC defaults to the kernel's model, for a guide required.
        model_args: the model's (and guide's) positional arguments, including the observed
            data; for MCMC the arguments the run was given (``mcmc.run(*model_args, **model_kwargs)``).
        model_kwargs: the model's (and guide's) keyword arguments, likewise.
        num_samples: draws from the guide (default 1000); not allowed for MCMC (every draw
            of every chain is used).
        data_plate: the plate over data points; every observed site must lie in it.
        coords: ``{dim: values}``, e.g. ``{"data": ids}``; each must match its dim's size.
        dims: ``{site: [dim names]}`` overriding the automatic names for that site (all of
            its dims, batch and event); the log-likelihood always has the single dim
            ``data_plate``.
        posterior_predictive: also draw the observed sites given each posterior draw.
        log_likelihood: what fills the ``log_likelihood`` group (see the module docstring):
            ``"conditional"`` the pointwise log-likelihood of the replayed model;
            ``"importance"`` the importance-weighted marginal per datum over the local
            latents, given each draw of the global ones (needs a guide);
            ``"none"`` no group; ``"auto"`` conditional when no latent lies in the data
            plate, else no group and a :class:`LocalLatentWarning`.
        importance_samples: K, guide draws per datum and posterior draw for ``"importance"``.
        vectorize: replay all draws of a chunk at once (see
            :func:`~pyro_bdl.diagnostics.replay.pointwise_log_likelihood`), or one at a time.
        particle_chunk: draws replayed at once (None: all).
        progress: show a tqdm bar over chunks.

    Returns:
        ``arviz.InferenceData`` with groups ``posterior`` (latent and deterministic sites,
        ``(chain, draw, *shape)``), ``log_likelihood`` (``(chain, draw, data_plate)`` per
        observed site, unless left out), ``posterior_predictive`` (if asked),
        ``observed_data``, and for MCMC ``sample_stats``. Guide draws form one chain.

    Raises:
        ValueError: see :func:`~pyro_bdl.diagnostics.replay.pointwise_log_likelihood`; also bad
            ``num_samples``, ``coords``, ``dims`` or ``log_likelihood``, and
            ``log_likelihood="importance"`` for an MCMC run.
        TypeError: ``posterior`` neither an MCMC run nor callable.

    Warns:
        SingleChainWarning: an MCMC run with one chain (R-hat needs at least two).
        LocalLatentWarning: ``log_likelihood="auto"`` on a model with local latents.
    """
    model_kwargs = {} if model_kwargs is None else dict(model_kwargs)
    check_int("particle_chunk", particle_chunk, allow_none=True)
    check_int("importance_samples", importance_samples)
    check_choice("log_likelihood", log_likelihood, LOG_LIKELIHOOD_CHOICES)
    diverging, guide = None, None
    if isinstance(posterior, MCMC):
        if num_samples is not None:
            raise ValueError(f"num_samples is for guides; an MCMC run contributes all its draws (got {num_samples})")
        model = posterior.kernel.model if model is None else model
        if model is None:
            raise ValueError("the MCMC kernel has no model (built from a potential_fn?); pass model=")
        draws, diverging = _mcmc_draws(posterior)
        chains = diverging.shape[0]
        if chains < 2:
            warnings.warn(
                "the MCMC run has 1 chain: R-hat (r_hat in az.summary, az.rhat) needs at least 2 chains and will be "
                "NaN; run MCMC with num_chains >= 2 to check convergence",
                SingleChainWarning,
                stacklevel=2,
            )
    elif callable(posterior):
        if model is None:
            raise ValueError("pass the model the guide approximates: to_inference_data(guide, model, ...)")
        num_samples = check_int("num_samples", 1000 if num_samples is None else num_samples)
        chains, draws, guide = 1, None, posterior
    else:
        raise TypeError(
            f"posterior must be a pyro.infer.MCMC run or a guide (callable), got {type(posterior).__name__}"
        )

    sites = inspect_model(model, model_args, model_kwargs, data_plate=data_plate)
    replay = {"vectorize": vectorize, "particle_chunk": particle_chunk}
    if draws is None:
        draws = guide_draws(posterior, sites, num_samples, model_args, model_kwargs, **replay)
    conditional, determ = replay_log_likelihood(model, draws, sites, model_args, model_kwargs, **replay,
                                                progress=progress)  # fmt: skip

    def marginal() -> torch.Tensor:
        return _marginal_log_likelihood(model, guide, draws, sites, model_args, model_kwargs,
                                        importance_samples=importance_samples, particle_chunk=particle_chunk,
                                        progress=progress)  # fmt: skip

    values: dict[str, dict[str, Any]] = {
        "posterior": {**_numpy(draws, chains), **_numpy(determ, chains)},
        "log_likelihood": _numpy(_log_likelihood_group(log_likelihood, sites, guide, conditional, marginal), chains),
        "observed_data": _numpy({name: site.value for name, site in sites.observed.items()}, None),
    }
    if posterior_predictive:
        predictive = posterior_predictive_draws(model, draws, sites, model_args, model_kwargs, **replay,
                                                progress=progress)  # fmt: skip
        values["posterior_predictive"] = _numpy(predictive, chains)
    if diverging is not None:
        values["sample_stats"] = {"diverging": diverging}
    all_dims = _variable_dims(sites, dims, values)
    coords = _check_coords(coords, all_dims, values)
    inference_data = _inference_data(values, all_dims, coords)
    if isinstance(posterior, MCMC):
        attrs = {"inference": "mcmc", "num_chains": chains}
    else:
        attrs = {"inference": "svi", "guide": type(posterior).__name__,
                 "note": "independent draws from the guide, stored as one chain"}  # fmt: skip
    inference_data.posterior.attrs.update(attrs)
    return inference_data
