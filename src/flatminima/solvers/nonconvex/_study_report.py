"""CSV tables and the figure of the flat-algorithms study (matplotlib imported lazily, Agg backend)."""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]

#: algorithms whose scaled trace along training the figure shows.
TRAJECTORY_ALGORITHMS = ("gd", "gd_burst", "sam", "sam_minibatch", "label_noise_sgd")


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    """Write ``rows`` (dicts; the union of their keys, in first-seen order) to ``path``; return it."""
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def _series(
    rows: Sequence[Row], setting: str, init: str, key: str
) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        if row["setting"] != setting or row["init"] != init or row["status"] == "diverged":
            continue
        xs, ys = out.setdefault(str(row["algorithm"]), ([], []))
        xs.append(int(row["num_measurements"]))
        ys.append(float(row[key]))
    return out


#: display ranges (values outside are drawn at the edge with a triangle marker).
LIMITS = {"str_ratio": (0.5, 20.0), "recovery_error": (1e-4, 10.0)}
MARKERS = "osD^v<>pP*Xh"


def plot_study(rows: Sequence[Row], trajectories: Sequence[Row], path: Path) -> Path:
    """Draw the study's figure: str ratio and recovery error against m per init, and str along training.

    Panels: for each init scale, (str ratio vs m) and (recovery error vs m) for sensing, the flat / NNM
    references as black lines; values outside the display range (a run trapped at the origin has
    str ratio ~ 0; the convex solutions recover to ~1e-15) are drawn at the edge with a triangle;
    diverged runs are omitted (the CSV keeps them). Last column: str ratio along training of GD, GD with
    a large-rate burst, SAM (full batch and minibatch) and label-noise SGD at the largest m with the
    large init, and for the quadratic network.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sensing = [r for r in rows if r["setting"] == "sensing"]
    inits = [i for i in dict.fromkeys(r["init"] for r in sensing) if i != "-"]
    n_rows = max(1, len(inits))
    fig, axes = plt.subplots(n_rows, 3, figsize=(18, 4.8 * n_rows), squeeze=False)
    cmap = plt.get_cmap("tab20")
    algorithms = [a for a in dict.fromkeys(r["algorithm"] for r in sensing) if a not in ("flat", "nnm")]
    style = {a: (cmap((2 * i) % 20 + (i // 10)), MARKERS[i % len(MARKERS)]) for i, a in enumerate(algorithms)}
    d = sensing[0]["dim"] if sensing else "?"
    for i, init in enumerate(inits):
        for j, (key, label) in enumerate(
            (("str_ratio", "scaled trace / flat"), ("recovery_error", "||X - M|| / ||M||"))
        ):
            ax = axes[i][j]
            low, high = LIMITS[key]
            for algorithm, (xs, ys) in _series(sensing, "sensing", init, key).items():
                color, marker = style.get(algorithm, ("gray", "o"))
                shown = [min(max(y, low), high) for y in ys]
                ax.plot(xs, shown, marker=marker, ms=4, lw=1, label=algorithm, color=color)
                for x, y in zip(xs, ys, strict=True):
                    if not low <= y <= high:
                        ax.plot(
                            [x], [low if y < low else high], marker="v" if y < low else "^", ms=9, color=color
                        )
            for ref, line in (("flat", "k-"), ("nnm", "k--")):
                xs, ys = _series(sensing, "sensing", "-", key).get(ref, ([], []))
                ax.plot(xs, [min(max(y, low), high) for y in ys], line, lw=2, label=f"{ref} (convex)")
            ax.set_yscale("log")
            ax.set_ylim(low / 1.2, high * 1.2)
            ax.set_xlabel("m (measurements)")
            ax.set_ylabel(label)
            ax.set_title(f"sensing d={d}, init '{init}'\n{label}", fontsize=10)
            _tidy(ax)
    axes[0][0].legend(fontsize=7, ncol=2)
    _plot_trajectories(axes, trajectories, inits)
    fig.suptitle(textwrap.fill(_caption(rows), width=170), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tidy(ax: Any) -> None:
    """Major grid lines only and no minor tick labels (log-axis minor labels are slow to typeset)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.grid(True, which="major", alpha=0.3)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    if ax.get_yscale() == "log":  # labelled ticks at 1, 2, 5 x 10^k so that narrow ranges keep labels
        ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))


