"""A named reproduction of the paper: sweep specs (quick and full), a figure and a summary table.

:class:`Reproduction` is the sweep-based kind of named reproduction (the other is
:class:`~flatminima.experiments.study.Study`, which trains networks). The helpers here are shared by the
reproductions of :mod:`flatminima.experiments.reproductions` and
:mod:`flatminima.experiments.reproductions_depth`: sweep names, spec construction, stacking the stored
frames and the per-solver summary table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flatminima.experiments.spec import SweepSpec, parse_spec

if TYPE_CHECKING:
    import pandas

    from flatminima.experiments.transitions import Transition

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


def summarize_transitions(frames: Frames, spec: SweepSpec) -> Table:
    """One column per x value (d): each solver's 50 % point with its 95 % interval, overlap, theory.

    The transition of each (d, solver) is :func:`~flatminima.experiments.transitions.fit_transition`
    (logistic in log y, profile-likelihood interval), in the heat map's units (m / d or p) and, for
    y = m / d, in measurements m50. Then: whether the solvers' intervals overlap; where a theory
    applies the statistical dimension delta / d of the nuclear-norm descent cone and m50 / delta with
    its interval; for completion (y = p) the fitted reference C r log(d) / d per solver; last, each
    solver's success rate and failed trials (no certificate, singular D1, D2; counted as failures).
    """
    from flatminima.experiments import transitions as tr

    x = spec.figure.get("x", spec.grid[0][0] if spec.grid else "")
    y = spec.figure.get("y", spec.grid[1][0] if len(spec.grid) > 1 else "")
    labels = [s.label for s in spec.solvers]
    frame = single_frame(frames)
    fits = (
        tr.reproduction_transitions(frame, problem=spec.problem, fixed=spec.fixed, x=x, y=y, labels=labels)
        if len(frame)
        else None
    )
    values = [v for k, vs in spec.grid if k == x for v in vs]
    if fits is not None:
        values = [v for v in values if (fits[x] == v).any()]
    headers = ["solver / quantity", *[f"{_axis_label(y)} @50% ({_axis_label(x)}={v})" for v in values]]
    if fits is None:
        return headers, []
    fitted = {
        (label, v): _transition(r, "estimate")
        for v in values
        for r in fits[fits[x] == v].itertuples()
        for label in [str(r.label)]
    }

    def line(name: str, cell: Callable[[str, Any], str], label: str = "") -> list[str]:
        return [name, *[cell(label, v) if (label, v) in fitted or not label else "-" for v in values]]

    def overlap(_: str, v: Any) -> str:
        own = [fitted[(label, v)] for label in labels if (label, v) in fitted]
        pairs = [(a, b) for i, a in enumerate(own) for b in own[i + 1 :]]
        return "yes" if all(tr.intervals_overlap(a, b) for a, b in pairs) else "no"

    rows = [
        line(f"{label} [95% CI]", lambda lb, v: tr.format_transition(fitted[(lb, v)]), label)
        for label in labels
    ]
    if "m50" in fits:
        rows += [
            line(
                f"{label}: m50 (measurements)",
                lambda lb, v: tr.format_transition(fitted[(lb, v)].scaled(v)),
                label,
            )
            for label in labels
        ]
    rows.append(line("intervals overlap", overlap))
    if "statistical_dimension" in fits:
        delta = {v: float(fits[fits[x] == v]["statistical_dimension"].iloc[0]) for v in values}
        rows.append(line("stat. dim. delta / d", lambda _, v: f"{delta[v] / v:.3g}"))
        rows += [
            line(
                f"{label}: m50 / delta",
                lambda lb, v: tr.format_transition(fitted[(lb, v)].scaled(v / delta[v])),
                label,
            )
            for label in labels
        ]
    elif y == "probability" and "rank" in spec.fixed:
        rank = int(spec.fixed["rank"])
        for label in labels:
            group = fits[fits["label"] == label]
            c = tr.fit_log_reference(group[x].tolist(), group["estimate"].tolist(), rank)
            reference = {v: f"{c * rank * math.log(v) / v:.3g}" for v in values}
            rows.append(line(f"{label}: C r log(d)/d, C = {c:.2f}", lambda _, v: reference[v]))  # noqa: B023
    for label in labels:
        trials = frame[frame["label"] == label]

        def rate(_: str, v: Any, trials: pandas.DataFrame = trials) -> str:
            cell = trials[trials[x] == v]
            failed = int((cell["status"] == "failed").sum())
            return f"{cell['success'].fillna(False).astype(bool).mean():.2f} ({failed})"

        rows.append(line(f"{label}: success (failed)", rate))
    return headers, rows


def _axis_label(key: str) -> str:
    from flatminima.experiments.figures import axis_label

    return axis_label(key)


def _transition(row: Any, counts: str) -> Transition:
    """The fitted transition of a row of the transitions table, in measurements when ``counts = "m50"``."""
    from flatminima.experiments.transitions import Transition

    prefix = "m50" if counts == "m50" else "estimate"
    low, high = ("m50_lower", "m50_upper") if counts == "m50" else ("lower", "upper")
    return Transition(
        float(getattr(row, prefix)),
        float(getattr(row, low)),
        float(getattr(row, high)),
        float(row.slope),
        bool(row.separated),
        int(row.trials),
        float(row.level),
    )


def bound_ratio_text(values: pandas.Series, bounds: pandas.Series) -> str:
    """max(value / bound) over the rows with a positive finite bound, and why other rows are left out.

    A bound of 0 (kappa = 1: the theorem forces the quantity to vanish) is reported with the largest
    measured value instead of a ratio (``inf`` or ``nan``); an infinite bound (kappa = inf) is unbounded.
    """
    finite = bounds.apply(math.isfinite) & (bounds > 0)
    parts = [f"{(values[finite] / bounds[finite]).max():.3f}"] if finite.any() else []
    zero = bounds == 0
    if zero.any():
        parts.append(f"bound 0 at kappa = 1: max value {values[zero].max():.1e}")
    if (~finite & ~zero).any():
        parts.append("n/a (unbounded: kappa = inf)")
    return "; ".join(parts) if parts else "-"
