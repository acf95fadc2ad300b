"""Landscapes of matrix sensing minimizers: flat vs norm-minimal vs gradient-descent solutions.

For one Gaussian sensing instance (d x d, rank r, m measurements) and the factorized loss
f(L, R) = (1/m) ||A(L R^T) - b||^2 at width k = d, four zero-loss points are compared:

* ``flat``: factors of the flat relaxation P_flat (Theorem 3.2 of Ding et al.), the minimizer of the
  scaled trace str = tr H_LL / d1 + tr H_RR / d2 over the zero-loss set;
* ``norm-minimal``: balanced factors U S^{1/2}, V S^{1/2} of the nuclear-norm minimizer X = U S V^T;
* ``gd-small-init`` and ``gd-large-init``: full-batch gradient descent from N(0, scale^2) factors.

Flatness "in the paper's scaled sense" is measured along scaled random directions v = S z, z ~ N(0, I),
S = diag(d1^{-1/2} on L, d2^{-1/2} on R), for which E[v^T H v] = str: for each solution the width of
{t : f(w + t v) <= f(w) + delta} over ``num_directions`` directions (the same directions at every
solution), the same along filter-normalized directions (Li et al. 2018: each row of L and R rescaled to
the norm of that row of the solution), the exact scaled trace and trace (closed forms), and the top
eigenvalue (Lanczos). 2-D slices along two scaled directions, two filter-normalized directions and the
top-2 Hessian eigenvectors (contours, and surfaces for two solutions), and 1-D interpolations from the
flat solution to each other one are drawn.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024.
    H. Li et al. Visualizing the loss landscape of neural nets. NeurIPS 2018.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.curvature import HessianOperator, lanczos_eigenvalues
from flatminima.experiments.studies import _common as common
from flatminima.experiments.study import StudyOutput, progress_bar
from flatminima.landscape import (
    directional_width,
    hessian_directions,
    interpolate,
    plot_contour,
    plot_surface,
    random_direction,
    slice_2d,
)
from flatminima.random import child_generators, derive_seed, make_generator

SOLUTIONS = ("flat", "norm-minimal", "gd-small-init", "gd-large-init")


@dataclasses.dataclass(frozen=True)
class SensingLandscapeConfig:
    """Settings of the sensing landscape study (see the module)."""

    seed: int = 0
    dim: int = 10
    rank: int = 2
    num_measurements: int = 50
    small_init: float = 1e-3
    small_step: float = 0.2
    large_init: float = 0.5
    large_step: float = 0.02
    max_iterations: int = 4000
    num_directions: int = 20
    delta: float = 0.01
    extent: float = 0.4
    filter_extent: float = 1.0
    grid_points: int = 31

    def __post_init__(self) -> None:
        check_int_in_range("seed", self.seed, low=0)
        check_int_in_range("dim", self.dim, low=2)
        check_int_in_range("rank", self.rank, low=1, high=self.dim, high_name="dim")
        check_int_in_range("num_measurements", self.num_measurements, low=1)
        for field in (
            "small_init",
            "small_step",
            "large_init",
            "large_step",
            "delta",
            "extent",
            "filter_extent",
        ):
            check_real(field, getattr(self, field), low=0.0, low_open=True)
        check_int_in_range("num_directions", self.num_directions, low=1)
        check_int_in_range("grid_points", self.grid_points, low=3)


QUICK = SensingLandscapeConfig(num_directions=8, grid_points=15, max_iterations=3000)
FULL = SensingLandscapeConfig()


def solutions(
    config: SensingLandscapeConfig,
) -> tuple[Any, Any, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """(instance, objective, {name: (L, R)}) of the four solutions."""
    from flatminima.objectives import BilinearFactorization
    from flatminima.problems import MatrixSensing
    from flatminima.solvers import ConvexResult, solve_flat, solve_nuclear_norm
    from flatminima.solvers.nonconvex.descent import GradientDescent

    gens = child_generators(config.seed, "instance", "small", "large")
    problem = MatrixSensing(
        shape=(config.dim, config.dim), rank=config.rank, num_measurements=config.num_measurements
    )
    instance = problem.sample(generator=gens["instance"])
    objective = BilinearFactorization(instance, width=config.dim)
    flat = solve_flat(instance)
    if not isinstance(flat, ConvexResult):  # pragma: no cover - matrix sensing gives a ConvexResult
        raise TypeError(f"expected a ConvexResult from solve_flat; got {type(flat).__name__}.")
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {"flat": flat.factors(config.dim)}
    U, S, Vh = torch.linalg.svd(solve_nuclear_norm(instance).matrix)
    root = S.clamp(min=0).sqrt()
    out["norm-minimal"] = (U * root, Vh.mT * root)
    for name, scale, step, gen in (
        ("gd-small-init", config.small_init, config.small_step, gens["small"]),
        ("gd-large-init", config.large_init, config.large_step, gens["large"]),
    ):
        solver = GradientDescent(step_size=step, max_iterations=config.max_iterations, tolerance=1e-12)
        result = solver.run(objective, objective.random_params(generator=gen, scale=scale))
        out[name] = (result.params[0], result.params[1])
    return instance, objective, out


KINDS = ("scaled", "filter", "hessian")


def run(
    config: SensingLandscapeConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Solve, measure, slice, draw; see the module."""
    import pandas

    instance, objective, points = solutions(config)
    loss = {"loss": lambda p: objective.value((p["L"], p["R"]))}
    d = config.dim
    gens = child_generators(config.seed, "directions", "lanczos")

    def scaled_direction() -> dict[str, torch.Tensor]:
        z = torch.randn(2, d, d, generator=gens["directions"], dtype=torch.float64)
        return {"L": (z[0] / d**0.5).to(instance.dtype), "R": (z[1] / d**0.5).to(instance.dtype)}

    directions = [scaled_direction() for _ in range(config.num_directions)]
    plane = [scaled_direction(), scaled_direction()]
    extent = (-config.extent, config.extent)
    filter_box = (-config.filter_extent, config.filter_extent)
    rows, grids, surfaces = [], [], {}
    with progress_bar(sweep, len(points), progress) as bar:
        for label, (L, R) in points.items():
            w = {"L": L, "R": R}
            op = HessianOperator.from_objective(objective, (L, R))
            top = lanczos_eigenvalues(op, 1, generator=gens["lanczos"], tol=1e-8)
            # the same Gaussian draws at every solution, filter-normalized to each one's rows
            filter_gen = make_generator(derive_seed(config.seed, "filter-directions"))
            filtered = [random_direction(w, generator=filter_gen) for _ in range(config.num_directions + 2)]
            boxes = {"scaled": extent, "filter": filter_box, "hessian": extent}
            widths = {
                kind: [directional_width(loss["loss"], w, v, config.delta, extent=boxes[kind][1]) for v in vs]
                for kind, vs in (("scaled", directions), ("filter", filtered[2:]))
            }
            planes = {
                "scaled": plane,
                "filter": filtered[:2],
                "hessian": hessian_directions(op, 2, generator=gens["lanczos"]),
            }
            X = L @ R.mT
            row: dict[str, Any] = {
                "solution": label,
                "loss": float(objective.value((L, R))),
                "recovery_error": float(torch.linalg.matrix_norm(X - instance.ground_truth)),
                "nuclear_norm": float(torch.linalg.matrix_norm(X, ord="nuc")),
                "factor_norm": float(L.square().sum() + R.square().sum()),
                "scaled_trace": float(objective.scaled_trace((L, R))),
                "trace": float(objective.hessian_trace((L, R))),
                "top_eigenvalue": float(top.eigenvalues[0]),
            }
            for kind, values in widths.items():
                row[f"width_{kind}_mean"] = float(torch.tensor(values).mean())
                row[f"width_{kind}_std"] = float(torch.tensor(values).std())
                row[f"widths_{kind}"] = " ".join(f"{x:.4g}" for x in values)
            rows.append(row)
            for kind, (dx, dy) in planes.items():
                surface = slice_2d(loss, w, dx, dy, extent=boxes[kind], num_points=config.grid_points)
                surfaces[(label, kind)] = surface
                for i, y in enumerate(surface.ys.tolist()):
                    for j, x in enumerate(surface.xs.tolist()):
                        value = float(surface.values["loss"][i, j])
                        grids.append({"solution": label, "kind": kind, "x": x, "y": y, "loss": value})
            bar.advance(failed=False)
    flat = {"L": points["flat"][0], "R": points["flat"][1]}
    lines = {
        label: interpolate(loss, flat, {"L": L, "R": R}, extent=(-0.5, 1.5), num_points=41)
        for label, (L, R) in points.items()
        if label != "flat"
    }
    frame = pandas.DataFrame(rows)
    pandas.DataFrame(grids).to_csv(out_dir / f"{name}_grid.csv", index=False)
    figure = _draw(frame, surfaces, lines, config, out_dir / f"{name}.png")
    headers = [
        "solution",
        "loss",
        "||X - M||_F",
        "||X||_*",
        "scaled trace",
        "trace",
        "lambda_max",
        f"width scaled (delta={config.delta:g})",
        "width filter-normalized",
    ]
    table = [
        [
            r["solution"],
            f"{r['loss']:.1e}",
            common.fmt(r["recovery_error"]),
            common.fmt(r["nuclear_norm"]),
            common.fmt(r["scaled_trace"]),
            common.fmt(r["trace"]),
            common.fmt(r["top_eigenvalue"]),
            f"{r['width_scaled_mean']:.4g} ± {r['width_scaled_std']:.2g}",
            f"{r['width_filter_mean']:.4g} ± {r['width_filter_std']:.2g}",
        ]
        for _, r in frame.iterrows()
    ]
    return StudyOutput(frame, figure, (headers, table))


