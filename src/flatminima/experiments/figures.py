"""Figures drawn from stored trials (pandas DataFrames from :meth:`Store.dataframe`), with matplotlib.

* :func:`success_heatmaps`: empirical success frequency over two grid keys, one panel per solver side by
  side in a fixed order, grayscale with white = always recovered (Figure 3 of Ding et al.); every cell is
  annotated; optional :class:`Curve` overlays (theory) and :class:`Mark` error bars (fitted 50 % points).
* :func:`regularity_heatmaps`: log10 of the mean norm gap and of the mean balancedness of the flat factors
  (Figure 4), one column per problem; cells with singular D1, D2 or failed solves are left blank.
* :func:`line_panels`: a metric against one grid key, one line per solver (depth studies).

Every figure carries a caption (under the axes) stating the grid, the draws per cell and the success
rule, since the paper's exact grids are not known. Figures use matplotlib's constrained layout, cell
text of 8 pt and are saved cropped to their content.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

_CELL_PT = 8  # cell annotations
_CAPTION_PT = 8
_DPI = 130

AXIS_LABELS = {
    "dim": "d",
    "measurements_per_dim": "m / d",
    "num_measurements": "m",
    "probability": "p",
    "rank": "rank r",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def axis_label(key: str) -> str:
    """A short axis label for a grid key."""
    return AXIS_LABELS.get(key, key)


def success_table(
    frame: pandas.DataFrame, x: str, y: str, order: Sequence[str] | None = None
) -> dict[str, pandas.DataFrame]:
    """Success frequency per solver label: a (y x x) table of means of ``success`` (failed = 0).

    Labels come in ``order`` (default: sorted), never in the order the trials happened to be stored.
    """
    labels = list(order) if order is not None else sorted(map(str, frame["label"].unique()))
    out = {}
    for label in labels:
        group = frame[frame["label"] == label]
        if len(group):
            out[label] = group.groupby([y, x])["success"].mean().unstack(x).sort_index(ascending=True)
    return out


def _finish(fig: Figure, caption: str, path: str | Path) -> Path:
    """Add a strip under the panels for the wrapped caption, save cropped to the content, close.

    The figure grows by the caption's height, so the panels keep their size; a constrained layout is
    confined above the strip, a figure without a layout engine is shifted up by the strip.
    """
    import textwrap

    from matplotlib.layout_engine import ConstrainedLayoutEngine

    lines = textwrap.wrap(caption, int(fig.get_figwidth() * 72 / (_CAPTION_PT * 0.55)))
    height = fig.get_figheight()
    strip = (len(lines) * 1.3 * _CAPTION_PT + 10) / 72
    fig.set_figheight(height + strip)
    share = strip / (height + strip)
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(rect=(0.0, share, 1.0, 1.0 - share))
    else:
        params = fig.subplotpars
        fig.subplots_adjust(bottom=share + params.bottom * (1 - share), top=share + params.top * (1 - share))
    fig.text(0.005, share - 4 / 72 / (height + strip), "\n".join(lines), va="top", fontsize=_CAPTION_PT)
    path = Path(path)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight", pad_inches=0.1)
    _pyplot().close(fig)
    return path


@dataclasses.dataclass(frozen=True)
class Curve:
    """A curve over the columns of a heat map: y values (in the units of the y grid) at x grid values."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str = "tab:red"


@dataclasses.dataclass(frozen=True)
class Mark:
    """An estimate with an interval at one x grid value (y units; lower 0 / upper inf: unbounded)."""

    x: float
    estimate: float
    lower: float
    upper: float


def _grid_position(values: Sequence[float], value: float) -> float:
    """The fractional row (column) index of ``value`` on a categorical axis of sorted grid ``values``.

    Piecewise linear between grid values, extended linearly past the ends and clipped half a cell out.
    """
    import numpy

    grid = numpy.asarray(values, dtype=float)
    if grid.size == 1:
        return 0.0
    if value < grid[0]:
        position = (value - grid[0]) / (grid[1] - grid[0])
    elif value > grid[-1]:
        position = grid.size - 1 + (value - grid[-1]) / (grid[-1] - grid[-2])
    else:
        position = float(numpy.interp(value, grid, numpy.arange(grid.size)))
    return float(min(max(position, -0.5), grid.size - 0.5))


