"""Figures drawn from stored trials (pandas DataFrames from :meth:`Store.dataframe`), with matplotlib.

* :func:`success_heatmaps`: empirical success frequency over two grid keys, one panel per solver side by
  side, grayscale with white = always recovered (Figure 3 of Ding et al.); every cell is annotated.
* :func:`regularity_heatmaps`: log10 of the mean norm gap and of the mean balancedness of the flat factors
  (Figure 4), one column per problem; cells with singular D1, D2 or failed solves are left blank.
* :func:`line_panels`: a metric against one grid key, one line per solver (depth studies).

Every figure carries a caption (``fig.text`` under the axes) stating the grid, the draws per cell and
the success rule, since the paper's exact grids are not known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

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


def success_table(frame: pandas.DataFrame, x: str, y: str) -> dict[str, pandas.DataFrame]:
    """Success frequency per solver label: a (y x x) table of means of ``success`` (failed = 0)."""
    out = {}
    for label, group in frame.groupby("label", sort=False):
        table = group.groupby([y, x])["success"].mean().unstack(x).sort_index(ascending=True)
        out[str(label)] = table
    return out


def _finish(fig: Figure, caption: str, path: str | Path) -> Path:
    import textwrap

    lines = textwrap.wrap(caption, 120)
    fig.text(0.01, 0.01, "\n".join(lines), ha="left", va="bottom", fontsize=8)
    fig.subplots_adjust(bottom=0.12 + 0.035 * len(lines))
    path = Path(path)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def success_heatmaps(
    frame: pandas.DataFrame, *, x: str, y: str, title: str, caption: str, path: str | Path
) -> Path:
    """Draw success-frequency heat maps (one panel per solver label) and save them to ``path``."""
    plt = _pyplot()
    tables = success_table(frame, x, y)
    fig, axes = plt.subplots(1, len(tables), figsize=(4.6 * len(tables) + 0.8, 4.8), squeeze=False)
    image = None
    for ax, (label, table) in zip(axes[0], tables.items(), strict=True):
        image = ax.imshow(
            table.to_numpy(dtype=float), origin="lower", cmap="gray", vmin=0.0, vmax=1.0, aspect="auto"
        )
        ax.set_xticks(range(table.shape[1]), [f"{v:g}" for v in table.columns])
        ax.set_yticks(range(table.shape[0]), [f"{v:g}" for v in table.index])
        ax.set_xlabel(axis_label(x))
        ax.set_ylabel(axis_label(y))
        ax.set_title(label)
        for (i, j), value in _cells(table):
            ax.text(
                j,
                i,
                f"{value:.1f}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if value > 0.5 else "white",
            )
    fig.subplots_adjust(left=0.06, right=0.9, top=0.86, wspace=0.3)
    if image is not None:
        fig.colorbar(image, cax=fig.add_axes((0.92, 0.35, 0.012, 0.5)), label="success frequency")
    fig.suptitle(title)
    return _finish(fig, caption, path)


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
    """
    import numpy

    plt = _pyplot()
    fig, axes = plt.subplots(2, len(frames), figsize=(4.6 * len(frames) + 0.8, 8.2), squeeze=False)
    for column, (problem, frame) in enumerate(frames.items()):
        y = ys[problem]
        ok = frame[frame["status"] == "ok"] if len(frame) else frame
        for row, metric in enumerate(("norm_gap", "balancedness")):
            ax = axes[row][column]
            if metric not in ok or ok.empty:
                ax.set_axis_off()
                ax.set_title(f"{problem}: no certified solves")
                continue
            table = ok.groupby([y, x])[metric].mean().unstack(x).sort_index()
            logged = numpy.log10(table.abs().clip(lower=1e-300))
            image = ax.imshow(logged.to_numpy(dtype=float), origin="lower", cmap="viridis", aspect="auto")
            ax.set_xticks(range(table.shape[1]), [f"{v:g}" for v in table.columns])
            ax.set_yticks(range(table.shape[0]), [f"{v:g}" for v in table.index])
            ax.set_xlabel(axis_label(x))
            ax.set_ylabel(axis_label(y))
            name = "norm gap" if metric == "norm_gap" else "balancedness ||L^T L - R^T R||_F"
            ax.set_title(f"{problem}: log10 {name}", fontsize=9)
            for (i, j), value in _cells(logged):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=6, color="white")
            fig.colorbar(image, ax=ax, fraction=0.046)
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
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels) + 0.5, 4.6), squeeze=False)
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
