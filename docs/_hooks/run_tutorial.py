"""Execute one percent-format tutorial script cell by cell and record what every cell printed and drew.

Usage: ``python docs/_hooks/run_tutorial.py SCRIPT OUT_DIR`` (run by the build hook, in a fresh working
folder, so whatever the tutorial writes stays out of the repository).

A script is plain Python that also runs as ``python SCRIPT``. Cells are separated by lines starting with
``# %%``; a cell whose marker line is ``# %% [markdown]`` holds Markdown in comment lines (``# `` is
stripped). The module docstring, if any, is the page's introduction. Every code cell runs in one shared
namespace; its standard output and error are captured, and after it every open matplotlib figure is saved
and closed, and every PNG file it wrote or changed (anywhere under the working folder; a file rewritten
with the same bytes does not count) is collected.

OUT_DIR receives ``cells.json`` (a list of ``{"kind": "markdown", "text"}`` and ``{"kind": "code",
"source", "output", "images", "seconds"}``) and the images. A cell that raises prints its traceback on
stderr, the partial record is written, and the exit status is 1.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path


def split_cells(source: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a script into (docstring, [(kind, text)]) with kind "markdown" or "code"."""
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree, clean=True) or ""
    lines = source.split("\n")
    if docstring and tree.body and isinstance(tree.body[0], ast.Expr):
        lines = lines[tree.body[0].end_lineno :]  # drop the docstring itself
    cells: list[tuple[str, list[str]]] = []
    kind, body = "code", []
    for line in lines:
        if line.startswith("# %%"):
            cells.append((kind, body))
            kind = "markdown" if "[markdown]" in line else "code"
            body = []
        else:
            body.append(line)
    cells.append((kind, body))
    result = []
    for kind, body in cells:
        if kind == "markdown":
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body)
        else:
            text = "\n".join(body)
        text = text.strip("\n")
        if text.strip():
            result.append((kind, text))
    return docstring, result


def _pngs(root: Path) -> dict[Path, str]:
    """The PNG files under ``root`` with the hashes of their contents."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png")) if p.is_file()}


def main(script: Path, out_dir: Path) -> int:
    """Run ``script`` in the current folder, write OUT_DIR/cells.json and the images; exit status."""
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    docstring, cells = split_cells(script.read_text(encoding="utf-8"))
    work = Path.cwd()
    namespace: dict[str, object] = {"__name__": "__main__", "__file__": str(script)}
    record: list[dict[str, object]] = []
    if docstring:
        record.append({"kind": "markdown", "text": docstring})
    images = 0
    status = 0
    sys.path.insert(0, str(script.parent))
    for index, (kind, text) in enumerate(cells):
        if kind == "markdown":
            record.append({"kind": "markdown", "text": text})
            continue
        before = _pngs(work)
        buffer = io.StringIO()
        start = time.perf_counter()
        try:
            code = compile(text + "\n", f"{script.name} (cell {index + 1})", "exec")
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                exec(code, namespace)  # the tutorial is our own code, run as `python SCRIPT` would
        except BaseException:  # the build must fail on any error, with the tutorial's traceback
            status = 1
            print(f"{script}: cell {index + 1} failed:\n{text}\n", file=sys.stderr)
            print(buffer.getvalue(), file=sys.stderr)
            traceback.print_exc()
        seconds = time.perf_counter() - start
        saved: list[str] = []
        if "matplotlib.pyplot" in sys.modules:
            import matplotlib.pyplot as plt

            for number in plt.get_fignums():
                images += 1
                name = f"figure-{images}.png"
                plt.figure(number).savefig(out_dir / name, dpi=110, bbox_inches="tight")
                saved.append(name)
            plt.close("all")
        after = _pngs(work)
        for path in (p for p in after if before.get(p) != after[p]):  # new, or rewritten differently
            images += 1
            name = f"figure-{images}-{path.name}"
            shutil.copyfile(path, out_dir / name)
            saved.append(name)
        record.append(
            {"kind": "code", "source": text, "output": buffer.getvalue(), "images": saved, "seconds": seconds}
        )
        if status:
            break
    (out_dir / "cells.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return status


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: run_tutorial.py SCRIPT OUT_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
