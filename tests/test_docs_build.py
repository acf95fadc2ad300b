"""The documentation site: links that work on a clone, tutorials that parse, the docstring conversion.

The full build (`mkdocs build --strict`, which executes every tutorial) runs in `.ci/run` after the
tests and here as a `slow` test; the fast tests below need neither mkdocs nor the docs extra.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link.split("#")[0] for link in links if not re.match(r"^[a-z]+:", link) and link.split("#")[0]]


def test_readme_links_point_to_files_of_the_repository():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = _relative_links(text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        target = (ROOT / link).resolve()
        assert target.is_relative_to(ROOT), link
        assert target.exists(), link


def test_every_nav_page_exists_or_is_a_generated_tutorial_or_reference():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w/.-]+\.md)\s*$", config, flags=re.MULTILINE)
    generated = {f"tutorials/{path.stem}.md" for path in TUTORIALS} | {"reference/cli.md"}
    assert len(pages) > 20
    for page in pages:
        assert (DOCS / page).is_file() or page in generated, page
    assert generated <= set(pages)


def test_doc_pages_link_only_inside_the_site():
    for page in DOCS.rglob("*.md"):
        for link in _relative_links(page.read_text(encoding="utf-8")):
            target = (page.parent / link).resolve()
            assert target.is_relative_to(DOCS), f"{page}: {link}"


@pytest.mark.parametrize("script", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_tutorials_split_into_a_titled_page_of_cells(script):
    runner = _load("run_tutorial", DOCS / "_hooks" / "run_tutorial.py")
    source = script.read_text(encoding="utf-8")
    compile(source, str(script), "exec")
    docstring, cells = runner.split_cells(source)
    assert docstring.startswith("# ")
    kinds = [kind for kind, _ in cells]
    assert "code" in kinds and "markdown" in kinds
    assert all(text.strip() for _, text in cells)


def test_docstring_conversion_to_markdown():
    extension = _load("griffe_docstrings", DOCS / "_hooks" / "griffe_docstrings.py")
    text = """Summary with :class:`~a.b.Hessian` and :func:`flatminima.curvature.measure`::

    code block with ||Z||_* and {braces}

The dual <lambda, b> of ||Z||_* and A^*(y) in ||Y||_{1,1}, not in ``<x>_{1}``.

Args:
    model, loss_fn: as
        :class:`GGN`.
    x: one.

Raises:
    As :class:`GGN`.

=========== ======
name        what
=========== ======
``gd``      descent
=========== ======

Example:
    >>> 1
    1
"""
    out = extension.to_markdown(text)
    assert "`Hessian`" in out and "`flatminima.curvature.measure`:" in out and ":class:" not in out
    assert "    model: as\n        `GGN`." in out and "    loss_fn: as\n        `GGN`." in out
    assert "**Raises:** As `GGN`." in out
    assert "| name | what |" in out and "| ``gd`` | descent |" in out
    assert "Examples:\n    >>> 1" in out
    assert "    code block with ||Z||_* and {braces}" in out
    assert "The dual &lt;lambda, b> of ||Z||\\_\\* and A^\\*(y)" in out
    assert "in ||Y||\\_\\{1,1\\}, not in ``<x>_{1}``." in out


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mathjax")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs is not None
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    site = tmp_path / "site"
    for tutorial in TUTORIALS:
        page = (site / "tutorials" / f"{tutorial.stem}.html").read_text(encoding="utf-8")
        assert "Executed when the documentation was built" in page
    assert list((site / "tutorials" / "reproduce_fig3").glob("*.png"))
    assert "flatminima sweep" in (site / "reference" / "cli.html").read_text(encoding="utf-8")
