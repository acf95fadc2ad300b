"""Summary, per-run table, figure and caption of the ``stability-escape`` study (see that module)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies._study_tools import wilson_interval

MARKERS = {"sensing": "o", "digits": "s"}


def summarize(frame: Any, factor: float) -> Any:
    """Add escape counts and probability (Wilson interval), escape-step quartiles and normalized quantities.

    The normalized quantities are eta lambda_max, eta sqrt(c) s and the trace/Frobenius index q.
    """
    import numpy

    frame = frame[frame["status"] == "ok"].copy()
    steps = [numpy.asarray(s, dtype=float) for s in frame["escape_steps"]]
    frame["runs"] = [len(s) for s in steps]
    frame["escaped"] = [int((s >= 0).sum()) for s in steps]
    frame["escape_probability"] = frame["escaped"] / frame["runs"]
    bounds = [wilson_interval(k, n) for k, n in zip(frame["escaped"], frame["runs"], strict=True)]
    frame["wilson_low"] = [b[0] for b in bounds]
    frame["wilson_high"] = [b[1] for b in bounds]
    for q, column in ((25, "escape_step_q25"), (50, "escape_step_median"), (75, "escape_step_q75")):
        frame[column] = [float(numpy.percentile(s[s >= 0], q)) if (s >= 0).any() else math.nan for s in steps]
    rho = frame["growth"].to_numpy(dtype=float)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        frame["predicted_escape_step"] = numpy.where(
            ~frame["stable"].to_numpy(dtype=bool), math.log(factor) / numpy.log(rho), numpy.inf
        )
    eta, c = frame["learning_rate"], frame["noise_factor"]
    frame["eta_lambda_max"] = eta * frame["lambda_max"]
    frame["eta_sqrt_c_s"] = eta * numpy.sqrt(c) * frame["non_uniformity"]
    frame["trace_frobenius_index"] = (
        eta
        * ((1 - c) * frame["frobenius"] ** 2 + c * frame["mean_example_frobenius_sq"])
        / (2 * frame["trace"])
    )
    frame["batch_label"] = [
        f"B = {b} (GD)" if b == n else f"B = {b}"
        for b, n in zip(frame["batch"], frame["num_examples"], strict=True)
    ]
    return frame


def runs_frame(frame: Any) -> Any:
    """One row per SGD run: the cell's keys, the escape step (-1: stayed) and the final excess (log10)."""
    import pandas

    rows = []
    keys = ("setting", "minimum", "fraction", "batch", "learning_rate", "growth", "stable")
    for _, cell in frame.iterrows():
        for run, (step, final) in enumerate(
            zip(cell["escape_steps"], cell["final_log10_excess"], strict=True)
        ):
            rows.append(
                {**{k: cell[k] for k in keys}, "run": run, "escape_step": step, "final_log10_excess": final}
            )
    return pandas.DataFrame(rows)


def table(frame: Any) -> tuple[list[str], list[list[str]]]:
    """Per minimum: sharpness measures and the escaped share of runs in unstable / stable cells."""
    headers = [
        "setting",
        "minimum",
        "lambda_max",
        "non-unif. s",
        "trace",
        "||H||_F",
        "escaped | unstable",
        "escaped | stable",
    ]
    rows = []
    for (setting, minimum), group in frame.groupby(["setting", "minimum"], sort=False):
        first = group.iloc[0]
        share = []
        for stable in (False, True):
            part = group[group["stable"] == stable]
            runs = int(part["runs"].sum())
            share.append(f"{int(part['escaped'].sum())}/{runs}" if runs else "-")
        numbers = [common.fmt(first[c]) for c in ("lambda_max", "non_uniformity", "trace", "frobenius")]
        rows.append([setting, minimum, *numbers, *share])
    return headers, rows


def findings(frame: Any, config: Any) -> str:
    """The caption's statement of what happened, computed from the cells."""
    unstable, stable = frame[~frame["stable"]], frame[frame["stable"]]

    def share(part: Any) -> str:
        runs = int(part["runs"].sum())
        return f"{int(part['escaped'].sum())}/{runs} runs" if runs else "no runs"

    majority = (frame["escape_probability"] > 0.5) == ~frame["stable"]
    sgd = frame[frame["batch"] < frame["num_examples"]]
    hidden = sgd[(sgd["eta_lambda_max"] <= 2) & ~sgd["stable"]]
    timed = frame[(frame["growth"] > 1) & (frame["escaped"] > 0)]
    ratio = (
        (timed["escape_step_median"] / timed["predicted_escape_step"]).median() if len(timed) else math.nan
    )
    flat = frame[frame["minimum"].str.startswith("small-batch")]["lambda_max"].mean()
    full = frame[frame["minimum"].str.startswith("full-batch")]["lambda_max"].mean()
    return (
        f"Findings: SGD escaped in {share(unstable)} of the {len(unstable)} linearly unstable cells "
        f"(rho > 1) and in {share(stable)} of the {len(stable)} stable ones; the exact verdict predicts the "
        f"majority outcome in {int(majority.sum())}/{len(frame)} cells. {len(hidden)} SGD cell(s) are "
        f"unstable although eta lambda_max <= 2 (the GD condition misses them). Median observed / linearized "
        f"escape step over unstable cells: {common.fmt(ratio)}. Digits: lambda_max {common.fmt(flat)} (small "
        f"batch) vs {common.fmt(full)} (full batch), mean over training seeds {list(config.digits_seeds)}."
    )


def _scatter(ax: Any, frame: Any, column: str, colours: dict[str, str]) -> None:
    for (setting, label), group in frame.groupby(["setting", "batch_label"], sort=False):
        y = group["escape_probability"]
        err = [y - group["wilson_low"], group["wilson_high"] - y]
        ax.errorbar(
            group[column],
            y,
            yerr=err,
            fmt=MARKERS[setting],
            color=colours[label],
            ms=4,
            alpha=0.75,
            capsize=2,
            elinewidth=0.8,
        )


