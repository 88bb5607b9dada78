"""Argument checks for the whole package: one place, one wording, nothing corrected.

Every public function that takes user input checks it with these helpers, so an error always
names the argument, what was expected and what was received, in one line.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

# The generic checks shared with the kernel package live in its (lower) layer; re-exported here.
from triton_kernels._checks import check_choice as check_choice
from triton_kernels._checks import check_pair as check_pair

# The generic checks shared with the kernel package live in its (lower) layer; re-exported here.

PROBABILITY_SUM_TOLERANCE = 1e-3
"""How far a row of class probabilities may sum away from 1 (float32 softmax rounding)."""


def check_int(name: str, value: Any, minimum: int = 1, *, allow_none: bool = False) -> int | None:
    """``value`` as an ``int >= minimum`` (``None`` passes when ``allow_none``); bools are refused."""
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def check_positive(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """``value`` as a finite float ``> 0`` (``None`` passes when ``allow_none``)."""
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        expected = "a finite number > 0" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_float_tensor(name: str, value: object, *, min_dim: int = 0, dim: int | None = None) -> torch.Tensor:
    """``value`` as a finite floating tensor with ``dim`` (or at least ``min_dim``) dimensions."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {value.dtype}")
    if dim is not None and value.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimension(s), got shape {tuple(value.shape)}")
    if value.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite, got NaN or infinite entries")
    return value


