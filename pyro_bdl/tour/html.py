"""The tour's report as one self-contained ``report.html``: the same sections, numbers tables and text as
``report.md``, with every figure embedded as a base64 PNG (so the file can be mailed or opened anywhere).

No Markdown library: the sections' text uses only paragraphs, ```code```, ``**bold**`` and ``*italics*``,
which :func:`inline` turns into HTML after escaping everything else.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from pyro_bdl.tour.report import SectionOutcome, format_value

REPORT_HTML = "report.html"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } figure img { max-width: 100%; }
pre { background: #f5f5f5; padding: 0.6rem; overflow-x: auto; }
code { background: #f5f5f5; padding: 0 0.2rem; }
"""


def inline(text: str) -> str:
    """Markdown's inline code, bold and italics as HTML; everything else escaped."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        escaped = html.escape(part)
        escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
        escaped = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", escaped)
        out.append(escaped)
    return "".join(out)


def paragraphs(text: str) -> str:
    return "\n".join(f"<p>{inline(block.strip())}</p>" for block in re.split(r"\n\s*\n", text) if block.strip())


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...], numeric: tuple[bool, ...]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="number">{html.escape(format_value(value))}</td>' if is_number else f"<td>{value}</td>"
            for value, is_number in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def embedded_figure(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    name = html.escape(Path(path).stem)
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def render(outcomes: list[SectionOutcome], pending: dict[str, str], info: dict[str, Any]) -> str:
    """The whole report as an HTML document."""
    tour = info["tour"]
    mode = "quick (reduced: fewer steps, samples and images)" if tour["quick"] else "full"
    summary = []
    for outcome in outcomes:
        title = outcome.section.title if outcome.section else outcome.key
        status = "ok" if outcome.error is None else f"failed: {outcome.error.splitlines()[0]}"
        link = f'<a href="#{html.escape(outcome.key)}">{html.escape(title)}</a>'
        summary.append((link, outcome.seconds, outcome.cpu_seconds, html.escape(status)))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>pyro-bdl tour</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>pyro-bdl tour</h1>",
        paragraphs(
            f"Small versions of each model family, trained on the data shipped inside the package (4,000 MNIST "
            f"digits and the UCI yacht set). Mode: {mode}; seed {tour['seed']}; device {tour['device']}; total "
            f"wall time {tour['total_seconds']:.0f} s ({tour['total_cpu_seconds']:.0f} s of CPU time). The numbers "
            f"show that each piece works and how to read it, not the published results (see each section)."
        ),
        table(summary, ("section", "wall time (s)", "CPU time (s)", "status"), (False, True, True, False)),
        "<h2>Environment</h2>",
        table(
            [(html.escape(str(key)), html.escape(format_value(value))) for key, value in info["environment"].items()],
            ("", ""),
            (False, False),
        ),
    ]
    for outcome in outcomes:
        key = html.escape(outcome.key)
        if outcome.section is None:
            parts += [f'<h2 id="{key}">{key}: failed</h2>', f"<pre>{html.escape(outcome.error or '')}</pre>"]
            continue
        section = outcome.section
        parts += [
            f'<h2 id="{key}">{html.escape(section.title)}</h2>',
            f"<p><em>Wall time {outcome.seconds:.1f} s, CPU time {outcome.cpu_seconds:.1f} s.</em></p>",
            paragraphs(section.text),
            table(
                [(html.escape(name), value) for name, value in section.numbers.items()],
                ("quantity", "value"),
                (False, True),
            ),
            *(embedded_figure(figure) for figure in section.figures),
        ]
    if pending:
        parts += ["<h2>Not in this build yet</h2>", "<ul>"]
        parts += [f"<li><code>{html.escape(key)}</code>: {inline(why)}</li>" for key, why in pending.items()]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