def _overlay(
    ax: Any, table: pandas.DataFrame, curves: Sequence[Curve], marks: Sequence[Mark], mark_name: str
) -> None:
    """Draw ``curves`` through the columns and ``marks`` as error bars beside the cells of ``ax``."""
    columns, rows = [float(v) for v in table.columns], [float(v) for v in table.index]
    for curve in curves:
        points = [
            (columns.index(float(x)), y)
            for x, y in zip(curve.xs, curve.ys, strict=True)
            if float(x) in columns
        ]
        if points:
            ax.plot(
                [p[0] for p in points],
                [_grid_position(rows, y) for _, y in points],
                color=curve.color,
                linestyle="--",
                linewidth=2,
                marker="s",
                markersize=4,
                label=curve.name,
            )
    for index, mark in enumerate(m for m in marks if float(m.x) in columns):
        column = columns.index(float(mark.x)) + 0.3  # beside the cell's number
        low, high = _grid_position(rows, mark.lower), _grid_position(rows, mark.upper)
        center = _grid_position(rows, mark.estimate) if math.isfinite(mark.estimate) else (low + high) / 2
        ax.errorbar(
            [column],
            [center],
            yerr=[[center - low], [high - center]],
            fmt="o" if math.isfinite(mark.estimate) else "none",
            color="tab:orange",
            markeredgecolor="black",
            ecolor="tab:orange",
            elinewidth=2.5,
            capsize=4,
            label=mark_name if index == 0 else None,
        )
    ax.set_xlim(-0.5, len(columns) - 0.5)
    ax.set_ylim(-0.5, len(rows) - 0.5)


def success_heatmaps(
    frame: pandas.DataFrame,
    *,
    x: str,
    y: str,
    title: str,
    caption: str,
    path: str | Path,
    order: Sequence[str] | None = None,
    curves: Mapping[str, Sequence[Curve]] | None = None,
    marks: Mapping[str, Sequence[Mark]] | None = None,
    mark_name: str | None = None,
) -> Path:
    """Draw success-frequency heat maps (one panel per solver label) and save them to ``path``.

    Panels follow ``order`` (default: sorted labels). ``curves[label]`` (theory) and ``marks[label]``
    (fitted transitions with intervals, drawn beside each column's cells) are overlaid in y units.
    """
    from matplotlib import patheffects

    plt = _pyplot()
    tables = success_table(frame, x, y, order)
    count = max(len(tables), 1)
    fig, axes = plt.subplots(1, count, figsize=(4.4 * count + 1.2, 4.8), squeeze=False, layout="constrained")
    image = None
    for ax, (label, table) in zip(axes[0], tables.items(), strict=False):
        image = ax.imshow(
            table.to_numpy(dtype=float), origin="lower", cmap="gray", vmin=0.0, vmax=1.0, aspect="auto"
        )
        ax.set_xticks(range(table.shape[1]), [f"{v:g}" for v in table.columns])
        ax.set_yticks(range(table.shape[0]), [f"{v:g}" for v in table.index])
        ax.set_xlabel(axis_label(x))
        ax.set_ylabel(axis_label(y))
        ax.set_title(label)
        for (i, j), value in _cells(table):
            halo = patheffects.withStroke(linewidth=3, foreground=str(value))  # the cell's own gray
            ax.text(
                j,
                i,
                f"{value:.1f}",
                ha="center",
                va="center",
                fontsize=_CELL_PT,
                color=_ink(value),
                path_effects=[halo],
                zorder=5,
            )
        name = mark_name or f"50% point in {axis_label(y)} with its 95% interval"
        _overlay(ax, table, (curves or {}).get(label, ()), (marks or {}).get(label, ()), name)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="success frequency", shrink=0.9)
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, handle)
    if handles:  # under the first panel, where the constrained layout makes room for it
        axes[0][0].legend(
            handles.values(),
            handles.keys(),
            loc="upper left",
            bbox_to_anchor=(0.0, -0.13),
            ncols=1,
            fontsize=8,
            frameon=False,
        )
    fig.suptitle(title)
    return _finish(fig, caption, path)


def _ink(value: float) -> str:
    """Black text on light cells, white on dark (grayscale 0..1)."""
    return "black" if value > 0.5 else "white"


def _cells(table: pandas.DataFrame) -> list[tuple[tuple[int, int], float]]:
    values = table.to_numpy(dtype=float)
    return [
        ((i, j), float(values[i, j]))
        for i in range(values.shape[0])
        for j in range(values.shape[1])
        if math.isfinite(values[i, j])
    ]