def check_probabilities(name: str, value: object, *, dim: int | None = None) -> torch.Tensor:
    """A floating tensor (of ``dim`` dimensions if given) whose last axis holds probabilities summing to 1."""
    probs = check_float_tensor(name, value, min_dim=1, dim=dim)
    if probs.shape[-1] < 2:
        raise ValueError(f"{name} must hold at least 2 classes on its last axis, got shape {tuple(probs.shape)}")
    low, high = float(probs.min()), float(probs.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must hold probabilities in [0, 1], got values in [{low}, {high}]")
    error = float((probs.sum(-1) - 1.0).abs().max())
    if error > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(
            f"{name} must sum to 1 over its last (class) axis, got a row off by {error:.3g} "
            "(pass probabilities, e.g. logits.softmax(-1), not logits)"
        )
    return probs


def check_labels(
    name: str, value: object, *, num_data: int, num_classes: int, unlabelled: int | None = None
) -> torch.Tensor:
    """Integer class labels (num_data,) in [0, num_classes); ``unlabelled`` (e.g. -1), if given, marks a row without."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be an integer torch.Tensor of shape ({num_data},), got {type(value).__name__}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {value.dtype}")
    if value.shape != (num_data,):
        raise ValueError(f"{name} must have shape ({num_data},), got {tuple(value.shape)}")
    valid = (value >= 0) & (value < num_classes)
    if unlabelled is not None:
        valid |= value == unlabelled
    if num_data and not bool(valid.all()):
        marker = "" if unlabelled is None else f" or be {unlabelled} for unlabelled rows"
        raise ValueError(
            f"{name} must lie in [0, {num_classes}){marker}, got values in [{int(value.min())}, {int(value.max())}]"
        )
    return value


def check_same_shape(name: str, value: torch.Tensor, other_name: str, other: torch.Tensor) -> None:
    if value.shape != other.shape:
        raise ValueError(f"{name} must have the shape of {other_name} {tuple(other.shape)}, got {tuple(value.shape)}")


def check_level(level: float) -> float:
    """A central-interval probability strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, int | float):
        raise TypeError(f"level must be a float in (0, 1), got {type(level).__name__} {level!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    return float(level)


def check_table(
    name: str, value: object, num_features: int, mask: object = None, *, mask_name: str = "obs_mask"
) -> torch.Tensor:
    """A floating ``(rows, num_features)`` table, NaN allowed only where the boolean ``mask`` is False.

    Returns ``value``: use the returned tensor. Under ``torch.jit.trace`` (Pyro's ``JitTrace_ELBO``)
    the check is one op of the traced graph and runs again on every call, instead of being
    frozen at the first batch; an error there reaches the caller as TorchScript's ``RuntimeError``
    carrying this message.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (rows, {num_features}), got {type(value).__name__}")
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise TypeError(f"{mask_name} must be a bool tensor of the shape of {name}, got {type(mask).__name__}")
    if torch.jit.is_tracing():
        return _TracedTableCheck.apply(value, mask, name, num_features, mask_name)
    _check_table(name, value, num_features, mask, mask_name)
    return value


def _check_table(name: str, value: torch.Tensor, num_features: int, mask: torch.Tensor | None, mask_name: str) -> None:
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {value.dtype}")
    if value.dim() != 2 or value.shape[1] != num_features:
        raise ValueError(f"{name} must have shape (rows, {num_features}), got {tuple(value.shape)}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"{mask_name} must be a bool tensor of the shape of {name}, got dtype {mask.dtype}")
        check_same_shape(mask_name, mask, name, value)
    if mask is None and not bool(torch.isnan(value.sum())):
        # NaN propagates through a sum: one reduction (~15 us for a 256 x 784 batch, against ~280 us
        # for the scan) clears the common case; the scan below runs only when the sum is NaN.
        return
    bad = torch.isnan(value) if mask is None else torch.isnan(value) & mask
    count = int(bad.sum())
    if count:
        where = "" if mask is None else f" at observed entries ({mask_name} True)"
        raise ValueError(f"{name} must not contain NaN{where}, got {count} NaN entries; mark missing entries "
                         f"False in {mask_name}")  # fmt: skip


class _TracedTableCheck(torch.autograd.Function):
    """:func:`check_table` as one op of a ``torch.jit.trace`` graph: it re-runs in Python on every call.

    Python checks on tensors (``bool(tensor)``, sizes) would be frozen into the trace as constants
    (a ``TracerWarning``); a custom autograd function is recorded as a Python op instead.
    """

    @staticmethod
    def forward(ctx, value: torch.Tensor, mask: torch.Tensor | None, name: str, num_features: int,
                mask_name: str) -> torch.Tensor:  # fmt: skip
        with warnings.catch_warnings():
            # Reading tensors is what this op is for: the op itself is re-run, not frozen.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            _check_table(name, value, num_features, mask, mask_name)
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        return grad, None, None, None, None


def check_num_data(x: torch.Tensor | None, num_data: object, obs_mask: object = None) -> int:
    """The number of rows of a generative model's call ``model(x, *, obs_mask=None, num_data=None)``.

    ``x`` (rows, ...) conditions on its rows (``num_data``, if given, must agree); ``x=None``
    samples ``num_data >= 1`` rows and then takes no ``obs_mask``.
    """
    if x is None:
        if obs_mask is not None:
            raise ValueError("obs_mask needs x: it marks which entries of x are observed; got x=None")
        if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
            raise ValueError(f"num_data must be an int >= 1 when x is None (rows to sample), got {num_data!r}")
        return num_data
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError(f"x must be a torch.Tensor of shape (rows, ...) or None, got {type(x).__name__}")
    if num_data is not None and num_data != x.shape[0]:
        raise ValueError(f"num_data must equal the rows of x ({x.shape[0]}) or be None, got {num_data!r}")
    return x.shape[0]


def check_model_rows(
    x: torch.Tensor | None, num_data: object, obs_mask: object, data_dim: int
) -> tuple[int, torch.Tensor | None]:
    """A generative model's ``(rows, x)`` for ``model(x=None, *, obs_mask=None, num_data=None)``.

    ``x`` (rows, data_dim) is checked as a table (NaN only where ``obs_mask`` is False); ``x=None``
    samples ``num_data`` rows (:func:`check_num_data`).
    """
    rows = check_num_data(x, num_data, obs_mask)
    return rows, None if x is None else check_table("x", x, data_dim, obs_mask)


def check_guide_rows(
    x: torch.Tensor | None, num_data: object, obs_mask: object, data_dim: int
) -> tuple[int, torch.Tensor]:
    """An amortised guide's ``(rows, encoder input)``: ``x`` (rows, data_dim) is required, checked as
    for :func:`check_model_rows`, with its missing entries (``obs_mask`` False) set to 0."""
    if x is None:
        raise ValueError(f"x must be a (data, {data_dim}) tensor for the guide to encode, got None")
    rows, x = check_model_rows(x, num_data, obs_mask, data_dim)
    return rows, x if obs_mask is None else torch.where(obs_mask, x, torch.zeros_like(x))
