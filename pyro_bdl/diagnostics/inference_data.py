"""ArviZ ``InferenceData`` from a Pyro MCMC run or from any SVI guide.

:func:`to_inference_data` is the one entry point. It returns the groups ``posterior``,
``log_likelihood`` (pointwise, one value per datum and observed site), ``posterior_predictive``
(optional) and ``observed_data`` (plus ``sample_stats`` for MCMC), with named dimensions:
plates give their names to the dimensions they cover (the data plate, ``"data"`` by default,
names the data dimension of every group), other dimensions are ``f"{site}_dim_{i}"``. So
``az.summary``, ``az.plot_posterior``, ``az.loo`` and ``az.compare`` work on the result.

* MCMC: ``az.from_pyro(mcmc, log_likelihood=False)`` gives posterior, divergences and
  observed data. Its own log-likelihood is not used: it takes ``fn.log_prob(obs)`` of the
  observed site as is, so an observation with event dimensions or extra plates (a
  ``(data, features)`` table) becomes ``data * features`` "observations" for LOO, masks
  (``poutine.mask``, ``obs_mask``) are ignored, and any failure only drops the group with a
  warning. Here the log-likelihood is computed by :func:`pointwise_log_likelihood`.
* SVI guides (autoguides or our own, amortised or not): ``pyro.infer.Predictive(guide,
  num_samples=...)`` draws the latents; the draws are independent, so they form **one chain**
  (``chain`` has size 1; ``r_hat`` is then NaN, ESS is meaningful).

The pointwise log-likelihood replays the model on the posterior draws, vectorised: the
draws go into an outer plate, left of every plate and batch dimension of the model, in
chunks of ``draws_chunk``. The model must broadcast over such a leading dimension, as
Pyro's ``vectorize_particles`` requires (a global ``w`` of shape ``(D,)`` arrives as
``(draws, 1, ..., 1, D)``); ``vectorize=False`` replays one draw at a time instead.
(``Predictive(parallel=True)`` is not used for the replay: in pyro 1.9 it pads a draw to
``max_plate_nesting`` dims counting event dims too, so a global ``(D,)`` site arrives as
``(draws, D)`` and does not broadcast against the data plate like under ``vectorize_particles``.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import MCMC, Predictive
from tqdm.auto import tqdm

from pyro_bdl.diagnostics import _arviz_compat
from pyro_bdl.diagnostics.model_sites import ModelSites, SiteInfo, inspect_model
from pyro_bdl.inference.scoring import sum_to_particles_and_data


class SingleChainWarning(UserWarning):
    """An MCMC run with one chain: R-hat cannot be estimated."""


def _check_draws(draws: Mapping[str, torch.Tensor], sites: ModelSites) -> int:
    """Check that ``draws`` has every latent site with shape ``(S, *value_shape)``; return S."""
    missing = [name for name in sites.latent if name not in draws]
    if missing:
        raise ValueError(
            f"posterior draws lack latent site(s) {missing}; every latent site of the model needs draws "
            "(a site without them would be drawn from the prior)"
        )
    unknown = [name for name in draws if name not in sites.latent]
    if unknown:
        raise ValueError(
            f"posterior draws name site(s) {unknown} that are not latent sites of the model "
            f"(latent sites: {list(sites.latent)})"
        )
    num_draws = None
    for name, value in draws.items():
        expected = sites.latent[name].value_shape
        if not torch.is_tensor(value) or value.dim() != len(expected) + 1 or value.shape[1:] != expected:
            got = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(f"draws[{name!r}] must be (draws, *{tuple(expected)}), got {got}")
        if num_draws is None:
            num_draws = value.shape[0]
        elif value.shape[0] != num_draws:
            raise ValueError(
                f"all draws need the same number of draws; {name!r} has {value.shape[0]}, others {num_draws}"
            )
    if not num_draws:
        raise ValueError("posterior draws are empty: need at least one draw per site")
    return num_draws


def _check_draws_chunk(draws_chunk: int | None) -> None:
    if draws_chunk is not None and (
        isinstance(draws_chunk, bool) or not isinstance(draws_chunk, int) or draws_chunk < 1
    ):
        raise ValueError(f"draws_chunk must be a positive int or None, got {draws_chunk!r}")


def _plate_shape(info: SiteInfo, num_draws: int, sites: ModelSites) -> tuple[int, ...]:
    """Shape of ``num_draws`` values of a site inside the draws plate at ``sites.vectorize_dim``."""
    pad = -sites.vectorize_dim - 1 - info.batch_ndim
    return (num_draws,) + (1,) * pad + tuple(info.value_shape)


def _replayed_traces(
    model: Callable,
    draws: Mapping[str, torch.Tensor],
    sites: ModelSites,
    model_args: tuple,
    model_kwargs: Mapping,
    *,
    vectorize: bool,
    draws_chunk: int | None,
    progress: bool,
) -> Iterator[tuple[int, poutine.Trace]]:
    """Traces of ``model`` conditioned on the draws: ``(chunk size, trace)`` per chunk.

    Vectorised traces hold a chunk of draws in a plate at ``sites.vectorize_dim``;
    unvectorised traces hold one draw each (chunk size 1, no draws plate).
    """
    num_draws = next(iter(draws.values())).shape[0]
    step = 1 if not vectorize else (num_draws if draws_chunk is None else draws_chunk)
    starts = range(0, num_draws, step)
    for start in tqdm(starts, desc="replaying model on draws", disable=not progress, leave=False):
        stop = min(start + step, num_draws)
        if not vectorize:
            data = {name: value[start] for name, value in draws.items()}
            yield 1, poutine.trace(poutine.condition(model, data=data)).get_trace(*model_args, **model_kwargs)
            continue
        size = stop - start
        data = {
            name: value[start:stop].reshape(_plate_shape(sites.latent[name], size, sites))
            for name, value in draws.items()
        }
        with pyro.plate("_posterior_draws", size, dim=sites.vectorize_dim):
            trace = poutine.trace(poutine.condition(model, data=data)).get_trace(*model_args, **model_kwargs)
        yield size, trace


def _with_draw_dim(tensor: torch.Tensor, size: int, sites: ModelSites, vectorized: bool) -> torch.Tensor:
    """Left-pad a batch-shaped tensor to ``-vectorize_dim`` dims with the draws first."""
    ndim = -sites.vectorize_dim
    if not vectorized:
        tensor = tensor.reshape((1,) * (ndim - 1 - tensor.dim()) + tuple(tensor.shape)).unsqueeze(0)
    elif tensor.dim() < ndim:
        tensor = tensor.reshape((1,) * (ndim - tensor.dim()) + tuple(tensor.shape))
    if tensor.dim() != ndim or tensor.shape[0] not in (1, size):
        raise ValueError(
            f"a replayed site has batch shape {tuple(tensor.shape)}, which does not broadcast over {size} draws "
            f"at dim {sites.vectorize_dim}; the model must broadcast over leading dims (or pass vectorize=False)"
        )
    return tensor


def _site_log_likelihood(site: dict, size: int, sites: ModelSites, vectorized: bool) -> torch.Tensor:
    """(size, N): the site's log-density summed over everything but the draws and the data plate."""
    log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])
    log_prob = _with_draw_dim(torch.as_tensor(log_prob), size, sites, vectorized)
    summed = sum_to_particles_and_data(log_prob, sites.vectorize_dim, sites.data_dim)
    return summed.expand(size, sites.num_data)


