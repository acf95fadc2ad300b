"""Loss landscapes of two digits minimizers (small and large batch): 1-D, 2-D random and Hessian slices.

Two MLPs are trained from the same initialization with a small and a large batch to the same training
loss (as in ``keskar-batch``). For each solution w we draw

* 1-D: the interpolation f((1 - t) w_small + t w_large), t in [-1, 2] (Goodfellow et al. 2015);
* 2-D: f(w + x d_1 + y d_2) with d_1, d_2 Gaussian and filter-normalized (Li et al. 2018: every filter of
  d rescaled to the norm of the same filter of w; biases zero), as contour and surface plots, and with
  d_1, d_2 the top two Hessian eigenvectors (Lanczos) rescaled to the norm of w (both slices are in
  units of ||w||; the Hessian slice spans +-``hessian_extent``, the random one +-``extent``);
* basin widths: along ``num_directions`` filter-normalized random directions, the width of
  {t : f(w + s d) <= f(w) + delta for s between 0 and t} (grid scan, then bisection), mean and spread
  per solution, and the same along the top eigenvector (scaled to ||w||).

f is the training cross-entropy. All directions come from generators derived from the seed.

References:
    H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein. Visualizing the loss landscape of neural nets.
    NeurIPS 2018.
    N. S. Keskar et al. On large-batch training for deep learning. ICLR 2017.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.experiments.studies import _common as common
from flatminima.experiments.study import StudyOutput, progress_bar
from flatminima.landscape import (
    as_params,
    direction_norm,
    directional_width,
    hessian_directions,
    interpolate,
    model_functions,
    plot_contour,
    plot_surface,
    random_direction,
    slice_2d,
)
from flatminima.networks import evaluate
from flatminima.random import derive_seed, make_generator


@dataclasses.dataclass(frozen=True)
class LandscapeConfig(common.BatchRegimes):
    """Settings of the digits landscape study (the module); training settings as ``BatchRegimes``."""

    seed: int = 0
    grid_points: int = 31
    extent: float = 1.0
    hessian_extent: float = 0.25
    num_directions: int = 10
    delta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int_in_range("seed", self.seed, low=0)
        check_int_in_range("grid_points", self.grid_points, low=3)
        check_real("extent", self.extent, low=0.0, low_open=True)
        check_real("hessian_extent", self.hessian_extent, low=0.0, low_open=True)
        check_int_in_range("num_directions", self.num_directions, low=1)
        check_real("delta", self.delta, low=0.0, low_open=True)


QUICK = LandscapeConfig(num_train=600, large_batch=300, target_loss=0.03, grid_points=13, num_directions=4)
FULL = LandscapeConfig()


def run(
    config: LandscapeConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train both solutions, slice, measure widths, draw; see the module."""
    import pandas

    data = common.digits(config.seed, config.num_train)
    solutions = {}
    rows: list[dict[str, Any]] = []
    grids: list[dict[str, Any]] = []
    surfaces: dict[tuple[str, str], Any] = {}
    extent = (-config.extent, config.extent)
    with progress_bar(sweep, 2, progress) as bar:
        for regime, batch in config.regimes(data):
            result = config.train(data, config.seed, batch)
            model = result.model
            solutions[regime] = model
            f = model_functions(model, {"train": (data.x_train, data.y_train)})
            loss = {"train_loss": f["train_loss"]}
            generator = make_generator(derive_seed(config.seed, f"landscape:{regime}"))
            random_pair = [random_direction(model, generator=generator) for _ in range(2)]
            op = common.hessian(model, data)
            scale = direction_norm(as_params(model))
            eigen_pair = [
                {k: v * scale for k, v in d.items()} for d in hessian_directions(op, 2, generator=generator)
            ]
            eigen_extent = (-config.hessian_extent, config.hessian_extent)
            for kind, (dx, dy), box in (
                ("random", random_pair, extent),
                ("hessian", eigen_pair, eigen_extent),
            ):
                surface = slice_2d(loss, model, dx, dy, extent=box, num_points=config.grid_points)
                surfaces[(regime, kind)] = surface
                for i, y in enumerate(surface.ys.tolist()):
                    for j, x in enumerate(surface.xs.tolist()):
                        grids.append(
                            {
                                "solution": regime,
                                "kind": kind,
                                "x": x,
                                "y": y,
                                "train_loss": float(surface.values["train_loss"][i, j]),
                            }
                        )
            widths = [
                directional_width(
                    loss["train_loss"],
                    model,
                    random_direction(model, generator=generator),
                    config.delta,
                    extent=config.extent,
                )
                for _ in range(config.num_directions)
            ]
            eigen_width = directional_width(
                loss["train_loss"], model, eigen_pair[0], config.delta, extent=config.hessian_extent
            )
            row: dict[str, Any] = {"solution": regime, "batch_size": batch, "epochs": result.epochs}
            row.update(evaluate(model, data))
            row.update(common.curvature(op, make_generator(derive_seed(config.seed, f"measure:{regime}"))))
            row.update(
                width_random_mean=float(torch.tensor(widths).mean()),
                width_random_std=float(torch.tensor(widths).std()) if len(widths) > 1 else 0.0,
                width_top_eigenvector=eigen_width,
                widths=" ".join(f"{w:.4g}" for w in widths),
            )
            rows.append(row)
            bar.advance(failed=not result.reached_target)
    functions = model_functions(
        solutions["small"], {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    )
    line = interpolate(functions, solutions["small"], solutions["large"], extent=(-1.0, 2.0), num_points=31)
    frame = pandas.DataFrame(rows)
    pandas.DataFrame(grids).to_csv(out_dir / f"{name}_grid.csv", index=False)
    pandas.DataFrame({"t": line.ts.numpy(), **{k: v.numpy() for k, v in line.values.items()}}).to_csv(
        out_dir / f"{name}_interpolation.csv", index=False
    )
    figure = _draw(surfaces, line, frame, config, out_dir / f"{name}.png")
    headers = [
        "solution",
        "train loss",
        "test error",
        "lambda_max",
        "trace",
        f"width (random, delta={config.delta:g})",
        "width (top eigvec)",
    ]
    table = [
        [
            r["solution"],
            common.fmt(r["train_loss"]),
            common.fmt(r["test_error"]),
            common.fmt(r["top_eigenvalue"]),
            common.fmt(r["trace"]),
            f"{r['width_random_mean']:.4g} ± {r['width_random_std']:.2g}",
            common.fmt(r["width_top_eigenvector"]),
        ]
        for _, r in frame.iterrows()
    ]
    return StudyOutput(frame, figure, (headers, table))


def _draw(
    surfaces: dict[tuple[str, str], Any], line: Any, frame: Any, config: LandscapeConfig, path: Path
) -> Path:
    import numpy
    from matplotlib.ticker import MaxNLocator

    from flatminima.landscape.plots import grid_values, plot_curve, pyplot

    plt = pyplot()
    fig = plt.figure(figsize=(20, 9.5))
    labels = {
        "random": ("alpha (filter-normalized d1)", "beta (filter-normalized d2)"),
        "hessian": ("alpha (top eigenvector v1, x ||w||)", "beta (2nd eigenvector v2, x ||w||)"),
    }
    levels = {}  # small and large batch share the levels (one colour scale) of each kind of slice
    for kind in labels:
        values = numpy.stack(
            [grid_values(surfaces[(r, kind)], "train_loss", log=True) for r in ("small", "large")]
        )
        levels[kind] = [float(v) for v in MaxNLocator(20).tick_values(values.min(), values.max())]
    for r, regime in enumerate(("small", "large")):
        for column, kind, title in (
            (1, "random", "filter-normalized random slice"),
            (3, "hessian", "top-2 Hessian eigenvectors"),
        ):
            ax = fig.add_subplot(2, 4, 4 * r + column)
            xlabel, ylabel = labels[kind]
            plot_contour(
                ax,
                surfaces[(regime, kind)],
                "train_loss",
                log=True,
                levels=levels[kind],
                xlabel=xlabel,
                ylabel=ylabel,
            )
            ax.set_title(f"{regime} batch: {title}", fontsize=10)
        ax = fig.add_subplot(2, 4, 4 * r + 2, projection="3d")
        plot_surface(
            ax,
            surfaces[(regime, "random")],
            "train_loss",
            log=True,
            xlabel="alpha (d1)",
            ylabel="beta (d2)",
            zoom=1.2,
        )
        ax.set_title(f"{regime} batch: the random slice as a surface", fontsize=10)
    ax = fig.add_subplot(2, 4, 4)
    plot_curve(
        ax,
        line,
        ["train_loss", "test_loss"],
        log=True,
        xlabel="t (0: small batch, 1: large batch)",
        ylabel="cross-entropy",
    )
    for t in (0.0, 1.0):
        ax.axvline(t, color="0.6", linewidth=0.6, linestyle=":")
    ax.set_title("1-D interpolation (1 - t) w_small + t w_large", fontsize=10)
    ax = fig.add_subplot(2, 4, 8)
    for k, (_, r) in enumerate(frame.iterrows()):
        widths = [float(w) for w in r["widths"].split()]
        ax.scatter([k] * len(widths), widths, color=f"C{k}", s=16, label="one direction" if k == 0 else None)
        ax.errorbar(
            k,
            r["width_random_mean"],
            yerr=r["width_random_std"],
            fmt="_",
            color="k",
            capsize=5,
            label="mean ± std" if k == 0 else None,
        )
    ax.set_xticks(range(len(frame)))
    ax.set_xticklabels([f"{s} batch" for s in frame["solution"]])
    ax.set_xlim(-0.6, len(frame) - 0.4)
    ax.set_xlabel("solution")
    ax.set_ylabel(f"width of {{f <= f(w) + {config.delta:g}}} (x ||d||)")
    ax.legend(fontsize=8)
    ax.set_title(f"basin width along {config.num_directions} filter-normalized directions", fontsize=10)
    fig.suptitle("Loss landscapes of small- and large-batch digits MLPs (training cross-entropy, log10)")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97), w_pad=2.0)
    text = (
        "Slices: f(w + alpha d1 + beta d2), red cross at the solution w; small and large batch share the "
        "colour scale of each kind of slice. Widths are lower bounds when the "
        "level is not crossed inside +-extent."
    )
    return common.finish(fig, common.caption(config, text), path)