def figure(frame: Any, config: Any, path: Path) -> Path:
    """Six panels: escape probability against four stability quantities, a diagram, escape steps.

    The diagram places the SGD cells at (eta a, eta sqrt(c) s), coloured by escape probability; the escape
    steps are drawn against the growth factor with the linearized prediction.
    """
    import numpy
    from matplotlib.lines import Line2D

    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    labels = sorted(frame["batch_label"].unique(), key=lambda s: ("GD" in s, int(s.split()[2])))
    colours = {label: f"C{i}" for i, label in enumerate(labels)}
    panels = (
        (axes[0, 0], frame, "eta_lambda_max", 2.0, "eta * lambda_max(H)", "GD threshold eta lambda_max = 2"),
        (
            axes[0, 1],
            frame[frame["noise_factor"] > 0],
            "eta_sqrt_c_s",
            1.0,
            "eta * sqrt(c) * s (SGD cells)",
            "necessary: eta sqrt(c) s <= 1",
        ),
        (
            axes[0, 2],
            frame,
            "trace_frobenius_index",
            1.0,
            "q = eta [(1-c) ||H||_F^2 + c mean_j ||H_j||_F^2] / (2 tr H)",
            "necessary: q <= 1",
        ),
        (
            axes[1, 0],
            frame,
            "growth",
            1.0,
            "growth factor rho(T|S) of E||e||^2 per step",
            "exact threshold rho = 1",
        ),
    )
    for ax, part, column, threshold, xlabel, line in panels:
        _scatter(ax, part, column, colours)
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=line)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("escape probability (95% Wilson CI)")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=8, loc="center right")
    handles = [Line2D([], [], color=colours[k], marker="o", linestyle="", label=k) for k in labels]
    handles += [Line2D([], [], color="grey", marker=m, linestyle="", label=s) for s, m in MARKERS.items()]
    axes[1, 0].legend(  # the empty middle right of the growth panel (escape is a step at rho = 1)
        handles=[*axes[1, 0].get_legend_handles_labels()[0], *handles], fontsize=8, loc="center right"
    )
    axes[0, 0].set_title("against sharpness (step size x lambda_max)", fontsize=10)
    axes[0, 1].set_title("against non-uniformity (Wu, Ma & E 2018)", fontsize=10)
    axes[0, 2].set_title("against Frobenius / trace (Wu & Su 2023: tr H <= 2/eta at B = 1)", fontsize=10)
    axes[1, 0].set_title("against the exact linear-stability growth factor", fontsize=10)
    ax = axes[1, 1]
    sgd = frame[frame["noise_factor"] > 0]
    for setting, group in sgd.groupby("setting", sort=False):
        image = ax.scatter(
            group["eta_lambda_max"],
            group["eta_sqrt_c_s"],
            c=group["escape_probability"],
            cmap="viridis",
            vmin=0,
            vmax=1,
            marker=MARKERS[setting],
            s=30,
            edgecolors="k",
            linewidths=0.4,
        )
    low = max(1e-3, 0.5 * float(sgd["eta_lambda_max"].min())) if len(sgd) else 1e-2
    x = numpy.geomspace(low, 2.0, 200)
    ax.plot(
        x,
        numpy.sqrt(numpy.clip(1 - (1 - x) ** 2, 0, None)),
        "k-",
        linewidth=1,
        label="(1 - x)^2 + y^2 = 1 (1-D condition)",
    )
    ax.axvline(2.0, color="k", linestyle="--", linewidth=1, label="necessary box x <= 2, y <= 1")
    ax.axhline(1.0, color="k", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("x = eta * lambda_max(H)")
    ax.set_ylabel("y = eta * sqrt(c) * s")
    ax.set_title("stability diagram of the SGD cells", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    if len(sgd):
        fig.colorbar(image, ax=ax, shrink=0.85).set_label("escape probability")
    ax = axes[1, 2]
    timed = frame[frame["escaped"] > 0]
    for (setting, label), group in timed.groupby(["setting", "batch_label"], sort=False):
        y = group["escape_step_median"]
        err = [y - group["escape_step_q25"], group["escape_step_q75"] - y]
        ax.errorbar(group["growth"], y, yerr=err, fmt=MARKERS[setting], color=colours[label], ms=4, capsize=2)
    rho = numpy.geomspace(
        max(1.0 + 1e-3, float(frame["growth"].min())), max(2.0, float(frame["growth"].max())), 100
    )
    ax.plot(
        rho,
        math.log(config.escape_factor) / numpy.log(rho),
        "k-",
        linewidth=1,
        label=f"linearized: log({config.escape_factor:g}) / log(rho)",
    )
    ax.axvline(1.0, color="k", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("growth factor rho(T|S)")
    ax.set_ylabel("escape step (median, quartiles of escaped runs)")
    ax.set_title("escape time", fontsize=10)
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], fontsize=8, loc="upper right")
    fig.suptitle(
        "SGD escape from zero-loss minima against linear stability (Wu, Ma & E 2018; Wu et al. 2022-23)"
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    text = (
        "Each point: one minimum x (eta, B), eta = fraction * 2 / (smallest lambda_max of the setting); "
        f"{config.runs} SGD runs from w* + e0, |e0| = {config.perturbation:g} |w*|; escape: excess loss "
        f"x{config.escape_factor:g} within {config.max_steps} steps. c = (n - B) / (B (n - 1)); s, rho from "
        "per-example Hessians 2 g_j g_j^T on their span S. " + findings(frame, config)
    )
    return common.finish(fig, common.caption(config, text), path)