def _caption(rows: Sequence[Row]) -> str:
    sensing = [r for r in rows if r["setting"] == "sensing"]
    if not sensing:
        return "flat-algorithms study"
    first = sensing[0]
    ms = sorted({int(r["num_measurements"]) for r in sensing})
    scales = {r["init"]: r["init_scale"] for r in sensing if r["init"] != "-"}
    iterations = max(int(r["iterations"]) for r in sensing)
    return (
        f"Gaussian sensing d = {first['dim']}, rank {first['rank']}, width k = d, m in {ms}; "
        f"init scales {scales}; {iterations} iterations (Entropy-SGD, replicated SGD: the same number of "
        "gradients); "
        "triangles: off-scale values; diverged runs omitted"
    )


def _plot_trajectories(axes: Any, trajectories: Sequence[Row], inits: list[str]) -> None:
    settings: list[tuple[str, str]] = []
    sensing_ms = [int(t["num_measurements"]) for t in trajectories if t["setting"] == "sensing"]
    if sensing_ms:
        settings.append(("sensing", inits[-1] if inits else "large"))
    if any(t["setting"] == "quadratic_network" for t in trajectories):
        settings.append(("quadratic_network", inits[-1] if inits else "large"))
    for row_index, (setting, init) in enumerate(settings[: len(axes)]):
        ax = axes[row_index][2]
        chosen = [t for t in trajectories if t["setting"] == setting and t["init"] == init]
        low, high = LIMITS["str_ratio"]
        if not chosen:
            continue
        m = max(int(t["num_measurements"]) for t in chosen)
        for algorithm in TRAJECTORY_ALGORITHMS:
            points = [t for t in chosen if t["algorithm"] == algorithm and int(t["num_measurements"]) == m]
            if points:
                xs = [max(int(t["iteration"]), 1) for t in points]
                ys = [min(max(float(t["str_ratio"]), low), high) for t in points]  # off-scale: at the edge
                ax.plot(xs, ys, lw=1.2, label=algorithm)
        ax.axhline(1.0, color="k", lw=1.5, label="flat solution")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(low / 1.2, high * 1.2)
        ax.set_xlabel("iteration")
        ax.set_ylabel("scaled trace / flat")
        ax.set_title(f"{setting}, m={m}, init '{init}'\nscaled trace along training", fontsize=10)
        _tidy(ax)
        ax.legend(fontsize=7)
    for row_index in range(len(settings), len(axes)):
        axes[row_index][2].axis("off")


def summary_table(rows: Sequence[Row], *, setting: str = "sensing", init: str | None = None) -> str:
    """A plain-text (Markdown) table: str ratio / recovery error per algorithm (rows) and m (columns)."""
    chosen = [r for r in rows if r["setting"] == setting and (init is None or r["init"] in (init, "-"))]
    ms = sorted({int(r["num_measurements"]) for r in chosen})
    algorithms = list(dict.fromkeys(r["algorithm"] for r in chosen))
    header = "| algorithm | " + " | ".join(f"m={m}: str ratio / rec. err / loss" for m in ms) + " |"
    lines = [header, "|" + "---|" * (len(ms) + 1)]
    for algorithm in algorithms:
        cells = []
        for m in ms:
            match = [r for r in chosen if r["algorithm"] == algorithm and int(r["num_measurements"]) == m]
            if not match:
                cells.append("-")
                continue
            r = match[0]
            if r["status"] == "diverged":
                cells.append("diverged")
                continue
            cells.append(f"{r['str_ratio']:.3f} / {r['recovery_error']:.1e} / {r['final_loss']:.0e}")
        lines.append(f"| {algorithm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
