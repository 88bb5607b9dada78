"""What a Pyro model samples and observes, read from one trace: the sites diagnostics work on.

:func:`inspect_model` runs the model once (latents drawn from the prior, nothing recorded
in the param store beyond what the model itself creates) and returns a :class:`ModelSites`
with the latent, observed and deterministic sites, their shapes, their plates and the data
plate. Both :mod:`pyro_bdl.diagnostics.inference_data` and :mod:`pyro_bdl.diagnostics.psis`
build on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites


@dataclass(frozen=True)
class SiteInfo:
    """One sample site of a model trace.

    Attributes:
        name: the site name.
        value_shape: shape of the site's value in an unbatched run, ``(*batch, *event)``.
        event_dim: number of rightmost event dimensions.
        plates: plate name of each batch dimension that has one, keyed by its negative dim.
        plate_sizes: size of each of those plates, keyed by plate name.
    """

    name: str
    value_shape: torch.Size
    event_dim: int
    plates: dict[int, str]
    plate_sizes: dict[str, int]

    @property
    def batch_ndim(self) -> int:
        """Number of batch dimensions of the value."""
        return len(self.value_shape) - self.event_dim

    def dim_names(self) -> list[str]:
        """One name per dimension of the value: the plate name where a plate covers a batch
        dimension, ``f"{name}_dim_{i}"`` otherwise (ArviZ's default naming)."""
        names = []
        for i in range(len(self.value_shape)):
            plate = self.plates.get(i - self.batch_ndim) if i < self.batch_ndim else None
            names.append(plate if plate is not None else f"{self.name}_dim_{i}")
        return names


@dataclass(frozen=True)
class ModelSites:
    """The sites of a model (see :func:`inspect_model`).

    Attributes:
        latent: latent sample sites, in trace order.
        observed: observed sample sites (``pyro.deterministic`` sites excluded).
        deterministic: ``pyro.deterministic`` sites.
        observed_values: the observed value of each observed site (the data), unbatched.
        observed_masks: the mask each observed site carries (``poutine.mask`` or
            ``obs_mask``), ``None`` where there is none.
        max_plate_nesting: how many batch dimensions the model's plates use.
        vectorize_dim: the dim at which a plate over posterior draws can go: left of every
            plate and every batch dimension of every site.
        data_plate: name of the data plate.
        data_dim: the negative dim of the data plate.
        num_data: size of the data plate, N.
    """

    latent: dict[str, SiteInfo]
    observed: dict[str, SiteInfo]
    deterministic: dict[str, SiteInfo]
    observed_values: dict[str, torch.Tensor]
    observed_masks: dict[str, torch.Tensor | None]
    max_plate_nesting: int
    vectorize_dim: int
    data_plate: str
    data_dim: int
    num_data: int

    def is_local(self, name: str) -> bool:
        """Whether the latent site ``name`` lies inside the data plate (one value per datum)."""
        return self.data_dim in self.latent[name].plates and self.latent[name].plates[self.data_dim] == self.data_plate


def _site_info(site: dict) -> SiteInfo:
    frames = [frame for frame in site["cond_indep_stack"] if frame.vectorized]
    return SiteInfo(
        name=site["name"],
        value_shape=torch.as_tensor(site["value"]).shape,
        event_dim=len(site["fn"].event_shape),
        plates={frame.dim: frame.name for frame in frames},
        plate_sizes={frame.name: frame.size for frame in frames},
    )


def _check_not_subsampled(trace: poutine.Trace) -> None:
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            if frame.full_size is not None and frame.full_size != frame.size:
                raise ValueError(
                    f"plate {frame.name!r} is subsampled ({frame.size} of {frame.full_size}); diagnostics need the "
                    "model run on the full data: drop subsample_size for this call"
                )


def _check_observed_finite(name: str, value: torch.Tensor, mask: torch.Tensor | None) -> None:
    if not (torch.is_tensor(value) and value.is_floating_point()):
        return
    bad = ~torch.isfinite(value)
    if mask is not None and not isinstance(mask, bool):
        bad = bad & torch.as_tensor(mask, dtype=torch.bool).expand_as(bad)
    elif mask is False:
        return
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"observed site {name!r} has {int(bad.sum())} non-finite value(s) that are not masked out "
            f"(first at index {first}); clean the data or mask those entries (poutine.mask / obs_mask)"
        )


def inspect_model(
    model: Callable,
    model_args: tuple = (),
    model_kwargs: Mapping | None = None,
    *,
    data_plate: str = "data",
) -> ModelSites:
    """Trace ``model(*model_args, **model_kwargs)`` once and describe its sites.

    Checks, each raising ``ValueError`` with the site or plate named: the model observes at
    least one site; every observed site lies in the plate ``data_plate``; no plate is
    subsampled; observed values are finite wherever they are not masked out.

    The trace runs under ``torch.no_grad()`` with Pyro's validation off, so that a
    non-finite datum is reported here, by name, rather than as a support error inside
    the distribution.
    """
    model_kwargs = {} if model_kwargs is None else dict(model_kwargs)
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    with torch.no_grad(), pyro.validation_enabled(False), poutine.block():
        trace = poutine.trace(model).get_trace(*model_args, **model_kwargs)
    _check_not_subsampled(trace)
    trace = prune_subsample_sites(trace)

    latent, observed, deterministic = {}, {}, {}
    observed_values, observed_masks = {}, {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        info = _site_info(site)
        if site["infer"].get("_deterministic", False):
            deterministic[name] = info
        elif site["is_observed"]:
            observed[name] = info
            observed_values[name] = site["value"].detach()
            observed_masks[name] = site["mask"]
        else:
            latent[name] = info
    if not observed:
        raise ValueError(
            "the model observes no site (no pyro.sample(..., obs=...)); pass the data the model conditions on"
        )

    plate_dims: dict[str, int] = {}
    for site in trace.nodes.values():
        if site["type"] == "sample":
            for frame in site["cond_indep_stack"]:
                if frame.vectorized:
                    plate_dims[frame.name] = frame.dim
    if data_plate not in plate_dims:
        raise ValueError(
            f"data_plate={data_plate!r} is not a plate of the model; its plates are {sorted(plate_dims) or 'none'}"
        )
    data_dim = plate_dims[data_plate]
    for name, info in observed.items():
        if info.plates.get(data_dim) != data_plate:
            raise ValueError(
                f"observed site {name!r} is not inside the data plate {data_plate!r} (its plates: "
                f"{sorted(info.plates.values()) or 'none'}); a pointwise log-likelihood needs one term per datum"
            )
        _check_observed_finite(name, observed_values[name], observed_masks[name])

    max_plate_nesting = -min(plate_dims.values())
    all_sites = [*latent.values(), *observed.values(), *deterministic.values()]
    widest = max([max_plate_nesting, *(info.batch_ndim for info in all_sites)])
    num_data = observed[next(iter(observed))].plate_sizes[data_plate]
    return ModelSites(
        latent=latent,
        observed=observed,
        deterministic=deterministic,
        observed_values=observed_values,
        observed_masks=observed_masks,
        max_plate_nesting=max_plate_nesting,
        vectorize_dim=-widest - 1,
        data_plate=data_plate,
        data_dim=data_dim,
        num_data=num_data,
    )
