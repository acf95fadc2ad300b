"""A named reproduction of the paper: sweep specs (quick and full), a figure and a summary table.

:class:`Reproduction` is the sweep-based kind of named reproduction (the other is
:class:`~flatminima.experiments.study.Study`, which trains networks). The helpers here are shared by the
reproductions of :mod:`flatminima.experiments.reproductions` and
:mod:`flatminima.experiments.reproductions_depth`: sweep names, spec construction, stacking the stored
frames and the per-solver summary table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flatminima.experiments.spec import SweepSpec, parse_spec

if TYPE_CHECKING:
    import pandas

Frames = Mapping[str, "pandas.DataFrame"]
Table = tuple[list[str], list[list[str]]]


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """A named reproduction.

    Attributes:
        name: the command-line name.
        summary: one line for ``reproduce --list``.
        specs: quick (bool) -> the sweeps (their names start with ``name``).
        draw: (frames by sweep name, specs, png path) -> the figure's path.
        summarize: (frames, specs) -> (headers, rows) of the summary table.
    """

    name: str
    summary: str
    specs: Callable[[bool], list[SweepSpec]]
    draw: Callable[[Frames, list[SweepSpec], Path], Path]
    summarize: Callable[[Frames, list[SweepSpec]], Table]


def sweep_name(name: str, quick: bool, part: str = "") -> str:
    """The stored sweep name: ``name[/part][/quick]``."""
    return f"{name}{'/' + part if part else ''}{'/quick' if quick else ''}"


def reproduction_spec(
    name: str, problem: Mapping[str, Any], grid: Mapping[str, Any], solvers: Sequence[Any], **top: Any
) -> SweepSpec:
    """A validated sweep spec from its sections (as :func:`~flatminima.experiments.spec.parse_spec`)."""
    return parse_spec(
        {"name": name, "problem": dict(problem), "grid": dict(grid), "solvers": list(solvers), **top}
    )


def single_frame(frames: Frames) -> pandas.DataFrame:
    """All sweeps' records stacked into one frame (empty when there are none)."""
    import pandas

    return pandas.concat(list(frames.values()), ignore_index=True) if frames else pandas.DataFrame()


def summarize_by_solver(frames: Frames, metrics: Sequence[str]) -> Table:
    """Per sweep and solver: trials, failures, success rate and the median of each further metric."""
    frame = single_frame(frames)
    headers = ["sweep", "solver", "trials", "failed", *metrics]
    rows = []
    for (sweep, label), group in frame.groupby(["sweep", "label"], sort=False) if len(frame) else []:
        ok = group[group["status"] == "ok"]
        values = []
        for metric in metrics:
            if metric == "success":
                values.append(f"{group['success'].mean():.2f}")
            elif metric in ok and ok[metric].notna().any():
                values.append(f"{ok[metric].median():.3g}")
            else:
                values.append("-")
        part = str(sweep).removesuffix("/quick").split("/")
        rows.append([part[-1], str(label), str(len(group)), str(len(group) - len(ok)), *values])
    return headers, rows