def regularity_heatmaps(
    frames: Mapping[str, pandas.DataFrame],
    *,
    x: str,
    ys: Mapping[str, str],
    title: str,
    caption: str,
    path: str | Path,
) -> Path:
    """log10 mean norm gap (top row) and log10 mean balancedness (bottom row), one column per problem.

    Only successful-status trials enter the means; the number printed in a cell is the log10 value.
    Each panel has its own color bar (constrained layout keeps bars, labels and titles apart).
    """
    import numpy

    plt = _pyplot()
    count = max(len(frames), 1)
    fig, axes = plt.subplots(2, count, figsize=(4.3 * count, 7.4), squeeze=False, layout="constrained")
    for column, (problem, frame) in enumerate(frames.items()):
        y = ys[problem]
        ok = frame[frame["status"] == "ok"] if len(frame) else frame
        for row, metric in enumerate(("norm_gap", "balancedness")):
            ax = axes[row][column]
            if metric not in ok or ok.empty:
                ax.set_axis_off()
                ax.set_title(f"{problem}: no certified solves", fontsize=10)
                continue
            table = ok.groupby([y, x])[metric].mean().unstack(x).sort_index()
            logged = numpy.log10(table.abs().clip(lower=1e-300))
            image = ax.imshow(logged.to_numpy(dtype=float), origin="lower", cmap="viridis", aspect="auto")
            ax.set_xticks(range(table.shape[1]), [f"{v:g}" for v in table.columns])
            ax.set_yticks(range(table.shape[0]), [f"{v:g}" for v in table.index])
            ax.set_xlabel(axis_label(x))
            ax.set_ylabel(axis_label(y))
            name = "norm gap" if metric == "norm_gap" else "balancedness"
            ax.set_title(f"{problem}: log10 {name}", fontsize=10)
            low, high = image.get_clim()
            for (i, j), value in _cells(logged):
                light = high > low and (value - low) / (high - low) > 0.6  # viridis is light at the top
                ax.text(
                    j,
                    i,
                    f"{value:.1f}",
                    ha="center",
                    va="center",
                    fontsize=_CELL_PT,
                    color="black" if light else "white",
                )
            fig.colorbar(image, ax=ax, shrink=0.9, pad=0.02)
    fig.suptitle(title)
    return _finish(fig, caption, path)


def line_panels(
    frame: pandas.DataFrame,
    *,
    x: str,
    panels: Sequence[tuple[str, str, str]],
    title: str,
    caption: str,
    path: str | Path,
    log_scale: Sequence[str] = (),
) -> Path:
    """One panel per (metric, aggregation, y-label): the aggregate of ``metric`` against ``x`` per label.

    Aggregations: ``"mean"``, ``"median"``. Trials that failed count as 0 in ``success`` and are dropped
    from the other metrics.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.0 * len(panels) + 0.5, 4.6), squeeze=False, layout="constrained"
    )
    for ax, (metric, how, ylabel) in zip(axes[0], panels, strict=True):
        for label, group in frame.groupby("label", sort=False):
            data = group if metric == "success" else group[group["status"] == "ok"]
            if metric not in data or data[metric].isna().all():
                continue
            series = data.groupby(x)[metric].agg(how).sort_index()
            ax.plot(series.index, series.to_numpy(dtype=float), marker="o", label=str(label))
        ax.set_xlabel(axis_label(x))
        ax.set_ylabel(ylabel)
        if metric in log_scale:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _finish(fig, caption, path)


def grid_caption(spec: Mapping[str, Any], extra: str = "") -> str:
    """A caption stating the sweep's problem, fixed parameters, grid, draws, solvers and success rule."""
    problem = dict(spec["problem"])
    name = problem.pop("name")
    fixed = ", ".join(f"{k} = {v}" for k, v in problem.items())
    grid = "; ".join(
        f"{axis_label(k)} in {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vs)}}}"
        for k, vs in spec["grid"].items()
    )
    solvers = ", ".join(s["label"] for s in spec["solvers"])
    truth = (
        "one ground truth per cell" if spec.get("truth", "cell") == "cell" else "one ground truth per draw"
    )
    text = (
        f"{name} ({fixed}); grid: {grid}; {spec['draws']} draws per cell ({truth}), seed {spec['seed']}; "
        f"solvers: {solvers}; success iff ||X - M||_F < {spec['tolerance']:g} with a certified solve. {extra}"
    )
    return text.strip()
