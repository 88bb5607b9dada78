"""Argument checks of the kernel launchers: one place, one wording (kernels cannot import pyro_bdl).

Each check names the argument, what was expected and what was received, in one line, and
raises ``TypeError`` for a wrong type or dtype and ``ValueError`` for a wrong value or shape.
"""

from __future__ import annotations

from typing import Any

import torch

WORD_BITS = 32


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    """``value`` as one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_pair(name: str, value: Any, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each ``>= minimum``, as a pair (``nn.Conv2d``'s convention)."""
    pair = (value, value) if isinstance(value, int) else value
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or any(isinstance(item, bool) or not isinstance(item, int) or item < minimum for item in pair)
    ):
        raise ValueError(f"{name} must be an int or a pair of ints, each >= {minimum}; got {value!r}")
    return int(pair[0]), int(pair[1])


def check_words_tensor(name: str, words: Any, dims: int | None = None) -> torch.Tensor:
    """An int32 tensor of sign words, with ``dims`` dimensions if given (at least one otherwise)."""
    if not isinstance(words, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int32 words, got {type(words).__name__}")
    if words.dtype != torch.int32:
        raise TypeError(f"{name} must hold int32 sign words (from pack_signs), got dtype {words.dtype}")
    if words.dim() < 1:
        raise ValueError(f"{name} must have at least one dimension (..., words), got a scalar")
    if dims is not None and words.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(words.shape)}")
    return words


def check_words(name: str, words: Any, k: Any) -> torch.Tensor:
    """Sign words (..., ceil(k / 32)) int32 for a non-negative int ``k``."""
    check_words_tensor(name, words)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int (the number of packed signs), got {k!r}")
    expected = (k + WORD_BITS - 1) // WORD_BITS
    if words.shape[-1] != expected:
        raise ValueError(
            f"{name} has {words.shape[-1]} words in its last dimension, but k={k} signs need ceil({k}/32) = {expected}"
        )
    return words


def check_weight_words(
    name: str, words: Any, k: Any, device: torch.device, other: str, batched: bool = False
) -> torch.Tensor:
    """Weight words (N, ceil(k / 32)) int32 on ``device``, the device of argument ``other``.

    With ``batched``, a stack of S weight matrices (S, N, ceil(k / 32)) is accepted too.
    """
    check_words(name, words, k)
    if words.dim() != 2 and not (batched and words.dim() == 3):
        expected = "2-D (N, words) or 3-D (S, N, words)" if batched else "2-D (N, words)"
        raise ValueError(f"{name} must be {expected}, got shape {tuple(words.shape)}")
    if words.device != device:
        raise ValueError(f"{other} is on {device} but {name} is on {words.device}; move both to one device")
    return words


def check_channel_vector(name: str, vector: Any, n: int, device: torch.device, batch: int | None = None) -> None:
    """``None`` or a floating (n,) tensor on ``device`` (one value per output); (batch, n) too if ``batch``."""
    if vector is None:
        return
    if not isinstance(vector, torch.Tensor) or not vector.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape ({n},), got {vector!r:.60}")
    if vector.shape != (n,) and (batch is None or vector.shape != (batch, n)):
        expected = f"({n},) or ({batch}, {n})" if batch is not None else f"({n},)"
        raise ValueError(f"{name} must have shape {expected} (one value per output), got {tuple(vector.shape)}")
    if vector.device != device:
        raise ValueError(f"{name} is on {vector.device} but the operands are on {device}")
