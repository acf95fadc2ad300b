"""MkDocs hook of the flatminima site: pages generated at build time, so that they cannot go stale.

* **Tutorials.** Every ``docs/tutorials/*.py`` is executed (``run_tutorial.py``, one subprocess each, in
  a fresh temporary folder) and becomes the page ``tutorials/NAME.md``: its Markdown cells as text, its
  code cells as code blocks followed by what they printed and the figures they drew. A tutorial that
  fails fails the build, with its traceback. ``mkdocs serve`` reruns a tutorial only when its file
  changed; ``mkdocs build`` always runs all of them. ``FLATMINIMA_DOCS_SKIP_TUTORIALS=1`` puts
  placeholders in their place, with a warning, so that a ``--strict`` build refuses it (a quick
  ``mkdocs build`` while editing the other pages).
* **Command-line reference.** ``reference/cli.md`` holds the ``--help`` of the ``flatminima`` command and
  of every subcommand of the Typer app (found from the app, so a new command is documented as soon as it
  exists), and the list of named reproductions.
* **MathJax.** ``assets/mathjax/tex-svg.js`` is copied from the ``django-static-mathjax`` wheel (a
  ``docs`` extra), so that formulas render without loading anything from outside the site.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.flatminima")

ROOT = Path(__file__).resolve().parents[2]
HOOKS = Path(__file__).resolve().parent
TUTORIALS = ROOT / "docs" / "tutorials"
#: seconds one tutorial may run before the build gives up on it
TUTORIAL_TIMEOUT = float(os.environ.get("FLATMINIMA_DOCS_TUTORIAL_TIMEOUT", "600"))
#: tutorials run side by side (the machine of CI has 2 cores; the figure-3 sweep uses both)
TUTORIAL_JOBS = int(os.environ.get("FLATMINIMA_DOCS_JOBS", "2"))

_state: dict[str, Any] = {"command": "build", "cache": {}, "tmp": None}
_LOCK = threading.Lock()


def on_startup(command: str, dirty: bool) -> None:
    """Remember whether this is ``serve`` (tutorial results are then reused while unchanged)."""
    _state["command"] = command


def on_shutdown() -> None:
    """Remove the folder of the generated files."""
    if _state["tmp"] is not None:
        _state["tmp"].cleanup()
        _state["tmp"] = None


def _workdir() -> Path:
    """A fresh folder for this build's generated files, in the git-ignored build/ folder of the repository.

    Removed when the build ends (``on_shutdown``). Made once, under a lock: the tutorials run in threads,
    and a second ``TemporaryDirectory`` replacing the first would delete it while a tutorial runs in it.
    """
    with _LOCK:
        if _state["tmp"] is None:
            (ROOT / "build").mkdir(exist_ok=True)
            _state["tmp"] = tempfile.TemporaryDirectory(prefix="docs-run-", dir=ROOT / "build")
        return Path(_state["tmp"].name)


# ---- tutorials -------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT / "src"), env.get("PYTHONPATH", "")] if p)
    env.setdefault("PYTHONHASHSEED", "0")
    env["COLUMNS"] = "100"
    return env


def _run_tutorial(script: Path) -> tuple[Path, float]:
    """Run one tutorial in its own working folder; return the folder of its record and the wall time."""
    out = _workdir() / "tutorials" / script.stem
    work = out / "work"
    record = out / "record"
    shutil.rmtree(out, ignore_errors=True)  # a rerun (mkdocs serve) starts from nothing, like the first
    work.mkdir(parents=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(HOOKS / "run_tutorial.py"), str(script), str(record)],
            cwd=work,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TUTORIAL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise PluginError(f"tutorial {script.name} ran longer than {TUTORIAL_TIMEOUT:.0f} s") from error
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise PluginError(
            f"tutorial {script.relative_to(ROOT)} failed (exit status {done.returncode}):\n"
            f"{done.stderr[-6000:]}"
        )
    return record, seconds


def _fence(text: str, language: str = "") -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{language}\n{text.rstrip()}\n{ticks}"


def _page(script: Path, record: Path, seconds: float) -> str:
    cells = json.loads((record / "cells.json").read_text(encoding="utf-8"))
    parts = []
    for cell in cells:
        if cell["kind"] == "markdown":
            parts.append(cell["text"])
            if not parts[1:]:  # after the introduction: where the script is and how it was run
                parts.append(
                    f'!!! info "Executed when the documentation was built"\n'
                    f"    This page is the script [`docs/tutorials/{script.name}`]({script.name}), run "
                    f"cell by cell by the documentation build ({seconds:.0f} s on the build machine); "
                    f"every output below is what it printed and drew. Run it yourself from a scratch "
                    f"folder with `python PATH/TO/docs/tutorials/{script.name}`: it writes its files "
                    f"(results, stores, figures) in the current folder."
                )
            continue
        parts.append(_fence(cell["source"], "python"))
        output = cell["output"].rstrip()
        if output:
            parts.append(_fence(output, "text"))
        for image in cell["images"]:
            parts.append(f"![output of the cell above]({script.stem}/{image})")
    return "\n\n".join(parts) + "\n"


def _skipped_tutorial_files(config: Any, scripts: list[Path]) -> list[File]:
    """Placeholder pages, with a warning (so that a --strict build fails): for editing other pages."""
    log.warning("FLATMINIMA_DOCS_SKIP_TUTORIALS is set: the tutorials are not executed")
    return [
        File.generated(
            config,
            f"tutorials/{script.stem}.md",
            content=f"# {script.stem}\n\nNot executed in this build ([the script]({script.name})).\n",
        )
        for script in scripts
    ]


def _tutorial_files(config: Any) -> list[File]:
    scripts = sorted(TUTORIALS.glob("*.py"))
    if os.environ.get("FLATMINIMA_DOCS_SKIP_TUTORIALS"):
        return _skipped_tutorial_files(config, scripts)
    cache: dict[str, tuple[str, Path, float]] = _state["cache"]
    todo = []
    for script in scripts:
        digest = hashlib.sha256(script.read_bytes()).hexdigest()
        cached = cache.get(script.name)
        if _state["command"] == "serve" and cached is not None and cached[0] == digest:
            continue
        todo.append((script, digest))
    if todo:
        _workdir()  # created here, once: threads racing to create it would drop (and delete) one
        log.info("running %d tutorial(s): %s", len(todo), ", ".join(s.name for s, _ in todo))
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, TUTORIAL_JOBS)) as pool:
            futures = {pool.submit(_run_tutorial, script): (script, digest) for script, digest in todo}
            for future in concurrent.futures.as_completed(futures):
                script, digest = futures[future]
                record, seconds = future.result()
                log.info("tutorial %s ran in %.1f s", script.name, seconds)
                cache[script.name] = (digest, record, seconds)
    files = []
    for script in scripts:
        _digest, record, seconds = cache[script.name]
        content = _page(script, record, seconds)
        files.append(File.generated(config, f"tutorials/{script.stem}.md", content=content))
        for image in sorted(record.glob("*.png")):
            files.append(
                File.generated(config, f"tutorials/{script.stem}/{image.name}", abs_src_path=str(image))
            )
    return files


# ---- command-line reference ------------------------------------------------------------------------


def _help(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flatminima.cli", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise PluginError(f"flatminima {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.rstrip()


def _cli_page() -> str:
    if str(ROOT / "src") not in sys.path:  # the source tree, installed or not
        sys.path.insert(0, str(ROOT / "src"))
    import typer.main

    from flatminima.cli import app

    group = typer.main.get_command(app)
    names = list(getattr(group, "commands", {}))
    lines = [
        "# Command line",
        "",
        "The `flatminima` command is a thin shell over the Python API (`flatminima.cli`, a Typer app). This",
        "page is generated when the documentation is built, from the app itself: each section is the",
        "command's `--help`, so it lists exactly the options of the installed version.",
        "",
        "Every error (a bad option, a bad spec, an unwritable output) is one line on stderr, "
        "`flatminima: error: ...`,",
        "with exit status 2, never a traceback; Ctrl-C exits with status 130 and says how many trials the",
        "store holds (rerun the same command to resume).",
        "",
        "## flatminima",
        "",
        _fence(_help("--help"), "text"),
        "",
    ]
    for name in names:
        lines += [f"## flatminima {name}", "", _fence(_help(name, "--help"), "text"), ""]
        if name == "reproduce":
            lines += [
                "The named reproductions (`flatminima reproduce --list`):",
                "",
                _fence(_help("reproduce", "--list"), "text"),
                "",
            ]
    return "\n".join(lines)


# ---- the sweep format: tables from the registries --------------------------------------------------


def _type_name(kind: Any) -> str:
    name = getattr(kind, "__name__", None)
    text = str(kind) if name is None or getattr(kind, "__args__", None) else name
    return text.replace("typing.", "").replace("NoneType", "None").replace(" | ", " or ")


def _problems_table() -> str:
    from flatminima.experiments.spec_params import problem_fields, valid_keys
    from flatminima.problems import PROBLEMS

    lines = ["| problem | class | parameters (required in bold) | derived keys |", "|---|---|---|---|"]
    for name, cls in PROBLEMS.items():
        fields = problem_fields(name)
        params = []
        for field, (kind, required, default) in fields.items():
            text = f"`{field}`: {_type_name(kind)}"
            params.append(f"**{text}**" if required else f"{text} = `{default!r}`")
        derived = [key for key in valid_keys(name) if key not in fields]
        lines.append(
            f"| `{name}` | `{cls.__name__}` | {'; '.join(params)} | "
            f"{', '.join(f'`{key}`' for key in derived) or '-'} |"
        )
    return "\n".join(lines)


def _methods_table() -> str:
    from flatminima.experiments import METHODS

    lines = ["| method | what it computes | problems | options |", "|---|---|---|---|"]
    for name, method in METHODS.items():
        options = dict(method.options)
        if set(options) == {"*"}:
            text = "the solver's keyword arguments"
        else:
            text = ", ".join(f"`{key}` ({_type_name(kind)})" for key, kind in options.items()) or "-"
        summary = method.summary  # in a code span, where the table's splitting leaves "|" alone
        kinds = ", ".join(f"`{kind}`" for kind in method.kinds)
        lines.append(f"| `{name}` | `{summary}` | {kinds} | {text} |")
    return "\n".join(lines)


def _spec_docstring_example() -> str:
    import flatminima.experiments.spec as spec

    doc = spec.__doc__ or ""
    _head, marker, rest = doc.partition("::\n\n")
    if not marker:
        raise PluginError("flatminima.experiments.spec's docstring lost its annotated TOML example (::)")
    block = []
    for line in rest.split("\n"):
        if line.strip() and not line.startswith("    "):
            break
        block.append(line[4:])
    return _fence("\n".join(block).strip("\n"), "toml")


def _example_spec() -> str:
    from flatminima.experiments import load_spec

    path = ROOT / "examples" / "sweep_completion.toml"
    spec = load_spec(path)  # the build fails if the example stops being a valid spec
    text = path.read_text(encoding="utf-8")
    return f"{_fence(text, 'toml')}\n\nIt expands into {spec.num_trials} trials."


_MARKERS = {
    "reference/sweep-format.md": {
        "<!-- flatminima:spec-docstring -->": _spec_docstring_example,
        "<!-- flatminima:problems -->": _problems_table,
        "<!-- flatminima:methods -->": _methods_table,
        "<!-- flatminima:example -->": _example_spec,
    }
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Fill the generated sections of the pages listed in ``_MARKERS``."""
    for marker, render in _MARKERS.get(page.file.src_uri, {}).items():
        if marker not in markdown:
            raise PluginError(f"{page.file.src_uri}: the marker {marker} is missing")
        markdown = markdown.replace(marker, render())
    return markdown


# ---- MathJax ---------------------------------------------------------------------------------------


def _mathjax_file(config: Any) -> File:
    try:
        import mathjax  # the django-static-mathjax wheel: MathJax's own distribution, no Django needed
    except ImportError as error:
        raise PluginError(
            "MathJax is missing: install the docs extra (pip install -e '.[docs]'), which brings "
            "django-static-mathjax"
        ) from error
    source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg.js"
    if not source.is_file():
        raise PluginError(f"MathJax is incomplete: {source} does not exist")
    return File.generated(config, "assets/mathjax/tex-svg.js", abs_src_path=str(source))


# ---- the hook ---------------------------------------------------------------------------------------


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages and assets to the site."""
    for file in _tutorial_files(config):
        files.append(file)
    files.append(File.generated(config, "reference/cli.md", content=_cli_page()))
    files.append(_mathjax_file(config))
    return files
