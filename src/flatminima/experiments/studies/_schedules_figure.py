"""Figure, caption and summary table of the ``schedules`` study (see :mod:`.schedules_study`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from flatminima.experiments.studies import _common as common

KIND_COLOURS = {"monotone": "C0", "non-monotone": "C3"}


def _ok(frame: Any, setting: str) -> Any:
    part = frame[(frame["setting"] == setting) & (frame["status"] == "ok")]
    return part[~part["diverged"].astype(bool)] if "diverged" in part else part


def _mean(part: Any, column: str) -> float:
    return float(part[column].mean()) if len(part) and column in part else math.nan


def table(frame: Any) -> tuple[list[str], list[list[str]]]:
    """Per schedule: digits lambda_max, trace, test accuracy and the sensing str ratio per initialization.

    Digits: mean ± std over seeds; sensing: GD and SGD pooled, mean ± std over instances.
    """
    digits, sensing = _ok(frame, "digits"), _ok(frame, "sensing")
    headers = [
        "schedule",
        "kind",
        "digits lambda_max",
        "digits trace",
        "digits test acc",
        "str/flat (small init)",
        "str/flat (large init)",
        "final loss (large init)",
    ]
    rows = []
    for name in dict.fromkeys(frame["schedule"]):
        d = digits[digits["schedule"] == name]
        s = sensing[sensing["schedule"] == name]
        small, large = s[s["init"] == "small"], s[s["init"] == "large"]
        kind = frame.loc[frame["schedule"] == name, "kind"].iloc[0]
        cells = [
            common.mean_std(d[c]) if c in d else "-" for c in ("top_eigenvalue", "trace", "test_accuracy")
        ]
        cells += [common.mean_std(p["str_ratio"]) if "str_ratio" in p else "-" for p in (small, large)]
        cells.append(common.mean_std(large["final_loss"]) if "final_loss" in large else "-")
        rows.append([name, kind, *cells])
    return headers, rows


def findings(frame: Any) -> str:
    """Monotone against non-monotone means, computed from the runs."""
    digits, sensing = _ok(frame, "digits"), _ok(frame, "sensing")
    parts = []
    if len(digits):
        by = {k: digits[digits["kind"] == k] for k in KIND_COLOURS}
        sharpness = digits.groupby("schedule")["top_eigenvalue"].mean()
        accuracy = 100 * digits.groupby("schedule")["test_accuracy"].mean()
        spread = 100 * digits.groupby("schedule")["test_accuracy"].std(ddof=1).mean()
        parts.append(
            "Digits (mean over schedules and seeds): lambda_max "
            f"{common.fmt(_mean(by['monotone'], 'top_eigenvalue'))} monotone vs "
            f"{common.fmt(_mean(by['non-monotone'], 'top_eigenvalue'))} non-monotone (flattest "
            f"{sharpness.idxmin()} {common.fmt(sharpness.min())}, sharpest {sharpness.idxmax()} "
            f"{common.fmt(sharpness.max())}); test accuracy "
            f"{common.fmt(_mean(by['monotone'], 'test_accuracy') * 100)}% vs "
            f"{common.fmt(_mean(by['non-monotone'], 'test_accuracy') * 100)}%, schedule means from "
            f"{common.fmt(accuracy.min())}% ({accuracy.idxmin()}) to {common.fmt(accuracy.max())}% "
            f"({accuracy.idxmax()}), seed std {common.fmt(spread)}%."
        )
    for init in ("small", "large"):
        for solver in ("gd", "sgd"):
            part = sensing[(sensing["init"] == init) & (sensing["solver"] == solver)]
            if len(part) and "str_ratio" in part:
                mono, non = part[part["kind"] == "monotone"], part[part["kind"] == "non-monotone"]
                parts.append(
                    f"Sensing {solver.upper()} from the {init} init: str/flat "
                    f"{common.fmt(_mean(mono, 'str_ratio'))} monotone vs "
                    f"{common.fmt(_mean(non, 'str_ratio'))} non-monotone."
                )
    diverged = int(frame.get("diverged", frame["status"] != "ok").astype(bool).sum())
    failed = int((frame["status"] != "ok").sum())
    parts.append(f"{diverged} diverged and {failed} failed run(s) are left out.")
    return " ".join(parts)


def _points(
    ax: Any, part: Any, column: str, names: list[str], offset: float, colour: str, label: str | None
) -> None:
    """Every value and, per schedule, mean ± std (geometric mean ×/÷ geometric std on a log axis)."""
    import numpy

    log = ax.get_yscale() == "log"
    for i, name in enumerate(names):
        values = part.loc[part["schedule"] == name, column].dropna().to_numpy(dtype=float)
        values = values[values > 0] if log else values
        if not len(values):
            continue
        ax.scatter([i + offset] * len(values), values, s=10, color=colour, alpha=0.5)
        data = numpy.log(values) if log else values
        centre, spread = data.mean(), data.std(ddof=1) if len(data) > 1 else 0.0
        low, high = (
            (numpy.exp(centre - spread), numpy.exp(centre + spread))
            if log
            else (centre - spread, centre + spread)
        )
        middle = numpy.exp(centre) if log else centre
        ax.errorbar(
            i + offset,
            middle,
            yerr=[[middle - low], [high - middle]],
            fmt="_",
            color=colour,
            capsize=4,
            label=label,
            markersize=12,
        )
        label = None


def draw(frame: Any, config: Any, path: Path) -> Path:
    """Schedules, digits sharpness / trace / test accuracy, sensing str ratio and final loss."""
    import numpy

    from flatminima.experiments.studies.schedules_study import schedule
    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    names = list(config.schedules)
    ax = axes[0, 0]
    t = numpy.arange(1000)
    for i, name in enumerate(names):
        s = schedule(name, 1000, peak=config.peak, cycles=config.cycles, warmup=config.warmup)
        ax.plot(t / 1000, [s(int(k)) for k in t], color=f"C{i}", label=name, linestyle="-" if i < 3 else "--")
    ax.set_xlabel("training progress t / N")
    ax.set_ylabel("learning rate / eta_high")
    ax.set_title("the schedules (solid: monotone, dashed: non-monotone)", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    digits = _ok(frame, "digits")
    panels = (
        (
            axes[0, 1],
            "top_eigenvalue",
            "lambda_max of the training loss (log scale)",
            "digits: top Hessian eigenvalue",
        ),
        (axes[0, 2], "trace", "Hessian trace (log scale)", "digits: Hessian trace (Hutchinson)"),
        (axes[1, 0], "test_accuracy", "test accuracy", "digits: test accuracy"),
    )
    for ax, column, ylabel, title in panels:
        if column != "test_accuracy":
            ax.set_yscale("log")
        for kind, colour in KIND_COLOURS.items():
            part = digits[digits["kind"] == kind] if column in digits else digits.iloc[:0]
            if len(part):
                spread = "mean ± std" if column == "test_accuracy" else "geometric mean ×/÷ std"
                _points(ax, part, column, names, 0.0, colour, f"{kind} (seeds, {spread})")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
    sensing = _ok(frame, "sensing")
    groups = [(i, s) for i in ("small", "large") for s in ("gd", "sgd")]
    for ax, column, ylabel, title in (
        (axes[1, 1], "str_ratio", "scaled trace / flat solution's (log scale)", "sensing: final str ratio"),
        (axes[1, 2], "final_loss", "final training loss (log scale)", "sensing: final loss, colours as left"),
    ):
        ax.set_yscale("log")
        for k, (init, solver) in enumerate(groups):
            part = sensing[(sensing["init"] == init) & (sensing["solver"] == solver)]
            if column in part and len(part):
                _points(
                    ax, part, column, names, (k - 1.5) * 0.18, f"C{k + 4}", f"{solver.upper()}, {init} init"
                )
        if column == "str_ratio":
            ax.axhline(1.0, color="k", linestyle="--", linewidth=1, label="flat solution")
        ax.set_ylabel(ylabel)
        ax.set_title(title + " (instances, geometric mean ×/÷ std)", fontsize=10)
    for ax in (*axes[0, 1:], *axes[1, :]):
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("_", "\n") for n in names], fontsize=8)
        ax.set_xlabel("schedule")
        if ax is not axes[1, 2]:  # the final-loss panel uses the colours of the str-ratio panel
            ax.legend(fontsize=8, loc="best")
    fig.suptitle("Monotone vs non-monotone learning-rate schedules (Seong et al. 2018)")
    fig.tight_layout(rect=(0, 0.12, 1, 0.97))
    text = (
        "Same largest rate eta_high and (except constant) final rate eta_high / peak; digits: plain SGD on "
        "the cross-entropy, lambda_max by Lanczos, trace by Hutchinson (100 probes) at the final point; "
        "sensing: eta_high = 0.9 x the largest rate at which GD / SGD is linearly stable at the flat "
        "solution, str = scaled Hessian trace. " + findings(frame)
    )
    return common.finish(fig, common.caption(config, text), path)