def _site_values(site: dict, info: SiteInfo, size: int) -> torch.Tensor:
    """(size, *value_shape): the site's value for each draw of a replayed trace.

    The value's trailing dims are the site's unbatched shape; its leading dims hold the
    draws (or broadcast over them). A deterministic site's event dims are its whole value,
    so its draws dim sits wherever the model's arithmetic put it; this reads both layouts.
    """
    value = site["value"].detach()
    shape = tuple(info.value_shape)
    if tuple(value.shape[value.dim() - len(shape) :]) != shape or value.numel() not in (
        size * math.prod(shape),
        math.prod(shape),
    ):
        raise ValueError(
            f"replayed site {info.name!r} has shape {tuple(value.shape)}, which does not hold {size} draw(s) of "
            f"shape {shape}; the model must broadcast over leading dims (or pass vectorize=False)"
        )
    return value.reshape((-1, *shape)).expand((size, *shape))


def pointwise_log_likelihood(
    model: Callable,
    draws: Mapping[str, torch.Tensor],
    model_args: tuple = (),
    model_kwargs: Mapping | None = None,
    *,
    data_plate: str = "data",
    vectorize: bool = True,
    draws_chunk: int | None = 100,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Log-likelihood of each datum under each posterior draw, per observed site.

    The model is replayed (``poutine.condition``) on the draws; each observed site's
    ``log_prob`` is masked by the site's mask (``poutine.mask`` / ``obs_mask``), left
    unscaled (``poutine.scale`` is ignored: this is the density of one datum), and summed
    over its event dimensions and over every plate except ``data_plate``.

    Args:
        model: the Pyro model.
        draws: ``{latent site: (draws, *value_shape)}`` for every latent site of the model.
        model_args, model_kwargs: the model's arguments, including the observed data.
        data_plate: name of the plate over data points.
        vectorize: replay all draws of a chunk at once in a plate (the model must broadcast
            over leading dims), or one at a time.
        draws_chunk: draws per vectorised replay (``None``: all at once).
        progress: show a tqdm bar over chunks.

    Returns:
        ``{observed site: (draws, N)}``, N the size of the data plate.

    Raises:
        ValueError: a latent site without draws, a draw of the wrong shape, no observed site,
            an observed site outside ``data_plate``, a subsampled plate, non-finite data, or
            a non-finite log-likelihood (the data point and draw are named).
    """
    model_kwargs = {} if model_kwargs is None else dict(model_kwargs)
    sites = inspect_model(model, model_args, model_kwargs, data_plate=data_plate)
    return _log_likelihood_and_more(
        model,
        draws,
        sites,
        model_args,
        model_kwargs,
        vectorize=vectorize,
        draws_chunk=draws_chunk,
        progress=progress,
    )[0]


def _log_likelihood_and_more(
    model: Callable,
    draws: Mapping[str, torch.Tensor],
    sites: ModelSites,
    model_args: tuple,
    model_kwargs: Mapping,
    *,
    vectorize: bool,
    draws_chunk: int | None,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(log_likelihood {obs: (S, N)}, deterministic {site: (S, *shape)})`` from one replay."""
    _check_draws(draws, sites)
    _check_draws_chunk(draws_chunk)
    log_lik: dict[str, list[torch.Tensor]] = {name: [] for name in sites.observed}
    determ: dict[str, list[torch.Tensor]] = {name: [] for name in sites.deterministic}
    with torch.no_grad():
        traces = _replayed_traces(
            model,
            draws,
            sites,
            model_args,
            model_kwargs,
            vectorize=vectorize,
            draws_chunk=draws_chunk,
            progress=progress,
        )
        for size, trace in traces:
            for name in sites.observed:
                log_lik[name].append(_site_log_likelihood(trace.nodes[name], size, sites, vectorize))
            for name, info in sites.deterministic.items():
                determ[name].append(_site_values(trace.nodes[name], info, size))
    result = {name: torch.cat(chunks) for name, chunks in log_lik.items()}
    for name, values in result.items():
        bad = ~torch.isfinite(values)
        if bad.any():
            draw, datum = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"log-likelihood of observed site {name!r} is not finite for {int(bad.any(0).sum())} data point(s), "
                f"first data point {datum} under draw {draw} (value {values[draw, datum].item()}); check the data "
                "and that the draws lie in the support of the model"
            )
    return result, {name: torch.cat(chunks) for name, chunks in determ.items()}


