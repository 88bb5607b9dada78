"""Every ArviZ call of :mod:`pyro_bdl.diagnostics`, in one place, for ArviZ 0.2x and 1.x.

ArviZ 0.2x (Python 3.10/3.11; 0.23.4 is what the project's environment holds and what the
tests exercise) returns ``arviz.InferenceData``, converts Pyro MCMC runs with
``az.from_pyro`` and smooths importance weights with ``az.psislw(log_weights)``.
ArviZ 1.x (Python >= 3.12) split into ``arviz_base`` / ``arviz_stats`` / ``arviz_plots``:
results are ``xarray.DataTree``, there is no Pyro converter, and
``arviz_stats.base.array_stats.psislw`` takes the *negated* log ratios (it expects
log-likelihood values, as for PSIS-LOO). The 1.x branches below follow the published
arviz-base / arviz-stats sources; they have not been run by this project's tests.

ArviZ is imported lazily: importing :mod:`pyro_bdl.diagnostics` does no work.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.metadata import version
from typing import Any

import numpy as np

DATA_GROUPS = ("observed_data", "constant_data")


@cache
def arviz_major_version() -> int:
    """The installed ArviZ major version (0 or 1)."""
    return int(version("arviz").split(".")[0])


def _arviz():
    return importlib.import_module("arviz")


def make_inference_data(
    groups: Mapping[str, Mapping[str, np.ndarray]],
    dims: Mapping[str, Mapping[str, Sequence[str]]],
    coords: Mapping[str, Sequence] | None = None,
) -> Any:
    """Build an InferenceData (0.x) / DataTree (1.x) from numpy arrays, group by group.

    Args:
        groups: ``{group: {variable: array}}``; sample groups hold ``(chain, draw, *shape)``
            arrays, the groups in :data:`DATA_GROUPS` hold ``(*shape)``.
        dims: ``{group: {variable: [dim names of *shape]}}``; dims are per group, so one
            site can have different dims in different groups (``obs`` in
            ``posterior_predictive`` versus its pointwise ``log_likelihood``).
        coords: ``{dim name: coordinate values}``.
    """
    datasets = {}
    for group, variables in groups.items():
        is_data = group in DATA_GROUPS
        if arviz_major_version() >= 1:
            from arviz_base import dict_to_dataset

            datasets[group] = dict_to_dataset(
                dict(variables), coords=coords, dims=dims.get(group), sample_dims=[] if is_data else None
            )
        else:
            datasets[group] = _arviz().dict_to_dataset(
                dict(variables), library=None, coords=coords, dims=dims.get(group), default_dims=[] if is_data else None
            )
    if arviz_major_version() >= 1:
        from xarray import DataTree

        return DataTree.from_dict(datasets)
    return _arviz().InferenceData(**datasets)


def mcmc_inference_data(mcmc, dims: Mapping[str, Sequence[str]], coords: Mapping[str, Sequence] | None) -> Any:
    """Posterior, sample_stats (divergences) and observed_data of a Pyro ``MCMC`` run.

    ArviZ 0.x: ``az.from_pyro(mcmc, log_likelihood=False)`` (its own log-likelihood is
    replaced by :func:`pyro_bdl.diagnostics.pointwise_log_likelihood`). ArviZ 1.x has no
    Pyro converter: the same groups are built from ``mcmc.get_samples(group_by_chain=True)``
    and ``mcmc.diagnostics()``.
    """
    if arviz_major_version() < 1:
        return _arviz().from_pyro(mcmc, log_likelihood=False, coords=coords, dims=dims)
    samples = {name: value.detach().cpu().numpy() for name, value in mcmc.get_samples(group_by_chain=True).items()}
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    diverging = np.zeros((num_chains, num_draws), dtype=bool)
    for chain, (_, indices) in enumerate(sorted(mcmc.diagnostics().get("divergences", {}).items())):
        diverging[chain, indices] = True
    return make_inference_data(
        {"posterior": samples, "sample_stats": {"diverging": diverging}},
        {"posterior": dims},
        coords,
    )


def merge_groups(inference_data: Any, other: Any) -> Any:
    """``inference_data`` with the groups of ``other`` added; variables of a group both have are merged."""
    if arviz_major_version() >= 1:
        from xarray import DataTree

        datasets = {name: node.to_dataset() for name, node in inference_data.children.items()}
        for name, node in other.children.items():
            datasets[name] = datasets[name].merge(node.to_dataset()) if name in datasets else node.to_dataset()
        return DataTree.from_dict(datasets)
    shared = [group for group in other.groups() if group in inference_data.groups()]
    for group in shared:
        inference_data[group].update(other[group])
    inference_data.extend(other, join="left")
    return inference_data


def set_group_attrs(inference_data: Any, group: str, attrs: Mapping[str, Any]) -> None:
    """Add ``attrs`` to one group's attributes."""
    inference_data[group].attrs.update(attrs)


def psislw_khat(log_weights: np.ndarray) -> np.ndarray:
    """Pareto k-hat of each row of log importance ratios (Vehtari et al. 2024, JMLR 25(72)).

    Args:
        log_weights: ``(..., num_samples)`` log importance ratios ``log p - log q``.

    Returns:
        ``(...)`` k-hat estimates.
    """
    if arviz_major_version() >= 1:
        from arviz_stats.base import array_stats

        _, khat = array_stats.psislw(-log_weights, r_eff=1.0, axis=-1)
    else:
        _, khat = _arviz().psislw(log_weights, reff=1.0)
    return np.asarray(khat, dtype=float)
