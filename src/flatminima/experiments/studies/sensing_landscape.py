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
solution), the exact scaled trace and trace (closed forms), and the top eigenvalue (Lanczos). 2-D slices
along two scaled directions and 1-D interpolations from the flat solution to each other one are drawn.

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
from flatminima.landscape import basin_width, interpolate, plot_contour, slice_1d, slice_2d
from flatminima.random import child_generators

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
    grid_points: int = 31

    def __post_init__(self) -> None:
        check_int_in_range("seed", self.seed, low=0)
        check_int_in_range("dim", self.dim, low=2)
        check_int_in_range("rank", self.rank, low=1, high=self.dim, high_name="dim")
        check_int_in_range("num_measurements", self.num_measurements, low=1)
        for field in ("small_init", "small_step", "large_init", "large_step", "delta", "extent"):
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
    rows, grids, surfaces = [], [], {}
    with progress_bar(sweep, len(points), progress) as bar:
        for label, (L, R) in points.items():
            w = {"L": L, "R": R}
            op = HessianOperator.from_objective(objective, (L, R))
            top = lanczos_eigenvalues(op, 1, generator=gens["lanczos"], tol=1e-8)
            widths = [
                basin_width(
                    slice_1d(loss, w, v, extent=extent, num_points=4 * config.grid_points + 1),
                    "loss",
                    config.delta,
                )
                for v in directions
            ]
            X = L @ R.mT
            rows.append(
                {
                    "solution": label,
                    "loss": float(objective.value((L, R))),
                    "recovery_error": float(torch.linalg.matrix_norm(X - instance.ground_truth)),
                    "nuclear_norm": float(torch.linalg.matrix_norm(X, ord="nuc")),
                    "factor_norm": float(L.square().sum() + R.square().sum()),
                    "scaled_trace": float(objective.scaled_trace((L, R))),
                    "trace": float(objective.hessian_trace((L, R))),
                    "top_eigenvalue": float(top.eigenvalues[0]),
                    "width_mean": float(torch.tensor(widths).mean()),
                    "width_std": float(torch.tensor(widths).std()),
                    "widths": " ".join(f"{x:.4g}" for x in widths),
                }
            )
            surface = slice_2d(loss, w, plane[0], plane[1], extent=extent, num_points=config.grid_points)
            surfaces[label] = surface
            for i, y in enumerate(surface.ys.tolist()):
                for j, x in enumerate(surface.xs.tolist()):
                    grids.append(
                        {"solution": label, "x": x, "y": y, "loss": float(surface.values["loss"][i, j])}
                    )
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
        f"width (delta={config.delta:g})",
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
            f"{r['width_mean']:.4g} ± {r['width_std']:.2g}",
        ]
        for _, r in frame.iterrows()
    ]
    return StudyOutput(frame, figure, (headers, table))


def _draw(
    frame: Any, surfaces: dict[str, Any], lines: dict[str, Any], config: SensingLandscapeConfig, path: Path
) -> Path:
    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    for ax, label in zip(axes.flat[:4], SOLUTIONS, strict=True):
        plot_contour(ax, surfaces[label], "loss", log=True)
        row = frame[frame["solution"] == label].iloc[0]
        ax.set_title(f"{label}: str = {row['scaled_trace']:.3g}, width = {row['width_mean']:.3g}", fontsize=9)
    ax = axes.flat[4]
    for label, line in lines.items():
        ax.plot(line.ts.numpy(), line.values["loss"].numpy(), label=f"flat -> {label}")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_xlabel("t (0: flat, 1: other solution)")
    ax.set_title("1-D interpolation from the flat solution", fontsize=9)
    ax = axes.flat[5]
    for k, (_, r) in enumerate(frame.iterrows()):
        widths = [float(x) for x in r["widths"].split()]
        ax.scatter([k] * len(widths), widths, s=12, color=f"C{k}")
        ax.errorbar(k, r["width_mean"], yerr=r["width_std"], fmt="_", color="k", capsize=5)
    ax.set_xticks(range(len(frame)))
    ax.set_xticklabels(list(frame["solution"]), fontsize=8)
    ax.set_ylabel(f"width of {{f <= f(w) + {config.delta:g}}}")
    ax.set_title("basin width along scaled random directions (same directions for all)", fontsize=9)
    fig.suptitle(
        "Matrix sensing: landscapes of flat, norm-minimal and gradient-descent solutions (log10 loss)"
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    text = "Scaled directions v = S z (E v^T H v = scaled trace). GD step sizes fixed per init scale."
    return common.finish(fig, common.caption(config, text), path)
