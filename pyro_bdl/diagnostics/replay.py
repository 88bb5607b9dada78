"""Replaying a model on posterior draws: pointwise log-likelihoods, deterministic sites, predictions.

:func:`inspect_model` traces the model once (:func:`pyro_bdl.inference.trace_layout` with no
guide) and checks what diagnostics need: an observed site, every observed site inside the
data plate, no subsampled plate, finite data where it is not masked out. The replay then
conditions the model on the draws (``poutine.condition``), vectorised: a chunk of
``particle_chunk`` draws goes into the plate :data:`~pyro_bdl.inference.traces.PARTICLE_PLATE`
at :attr:`TraceLayout.draw_dim <pyro_bdl.inference.traces.TraceLayout.draw_dim>`, left of
every plate and batch dimension of the model. The model must broadcast over such a leading
dimension, as Pyro's ``vectorize_particles`` requires (a global ``w`` of shape ``(D,)``
arrives as ``(draws, 1, ..., 1, D)``); ``vectorize=False`` replays one draw at a time instead.
(``Predictive(parallel=True)`` is not used for the replay: in pyro 1.9 it pads a draw to
``max_plate_nesting`` dims counting event dims too, so a global ``(D,)`` site arrives as
``(draws, D)`` and does not broadcast against the data plate like under ``vectorize_particles``.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import Predictive
from tqdm.auto import tqdm

from pyro_bdl.conventions import DATA_PLATE
from pyro_bdl.inference.traces import PARTICLE_PLATE, SiteInfo, TraceLayout, sum_to_particles_and_data, trace_layout
from pyro_bdl.validation import check_int


def _check_observed_finite(site: SiteInfo) -> None:
    value, mask = site.value, site.mask
    if not (torch.is_tensor(value) and value.is_floating_point()) or mask is False:
        return
    bad = ~torch.isfinite(value)
    if mask is not None and not isinstance(mask, bool):
        bad = bad & torch.as_tensor(mask, dtype=torch.bool).expand_as(bad)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"observed site {site.name!r} has {int(bad.sum())} non-finite value(s) that are not masked out "
            f"(first at index {first}); clean the data or mask those entries (poutine.mask / obs_mask)"
        )


def inspect_model(
    model: Callable, model_args: tuple = (), model_kwargs: Mapping | None = None, *, data_plate: str = DATA_PLATE
) -> TraceLayout:
    """Trace ``model(*model_args, **model_kwargs)`` once and describe its sites.

    Checks, each raising ``ValueError`` with the site or plate named: the model observes at
    least one site; every observed site lies in the plate ``data_plate``; no plate is
    subsampled; observed values are finite wherever they are not masked out. The trace runs
    with Pyro's validation off, so that a non-finite datum is reported here, by name, rather
    than as a support error inside the distribution.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    layout = trace_layout(model, None, *model_args, data_plate=data_plate, **dict(model_kwargs or {}))
    if not layout.observed:
        raise ValueError(
            "the model observes no site (no pyro.sample(..., obs=...)); pass the data the model conditions on"
        )
    if layout.data_dim is None:
        raise ValueError(
            f"data_plate={data_plate!r} is not a plate of the model; "
            f"its plates are {sorted(layout.plate_dims) or 'none'}"
        )
    for name, site in layout.observed.items():
        if not layout.in_data_plate(name):
            raise ValueError(
                f"observed site {name!r} is not inside the data plate {data_plate!r} (its plates: "
                f"{sorted(site.plates.values()) or 'none'}); a pointwise log-likelihood needs one term per datum"
            )
        _check_observed_finite(site)
    return layout


def _check_draws(draws: Mapping[str, torch.Tensor], sites: TraceLayout) -> int:
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


def _plate_shape(info: SiteInfo, num_draws: int, sites: TraceLayout) -> tuple[int, ...]:
    """Shape of ``num_draws`` values of a site inside the draws plate at ``sites.draw_dim``."""
    pad = -sites.draw_dim - 1 - info.batch_ndim
    return (num_draws,) + (1,) * pad + tuple(info.value_shape)


