"""Griffe extension for the docs site: show the docstrings' reST roles as inline code.

The package's docstrings are Google style but cross-reference with reST roles
(``:class:`ObservationModel```, ``:func:`~pyro_bdl.inference.scoring.log_importance_weights```),
which Markdown would print verbatim. This turns each role into inline code of the name as
Sphinx would display it (the last component after ``~``); reST's double backticks become
Markdown's single ones. Loaded by ``mkdocs.yml`` (mkdocstrings' ``extensions`` option).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
DOUBLE_BACKTICKS = re.compile(r"``([^`]+)``")
TITLED = re.compile(r"(.+?)\s*<([^>]+)>")


def markdown_text(text: str) -> str:
    """``text`` with reST roles and double backticks as Markdown inline code."""

    def role(match: re.Match) -> str:
        name = match.group(2)
        titled = TITLED.fullmatch(name)
        if titled:  # :attr:`title <target>` shows the title
            return f"`{titled.group(1).strip()}`"
        return f"`{name.rsplit('.', 1)[-1] if match.group(1) else name}`"

    return DOUBLE_BACKTICKS.sub(r"`\1`", ROLE.sub(role, text))


class RestRoles(griffe.Extension):
    """Rewrite every docstring once, when griffe loads its object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_text(obj.docstring.value)
