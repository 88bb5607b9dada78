"""What a tour section receives and returns: :class:`Budget` in, :class:`Section` out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """How much work a section may do, and where.

    Attributes:
        quick: the reduced mode (CI): the same steps on fewer epochs, samples and images.
        seed: seeds every draw of the section (Pyro's, torch's, the data shuffles).
        progress: show tqdm bars (fit's own bars included).
        device: where the binary networks and the kernel self-check run (the Pyro models are
            small and train on the CPU).
    """

    quick: bool = False
    seed: int = 0
    progress: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def pick(self, full: T, quick: T) -> T:
        """``quick`` in the reduced mode, else ``full``."""
        return quick if self.quick else full


@dataclass
class Section:
    """One section of the report.

    Attributes:
        title: the heading.
        numbers: name -> value (float, int, str, bool or None), one row each in the report's table.
        figures: PNG files the section wrote (inside its output folder).
        text: Markdown paragraphs: what was run, on what, and how to read the numbers.
    """

    title: str
    numbers: dict[str, Any]
    figures: list[Path]
    text: str


def finite_numbers(numbers: dict[str, Any]) -> dict[str, Any]:
    """The float entries of ``numbers`` that are not finite, for a check (empty when all are)."""
    return {key: value for key, value in numbers.items() if isinstance(value, float) and not math.isfinite(value)}