def _posterior_predictive(
    model: Callable,
    draws: Mapping[str, torch.Tensor],
    sites: ModelSites,
    model_args: tuple,
    model_kwargs: Mapping,
    *,
    vectorize: bool,
    draws_chunk: int | None,
    progress: bool,
) -> dict[str, torch.Tensor]:
    """``{observed site: (S, *value_shape)}``: new data drawn given each posterior draw.

    The model is replayed under ``poutine.uncondition``, so its observed sites are sampled
    instead of fixed to the data.
    """
    values: dict[str, list[torch.Tensor]] = {name: [] for name in sites.observed}
    with torch.no_grad():
        traces = _replayed_traces(
            poutine.uncondition(model),
            draws,
            sites,
            model_args,
            model_kwargs,
            vectorize=vectorize,
            draws_chunk=draws_chunk,
            progress=progress,
        )
        for size, trace in traces:
            for name, info in sites.observed.items():
                values[name].append(_site_values(trace.nodes[name], info, size))
    return {name: torch.cat(chunks) for name, chunks in values.items()}


def _guide_draws(
    guide: Callable,
    sites: ModelSites,
    num_samples: int,
    model_args: tuple,
    model_kwargs: Mapping,
    *,
    vectorize: bool,
    draws_chunk: int | None,
) -> dict[str, torch.Tensor]:
    """``{latent site: (num_samples, *value_shape)}`` drawn from the guide with ``Predictive``."""
    step = num_samples if (draws_chunk is None or not vectorize) else draws_chunk
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in sites.latent}
    for start in range(0, num_samples, step):
        size = min(step, num_samples - start)
        sampled = Predictive(guide, num_samples=size, parallel=vectorize)(*model_args, **model_kwargs)
        for name, info in sites.latent.items():
            if name not in sampled:
                raise ValueError(
                    f"the guide does not sample the model's latent site {name!r} (it samples {sorted(sampled)})"
                )
            value = sampled[name]
            if value.numel() != size * info.value_shape.numel():
                raise ValueError(
                    f"guide draws of site {name!r} have shape {tuple(value.shape)}, which does not hold {size} "
                    f"values of the model's shape {tuple(info.value_shape)}"
                )
            chunks[name].append(value.reshape((size, *info.value_shape)))
    return {name: torch.cat(values) for name, values in chunks.items()}


