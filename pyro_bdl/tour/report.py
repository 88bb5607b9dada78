"""The tour's report: ``report.md`` (figures embedded by relative path, a numbers table per section),
``report.html`` (the same, figures inside the file; :mod:`pyro_bdl.tour.html`) and ``report.json`` (the same
numbers, the environment and the wall time of every section)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyro_bdl.tour.core import Section
from triton_kernels.files import atomic_write_text

REPORT_MD = "report.md"
REPORT_JSON = "report.json"


@dataclass
class SectionOutcome:
    """One section's run: its :class:`Section`, or the error that stopped it; its wall time and the CPU
    time of the process (all threads) meanwhile, which a machine shared with other work does not inflate."""

    key: str
    section: Section | None
    seconds: float
    error: str | None = None
    cpu_seconds: float = 0.0


def format_value(value: Any) -> str:
    """A table cell: floats to 4 significant digits, the rest as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def markdown(outcomes: list[SectionOutcome], pending: dict[str, str], info: dict[str, Any], out: Path) -> str:
    """The Markdown report; figure links are relative to ``out``, the report's folder."""
    tour = info["tour"]
    mode = "quick (reduced: fewer steps, samples and images)" if tour["quick"] else "full"
    lines = [
        "# pyro-bdl tour",
        "",
        f"Small versions of each model family, trained on the data shipped inside the package "
        f"(4,000 MNIST digits and the UCI yacht set; licences in `pyro_bdl/tour/sample_data/ATTRIBUTION.md`). "
        f"Mode: {mode}; seed {tour['seed']}; device {tour['device']}; total wall time "
        f"{tour['total_seconds']:.0f} s ({tour['total_cpu_seconds']:.0f} s of CPU time). "
        f"These are minutes of CPU training on 3,000 digits: the numbers show "
        f"that each piece works and how to read it, not the published results (see each section).",
        "",
        "| section | wall time (s) | CPU time (s) | status |",
        "| --- | ---: | ---: | --- |",
    ]
    for outcome in outcomes:
        title = outcome.section.title if outcome.section else outcome.key
        status = "ok" if outcome.error is None else f"failed: {outcome.error.splitlines()[0]}"
        lines.append(f"| [{title}](#{outcome.key}) | {outcome.seconds:.1f} | {outcome.cpu_seconds:.1f} | {status} |")
    lines += ["", "## Environment", "", "| | |", "| --- | --- |"]
    lines += [f"| {key} | {format_value(value)} |" for key, value in info["environment"].items()]
    for outcome in outcomes:
        lines += ["", f'<a id="{outcome.key}"></a>', ""]
        if outcome.section is None:
            lines += [f"## {outcome.key}: failed", "", "```text", outcome.error or "", "```"]
            continue
        section = outcome.section
        timing = f"*Wall time {outcome.seconds:.1f} s, CPU time {outcome.cpu_seconds:.1f} s.*"
        lines += [f"## {section.title}", "", timing, "", section.text, ""]
        lines += ["| quantity | value |", "| --- | ---: |"]
        lines += [f"| {key} | {format_value(value)} |" for key, value in section.numbers.items()]
        for figure in section.figures:
            relative = Path(figure).resolve().relative_to(out.resolve()).as_posix()
            lines += ["", f"![{Path(figure).stem}]({relative})"]
    if pending:
        lines += ["", "## Not in this build yet", ""]
        lines += [f"* `{key}`: {why}" for key, why in pending.items()]
    return "\n".join(lines) + "\n"


def as_json(outcomes: list[SectionOutcome], pending: dict[str, str], info: dict[str, Any], out: Path) -> dict:
    sections = {}
    for outcome in outcomes:
        section = outcome.section
        sections[outcome.key] = {
            "title": section.title if section else None,
            "seconds": outcome.seconds,
            "cpu_seconds": outcome.cpu_seconds,
            "error": outcome.error,
            "numbers": section.numbers if section else {},
            "figures": [Path(f).resolve().relative_to(out.resolve()).as_posix() for f in section.figures]
            if section
            else [],
            "text": section.text if section else None,
        }
    return {**info, "sections": sections, "pending": pending}


def write_report(
    out: Path, outcomes: list[SectionOutcome], pending: dict[str, str], info: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``report.json`` into ``out`` atomically; returns the Markdown and
    JSON paths (the HTML file is beside them)."""
    from pyro_bdl.tour.html import REPORT_HTML, render

    md_path, json_path = out / REPORT_MD, out / REPORT_JSON
    atomic_write_text(json_path, json.dumps(as_json(outcomes, pending, info, out), indent=1))
    atomic_write_text(out / REPORT_HTML, render(outcomes, pending, info))
    atomic_write_text(md_path, markdown(outcomes, pending, info, out))
    return md_path, json_path
