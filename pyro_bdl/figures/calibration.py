"""Calibration figures (PNG): the reliability diagram of a classifier (accuracy against confidence per
bin, with the bin counts) and the interval coverage of a regression model (:func:`plot_interval_coverage`).

A perfectly calibrated classifier has its bars on the diagonal; bars below it mean
over-confidence. The lower panel shows how many predictions fall in each bin, since most
bins of a good MNIST classifier are nearly empty. Drawn with matplotlib's object API
(``Figure``), so no pyplot state or interactive backend is touched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from pyro_bdl.evaluation.calibration import ReliabilityBins

__all__ = ["plot_interval_coverage", "plot_reliability_diagram"]


def plot_reliability_diagram(
    bins: ReliabilityBins, path: str | os.PathLike[str], *, title: str | None = None, dpi: int = 120
) -> Path:
    """Write a reliability diagram of ``bins`` to ``path`` as a PNG.

    Args:
        bins: per-bin statistics from :func:`pyro_bdl.evaluation.reliability_bins`.
        path: the output file; must end in ``.png``. Missing parent folders are created.
        title: an optional title; the ECE is always printed in the plot.
        dpi: resolution of the PNG.

    Returns:
        The path written.
    """
    if not isinstance(bins, ReliabilityBins):
        raise TypeError(f"bins must be a ReliabilityBins (see reliability_bins), got {type(bins).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must name a .png file, got {str(path)!r}")
    edges = bins.edges.tolist()
    width = edges[1] - edges[0]
    left = edges[:-1]
    filled = (bins.counts > 0).tolist()
    accuracy = [value if keep else 0.0 for value, keep in zip(bins.accuracy.tolist(), filled, strict=True)]
    confidence = [value if keep else 0.0 for value, keep in zip(bins.confidence.tolist(), filled, strict=True)]

    figure = Figure(figsize=(4.5, 5.5))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(left, accuracy, width=width, align="edge", edgecolor="black", color="tab:blue", label="accuracy")
    gaps = [conf - acc for conf, acc in zip(confidence, accuracy, strict=True)]
    top.bar(left, gaps, bottom=accuracy, width=width, align="edge", color="tab:red", alpha=0.3, label="gap")
    top.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="perfect calibration")
    top.set_ylim(0.0, 1.0)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize="small")
    top.text(
        0.97,
        0.05,
        f"ECE = {100 * bins.expected_calibration_error:.2f}%",
        ha="right",
        transform=top.transAxes,
        bbox={"facecolor": "white", "edgecolor": "gray"},
    )
    if title:
        top.set_title(title)
    bottom.bar(left, bins.counts.tolist(), width=width, align="edge", edgecolor="black", color="tab:gray")
    bottom.set_yscale("symlog")
    bottom.set_xlim(0.0, 1.0)
    bottom.set_xlabel("confidence (max class probability)")
    bottom.set_ylabel("count")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def plot_interval_coverage(
    levels: Sequence[float],
    coverage: Sequence[float],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Write the coverage of central predictive intervals against their nominal level (regression) as a PNG.

    Args:
        levels: nominal levels in (0, 1), e.g. 0.1 ... 0.95.
        coverage: the share of test targets inside each level's interval
            (:func:`pyro_bdl.evaluation.interval_coverage`), same length.
        path: the output file; must end in ``.png``. Missing parent folders are created.
        title: an optional title.
        dpi: resolution of the PNG.

    Points below the diagonal mean intervals too narrow (over-confidence), above it too wide.
    """
    levels, coverage = [float(v) for v in levels], [float(v) for v in coverage]
    if len(levels) != len(coverage) or not levels:
        raise ValueError(
            f"levels and coverage must be non-empty and of one length, got {len(levels)} and {len(coverage)}"
        )
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must name a .png file, got {str(path)!r}")
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    axes.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="perfect calibration")
    axes.plot(levels, coverage, marker="o", color="tab:blue", label="test coverage")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlabel("nominal level of the central interval")
    axes.set_ylabel("share of test targets inside")
    axes.legend(loc="upper left", fontsize="small")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path