def _variable_dims(
    sites: ModelSites, user_dims: Mapping[str, Sequence[str]] | None, values: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, list[str]]]:
    """Dims of every variable of every group: plate names, else ``f"{site}_dim_{i}"``; user dims override."""
    user_dims = {} if user_dims is None else {name: list(value) for name, value in user_dims.items()}
    known = {**sites.latent, **sites.observed, **sites.deterministic}
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
        offset = 0 if group in _arviz_compat.DATA_GROUPS else 2
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
    data_plate: str = "data",
    coords: Mapping[str, Sequence] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    posterior_predictive: bool = True,
    vectorize: bool = True,
    draws_chunk: int | None = 100,
    progress: bool = False,
) -> Any:
    """ArviZ InferenceData of a Pyro MCMC run or an SVI guide.

    Args:
        posterior: a finished ``pyro.infer.MCMC`` run, or a guide (any callable taking the
            model's arguments: an autoguide or our own, amortised or not).
        model: the model; for MCMC defaults to the kernel's model, for a guide required.
        model_args, model_kwargs: the model's (and guide's) arguments, including the observed
            data. For MCMC the run's own arguments are used and these must stay empty.
        num_samples: draws from the guide (default 1000); not allowed for MCMC (every draw
            of every chain is used).
        data_plate: the plate over data points; every observed site must lie in it.
        coords: ``{dim: values}``, e.g. ``{"data": ids}``; each must match its dim's size.
        dims: ``{site: [dim names]}`` overriding the automatic names for that site (all of
            its dims, batch and event); the log-likelihood always has the single dim
            ``data_plate``.
        posterior_predictive: also draw the observed sites given each posterior draw.
        vectorize, draws_chunk, progress: see :func:`pointwise_log_likelihood`.

    Returns:
        ``arviz.InferenceData`` (ArviZ 0.x; ``xarray.DataTree`` on ArviZ 1.x) with groups
        ``posterior`` (latent and deterministic sites, ``(chain, draw, *shape)``),
        ``log_likelihood`` (``(chain, draw, data_plate)`` per observed site),
        ``posterior_predictive`` (if asked), ``observed_data``, and for MCMC ``sample_stats``.
        Guide draws form one chain.

    Raises:
        ValueError: see :func:`pointwise_log_likelihood`; also bad ``num_samples``,
            ``coords`` or ``dims``.
        TypeError: ``posterior`` neither an MCMC run nor callable.

    Warns:
        SingleChainWarning: an MCMC run with one chain (R-hat needs at least two).
    """
    model_kwargs = {} if model_kwargs is None else dict(model_kwargs)
    _check_draws_chunk(draws_chunk)
    if isinstance(posterior, MCMC):
        if model_args or model_kwargs:
            raise ValueError("model_args/model_kwargs must be empty for an MCMC run: its own arguments are used")
        if num_samples is not None:
            raise ValueError(f"num_samples is for guides; an MCMC run contributes all its draws (got {num_samples})")
        if posterior._samples is None:
            raise ValueError("the MCMC run has no draws yet: call mcmc.run(*args, **kwargs) first")
        model = posterior.kernel.model if model is None else model
        if model is None:
            raise ValueError("the MCMC kernel has no model (built from a potential_fn?); pass model=")
        model_args, model_kwargs = tuple(posterior._args), dict(posterior._kwargs)
        chains = posterior.num_chains
        if chains < 2:
            warnings.warn(
                "the MCMC run has 1 chain: R-hat (r_hat in az.summary, az.rhat) needs at least 2 chains and will be "
                "NaN; run MCMC with num_chains >= 2 to check convergence",
                SingleChainWarning,
                stacklevel=2,
            )
        draws = {
            name: value.reshape(-1, *value.shape[2:])
            for name, value in posterior.get_samples(group_by_chain=True).items()
        }
    elif callable(posterior):
        if model is None:
            raise ValueError("pass the model the guide approximates: to_inference_data(guide, model, ...)")
        num_samples = 1000 if num_samples is None else num_samples
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        chains = 1
        draws = None
    else:
        raise TypeError(
            f"posterior must be a pyro.infer.MCMC run or a guide (callable), got {type(posterior).__name__}"
        )

    sites = inspect_model(model, model_args, model_kwargs, data_plate=data_plate)
    if draws is None:
        draws = _guide_draws(
            posterior, sites, num_samples, model_args, model_kwargs, vectorize=vectorize, draws_chunk=draws_chunk
        )
    replay = {"vectorize": vectorize, "draws_chunk": draws_chunk, "progress": progress}
    log_lik, determ = _log_likelihood_and_more(model, draws, sites, model_args, model_kwargs, **replay)
    values: dict[str, dict[str, Any]] = {
        "posterior": {**_numpy(draws, chains), **_numpy(determ, chains)},
        "log_likelihood": _numpy(log_lik, chains),
        "observed_data": _numpy(sites.observed_values, None),
    }
    if posterior_predictive:
        predictive = _posterior_predictive(model, draws, sites, model_args, model_kwargs, **replay)
        values["posterior_predictive"] = _numpy(predictive, chains)
    all_dims = _variable_dims(sites, dims, values)
    coords = _check_coords(coords, all_dims, values)

    if isinstance(posterior, MCMC):
        from_run = _arviz_compat.mcmc_inference_data(
            posterior, {**all_dims["posterior"], **all_dims["observed_data"]}, coords
        )
        # the run's posterior holds the latent sites; the deterministic ones are merged in
        extra = {**values, "posterior": _numpy(determ, chains)}
        extra = {group: variables for group, variables in extra.items() if variables}
        inference_data = _arviz_compat.merge_groups(
            from_run, _arviz_compat.make_inference_data(extra, all_dims, coords)
        )
        attrs = {"inference": "mcmc", "num_chains": chains}
    else:
        inference_data = _arviz_compat.make_inference_data(values, all_dims, coords)
        attrs = {
            "inference": "svi",
            "guide": type(posterior).__name__,
            "note": "independent draws from the guide, stored as one chain",
        }
    _arviz_compat.set_group_attrs(inference_data, "posterior", attrs)
    return inference_data
