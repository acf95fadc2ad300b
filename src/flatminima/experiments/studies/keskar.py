"""Large vs small batch (Keskar et al. 2017) on digits: sharpness and generalization gap over seeds.

For every seed the same MLP (same initialization) is trained by SGD with a small and with a large batch,
at one learning rate, until the full training cross-entropy is <= ``target_loss`` (the same loss for
both). At each solution we measure Keskar's epsilon-sharpness

    phi(eps, A) = 100 (max_{|y_i| <= eps(|(A^+ x)_i| + 1)} f(x + A y) - f(x)) / (1 + f(x)),

in the full space (A = I) and in a random 100-dimensional subspace, for eps in {1e-3, 5e-4}, the top
Hessian eigenvalue (Lanczos), the Hessian trace (Hutchinson, with its standard error), and the
generalization gaps (test minus train cross-entropy and 0-1 error). The figure shows every seed and the
1-D interpolation f((1 - t) x_small + t x_large), t in [-1, 2], of the first seed (Keskar et al., Fig. 3).
Numbers are whatever they turn out to be; nothing is tuned.

References:
    N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang. On large-batch training for
    deep learning: generalization gap and sharp minima. ICLR 2017.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from flatminima._checks import check_int_in_range
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.study import StudyOutput, progress_bar
from flatminima.landscape import interpolate, model_functions
from flatminima.networks import evaluate


@dataclasses.dataclass(frozen=True)
class KeskarConfig(common.BatchRegimes):
    """Hyperparameters of the study (the module); the training ones are those of ``BatchRegimes``."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    interpolation_points: int = 31

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.seeds:
            raise ConfigurationError("seeds must name at least one seed; got seeds=().")
        for seed in self.seeds:
            check_int_in_range("seeds[i]", seed, low=0)
        check_int_in_range("interpolation_points", self.interpolation_points, low=2)


QUICK = KeskarConfig(seeds=(0, 1, 2), target_loss=0.03, num_train=600, large_batch=300, max_epochs=3000)
FULL = KeskarConfig()


def run(
    config: KeskarConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train, measure, write ``out_dir/NAME.png`` (+ ``NAME_interpolation.csv``); see the module."""
    import pandas

    rows: list[dict[str, Any]] = []
    curve = None
    with progress_bar(sweep, 2 * len(config.seeds), progress) as bar:
        for seed in config.seeds:
            data = common.digits(seed, config.num_train)
            solutions = {}
            for regime, batch in config.regimes(data):
                result = config.train(data, seed, batch)
                op = common.hessian(result.model, data)
                generator = common.streams(seed)["measure"]
                row = {"seed": seed, "regime": regime, "batch_size": batch, "epochs": result.epochs}
                row.update(steps=result.steps, reached_target=result.reached_target)
                row.update(evaluate(result.model, data))
                row.update(common.keskar_sharpness(op, generator))
                row.update(common.curvature(op, generator))
                rows.append(row)
                solutions[regime] = result.model
                bar.advance(failed=not result.reached_target)
            if curve is None:
                functions = model_functions(
                    solutions["small"],
                    {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)},
                )
                curve = interpolate(
                    functions,
                    solutions["small"],
                    solutions["large"],
                    extent=(-1.0, 2.0),
                    num_points=config.interpolation_points,
                )
    frame = pandas.DataFrame(rows)
    assert curve is not None
    line = pandas.DataFrame({"t": curve.ts.numpy(), **{k: v.numpy() for k, v in curve.values.items()}})
    line.to_csv(out_dir / f"{name}_interpolation.csv", index=False)
    figure = _draw(frame, line, config, out_dir / f"{name}.png")
    columns = {
        "epochs": "epochs",
        "train_loss": "train loss",
        "gap_error": "gap (0-1)",
        "gap_loss": "gap (CE)",
        "eps_sharpness_full_0.001": "phi full 1e-3 (%)",
        "eps_sharpness_full_0.0005": "phi full 5e-4 (%)",
        "eps_sharpness_sub100_0.001": "phi sub100 1e-3 (%)",
        "eps_sharpness_sub100_0.0005": "phi sub100 5e-4 (%)",
        "top_eigenvalue": "lambda_max",
        "trace": "trace",
    }
    return StudyOutput(frame, figure, common.table_from(frame, "regime", columns))


def _sharpness_tick(column: str) -> str:
    """A two-line tick label of a sharpness column: ``eps_sharpness_sub100_0.001`` -> the space, then eps."""
    space, eps = column.removeprefix("eps_sharpness_").rsplit("_", 1)
    return f"{'full' if space == 'full' else space.removeprefix('sub') + '-dim'}\neps={float(eps):g}"


def _draw(frame: Any, line: Any, config: KeskarConfig, path: Path) -> Path:
    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 5))
    ax = axes[0]
    ax.plot(line["t"], line["train_loss"], label="train CE")
    ax.plot(line["t"], line["test_loss"], label="test CE")
    ax.set_ylabel("cross-entropy (solid)")
    twin = ax.twinx()
    twin.plot(line["t"], 100 * (1 - line["train_error"]), "--", label="train acc (%)")
    twin.plot(line["t"], 100 * (1 - line["test_error"]), "--", label="test acc (%)")
    twin.set_ylabel("accuracy, % (dashed)")
    ax.set_xlabel("t (0: small batch, 1: large batch)")
    ax.set_title(f"interpolation (1 - t) w_small + t w_large, seed {config.seeds[0]}", fontsize=10)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center right")
    sharpness = [c for c in frame.columns if c.startswith("eps_sharpness")]
    panels = [
        (axes[1], sharpness, [_sharpness_tick(c) for c in sharpness], "epsilon-sharpness phi", "phi (%)"),
        (axes[2], ["top_eigenvalue", "trace"], ["lambda_max", "trace"], "Hessian", "value"),
        (axes[3], ["gap_error", "gap_loss"], ["0-1 error", "cross-entropy"], "gap", "test - train"),
    ]
    for ax, columns, ticks, title, ylabel in panels:
        for k, regime in enumerate(("small", "large")):
            group = frame[frame["regime"] == regime]
            for i, column in enumerate(columns):
                x = i + (k - 0.5) * 0.3
                ax.scatter([x] * len(group), group[column], s=14, color=f"C{k}", alpha=0.6)
                ax.errorbar(
                    x,
                    group[column].mean(),
                    yerr=group[column].std(ddof=1) if len(group) > 1 else 0,
                    fmt="_",
                    color=f"C{k}",
                    capsize=4,
                    label=f"{regime} batch" if i == 0 else None,
                )
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(ticks, fontsize=8)
        ax.set_xlim(-0.6, len(columns) - 0.4)
        if title != "gap":
            ax.set_yscale("log")
        ax.set_title(f"{title} (every seed, mean ± std)", fontsize=10)
        ax.set_xlabel({"gap": "quantity", "Hessian": "measure"}.get(title, "space (full / subspace), eps"))
        ax.set_ylabel(ylabel + (" (log scale)" if title != "gap" else " (generalization gap)"))
        ax.legend(fontsize=8)
    fig.suptitle("Large vs small batch on digits (Keskar et al. 2017)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    return common.finish(
        fig,
        common.caption(
            config,
            "SGD without momentum from the same initialization (per seed) to the same training "
            "cross-entropy; phi in percent (10 L-BFGS-B "
            "iterations, random start); lambda_max by Lanczos; trace by Hutchinson (100 Rademacher probes).",
        ),
        path,
    )