_TITLES = {
    "scaled": "scaled random (S z)",
    "filter": "filter-normalized random",
    "hessian": "top-2 Hessian eigenvectors",
}
#: the coefficients along the two directions of each kind of slice (axis labels).
_AXES = {
    "scaled": ("alpha (along S z1)", "beta (along S z2)"),
    "filter": ("alpha (filter-normalized d1)", "beta (filter-normalized d2)"),
    "hessian": ("alpha (eigenvector v1)", "beta (eigenvector v2)"),
}


def _draw(
    frame: Any,
    surfaces: dict[tuple[str, str], Any],
    lines: dict[str, Any],
    config: SensingLandscapeConfig,
    path: Path,
) -> Path:
    import numpy
    from matplotlib.ticker import MaxNLocator

    from flatminima.landscape.plots import grid_values, pyplot

    plt = pyplot()
    fig = plt.figure(figsize=(22, 21))
    grid = fig.add_gridspec(4, 5, width_ratios=[1, 1, 1, 1, 0.05])
    for r, kind in enumerate(KINDS):
        values = numpy.stack([grid_values(surfaces[(label, kind)], "loss", log=True) for label in SOLUTIONS])
        levels = [
            float(v) for v in MaxNLocator(20).tick_values(values.min(), values.max())
        ]  # one scale a row
        for c, label in enumerate(SOLUTIONS):
            ax = fig.add_subplot(grid[r, c])
            xlabel, ylabel = _AXES[kind]
            plot_contour(
                ax,
                surfaces[(label, kind)],
                "loss",
                log=True,
                levels=levels,
                xlabel=xlabel,
                ylabel=ylabel,
                colorbar=fig.add_subplot(grid[r, 4]) if c == len(SOLUTIONS) - 1 else False,
            )
            row = frame[frame["solution"] == label].iloc[0]
            ax.set_title(f"{label}: {_TITLES[kind]}\nscaled trace = {row['scaled_trace']:.3g}", fontsize=10)
    ax = fig.add_subplot(grid[3, 0])
    for label, line in lines.items():
        ax.plot(line.ts.numpy(), line.values["loss"].numpy(), label=f"flat -> {label}")
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="center")  # the curves dip only near t = 0 and t = 1
    ax.set_xticks([-0.5, 0.0, 0.5, 1.0, 1.5])
    ax.set_xlabel("t (0: flat, 1: other solution)")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("1-D interpolation from the flat solution", fontsize=10)
    ax = fig.add_subplot(grid[3, 1])
    for k, (_, r) in enumerate(frame.iterrows()):
        for offset, kind, marker in ((-0.15, "scaled", "o"), (0.15, "filter", "^")):
            widths = [float(x) for x in r[f"widths_{kind}"].split()]
            name = "scaled (S z)" if kind == "scaled" else "filter-normalized"
            ax.scatter(
                [k + offset] * len(widths),
                widths,
                s=10,
                color=f"C{k}",
                marker=marker,
                label=f"{name}, one direction" if k == 0 else None,
            )
            ax.errorbar(
                k + offset,
                r[f"width_{kind}_mean"],
                yerr=r[f"width_{kind}_std"],
                fmt="_",
                color="k",
                capsize=4,
                label="mean ± std" if k == 0 and kind == "scaled" else None,
            )
    ax.set_xticks(range(len(frame)))
    ax.set_xticklabels(list(frame["solution"]), fontsize=8)
    ax.set_xlim(-0.6, len(frame) - 0.4)
    ax.set_xlabel("solution")
    ax.set_ylabel(f"width of {{f <= f(w) + {config.delta:g}}} (x ||v||)")
    ax.legend(fontsize=8)
    ax.set_title("basin widths: scaled (o, left) and filter-normalized (^, right)", fontsize=10)
    for position, label in ((2, "flat"), (3, "gd-large-init")):
        ax = fig.add_subplot(grid[3, position], projection="3d")
        plot_surface(
            ax,
            surfaces[(label, "scaled")],
            "loss",
            log=True,
            xlabel="alpha (S z1)",
            ylabel="beta (S z2)",
            zoom=1.1,
        )
        ax.set_title(f"{label}: surface of the scaled random slice", fontsize=10)
    fig.suptitle(
        "Matrix sensing: landscapes of flat, norm-minimal and gradient-descent solutions (log10 loss)"
    )
    fig.tight_layout(rect=(0, 0.035, 1, 0.98))
    text = (
        "Slices f(w + alpha v1 + beta v2), red cross at the solution w; one colour scale per row. "
        "Scaled directions v = S z (E v^T H v = scaled trace), the same at every solution; filter-normalized "
        "directions (Li et al.) from the same Gaussian draws, rescaled to each solution's rows of L and R; "
        f"Hessian eigenvectors have unit norm. Extents: +-{config.extent:g} (scaled, Hessian), "
        f"+-{config.filter_extent:g} (filter-normalized). GD step sizes fixed per init scale."
    )
    return common.finish(fig, common.caption(config, text), path)