def _replayed_traces(
    model: Callable,
    draws: Mapping[str, torch.Tensor],
    sites: TraceLayout,
    model_args: tuple,
    model_kwargs: Mapping,
    *,
    vectorize: bool,
    particle_chunk: int | None,
    progress: bool,
) -> Iterator[tuple[int, poutine.Trace]]:
    """Traces of ``model`` conditioned on the draws: ``(chunk size, trace)`` per chunk.

    Vectorised traces hold a chunk of draws in a plate at ``sites.draw_dim``;
    unvectorised traces hold one draw each (chunk size 1, no draws plate).
    """
    num_draws = next(iter(draws.values())).shape[0]
    step = 1 if not vectorize else (num_draws if particle_chunk is None else particle_chunk)
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
        with pyro.plate(PARTICLE_PLATE, size, dim=sites.draw_dim):
            trace = poutine.trace(poutine.condition(model, data=data)).get_trace(*model_args, **model_kwargs)
        yield size, trace


def _with_draw_dim(tensor: torch.Tensor, size: int, sites: TraceLayout, vectorized: bool) -> torch.Tensor:
    """Left-pad a batch-shaped tensor to ``-draw_dim`` dims with the draws first."""
    ndim = -sites.draw_dim
    if not vectorized:
        tensor = tensor.reshape((1,) * (ndim - 1 - tensor.dim()) + tuple(tensor.shape)).unsqueeze(0)
    elif tensor.dim() < ndim:
        tensor = tensor.reshape((1,) * (ndim - tensor.dim()) + tuple(tensor.shape))
    if tensor.dim() != ndim or tensor.shape[0] not in (1, size):
        raise ValueError(
            f"a replayed site has batch shape {tuple(tensor.shape)}, which does not broadcast over {size} draws "
            f"at dim {sites.draw_dim}; the model must broadcast over leading dims (or pass vectorize=False)"
        )
    return tensor


def _site_log_likelihood(site: dict, size: int, sites: TraceLayout, vectorized: bool) -> torch.Tensor:
    """(size, N): the site's log-density summed over everything but the draws and the data plate."""
    log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])
    log_prob = _with_draw_dim(torch.as_tensor(log_prob), size, sites, vectorized)
    summed = sum_to_particles_and_data(log_prob, sites.draw_dim, sites.data_dim)
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
    data_plate: str = DATA_PLATE,
    vectorize: bool = True,
    particle_chunk: int | None = 100,
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
        model_args: the model's positional arguments, including the observed data.
        model_kwargs: the model's keyword arguments.
        data_plate: name of the plate over data points.
        vectorize: replay all draws of a chunk at once in a plate (the model must broadcast
            over leading dims), or one at a time.
        particle_chunk: draws per vectorised replay (``None``: all at once).
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
    return replay_log_likelihood(
        model,
        draws,
        sites,
        model_args,
        model_kwargs,
        vectorize=vectorize,
        particle_chunk=particle_chunk,
        progress=progress,
    )[0]


def replay_log_likelihood(
    model: Callable,
    draws: Mapping[str, torch.Tensor],
    sites: TraceLayout,
    model_args: tuple,
    model_kwargs: Mapping,
    *,
    vectorize: bool,
    particle_chunk: int | None,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(log_likelihood {obs: (S, N)}, deterministic {site: (S, *shape)})`` from one replay."""
    _check_draws(draws, sites)
    check_int("particle_chunk", particle_chunk, allow_none=True)
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
            particle_chunk=particle_chunk,
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


def posterior_predictive_draws(
    model: Callable,
    draws: Mapping[str, torch.Tensor],
    sites: TraceLayout,
    model_args: tuple,
    model_kwargs: Mapping,
    *,
    vectorize: bool,
    particle_chunk: int | None,
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
            particle_chunk=particle_chunk,
            progress=progress,
        )
        for size, trace in traces:
            for name, info in sites.observed.items():
                values[name].append(_site_values(trace.nodes[name], info, size))
    return {name: torch.cat(chunks) for name, chunks in values.items()}


def guide_draws(
    guide: Callable,
    sites: TraceLayout,
    num_samples: int,
    model_args: tuple,
    model_kwargs: Mapping,
    *,
    vectorize: bool,
    particle_chunk: int | None,
) -> dict[str, torch.Tensor]:
    """``{latent site: (num_samples, *value_shape)}`` drawn from the guide with ``Predictive``."""
    step = num_samples if (particle_chunk is None or not vectorize) else particle_chunk
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
