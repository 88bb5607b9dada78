"""The documentation site builds in strict mode, and strict mode catches what it should.

``mkdocs build --strict`` fails on any warning: a broken link or anchor between pages, an
API reference (``::: module``) that does not resolve, a cross-reference ``[text][identifier]``
to nothing, or a docstring griffe cannot parse. The build runs in a subprocess (mkdocs and its
plugins emit deprecation warnings that this suite would turn into errors in-process) into a
temporary folder. Without mkdocs the tests skip; under ``CI=true`` they fail, since CI installs
the ``docs`` extra (README's test command).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import in_ci

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "mkdocs.yml"
TIMEOUT_S = 300
API_PACKAGES = (
    "triton_kernels",
    "pyro_bdl.layers",
    "pyro_bdl.networks",
    "pyro_bdl.observation",
    "pyro_bdl.models",
    "pyro_bdl.inference",
    "pyro_bdl.bnn",
    "pyro_bdl.diagnostics",
    "pyro_bdl.evaluation",
    "pyro_bdl.data",
)
"""Packages whose every ``__all__`` name must have an entry in the API reference."""


@pytest.fixture(scope="module")
def mkdocs_available() -> None:
    missing = [name for name in ("mkdocs", "material", "mkdocstrings_handlers.python") if _missing(name)]
    if missing:
        message = f"the docs build needs {', '.join(missing)}: pip install -e '.[docs]'"
        if in_ci():
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``; the completed process."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def test_site_builds_strict(mkdocs_available, tmp_path):
    result = build(CONFIG, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-4000:]
    site = tmp_path / "site"
    for page in ("index.html", "getting-started/index.html", "tutorial/index.html", "results/index.html"):
        assert (site / page).is_file(), page
    ids = set()
    for page in (site / "api").glob("*/index.html"):
        ids.update(re.findall(r'id="((?:pyro_bdl|triton_kernels)[\w.]*)"', page.read_text()))
    assert "pyro_bdl.models.DLGM" in ids  # rendered from the docstrings
    # griffe drops a re-export that shares its module's name (xnor_gemm, fit): every exported
    # name needs an entry somewhere, where it is defined or where it is re-exported
    undocumented = [
        f"{package}.{name}"
        for package in API_PACKAGES
        for name in importlib.import_module(package).__all__
        if not any(anchor.endswith(f".{name}") for anchor in ids)
    ]
    assert not undocumented, f"exported but missing from docs/api/: {undocumented}"


@pytest.mark.parametrize(
    "page",
    [
        "[missing](no_such_page.md)",
        "[missing anchor](other.md#no-such-heading)",
        "::: pyro_bdl.no_such_module",
        "[missing reference][pyro_bdl.models.NoSuchModel]",
    ],
    ids=["link", "anchor", "api", "autoref"],
)
def test_strict_build_fails_on(mkdocs_available, tmp_path, page):
    """The repository's configuration, on a tiny docs folder holding one defect."""
    yaml = pytest.importorskip("yaml")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Index\n\n{page}\n")
    (docs / "other.md").write_text("# Other\n\n## A heading\n")
    settings = yaml.safe_load(CONFIG.read_text())
    settings.pop("nav")
    settings["docs_dir"] = str(docs)
    for plugin in settings["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = [str(REPO)]
    config = tmp_path / "mkdocs.yml"
    config.write_text(yaml.safe_dump(settings))
    result = build(config, tmp_path / "site")
    assert result.returncode != 0, f"strict build passed with {page!r}:\n{result.stderr[-2000:]}"


def test_rest_roles_become_inline_code():
    """The griffe extension of mkdocs.yml that shows reST roles as Markdown code."""
    spec = importlib.util.spec_from_file_location("rest_roles", REPO / "docs" / "_ext" / "rest_roles.py")
    if _missing("griffe"):
        pytest.skip("griffe (a dependency of mkdocstrings-python) is not installed")
    rest_roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rest_roles)
    text = "From :func:`~pyro_bdl.inference.fit.fit` and :class:`ObservationModel`, ``x`` (N,)."
    assert rest_roles.markdown_text(text) == "From `fit` and `ObservationModel`, `x` (N,)."
    assert rest_roles.markdown_text(":mod:`pyro_bdl.models`") == "`pyro_bdl.models`"
    assert rest_roles.markdown_text(":attr:`TraceLayout.draw_dim <pyro_bdl.inference.TraceLayout>`") == (
        "`TraceLayout.draw_dim`"
    )
