"""Reproductions on depth: Hadamard sparse recovery and deep matrix factorization.

* ``depth-hadamard``: sparse recovery (d = 40, 3 nonzeros), x = v_1 ⊙ ... ⊙ v_k, k = 2, 3, 4, 8:
  only k = 2 recovers. Full: m in {5, 10, ..., 35}, 10 draws; quick: m in {10, 20, 30}, 4 draws.
* ``depth-deep``: deep factorization (d = 6), N = 2, 3, 4: the numerically flattest factorization against
  the closed form at full observation, and against NNM for Gaussian sensing (rank 1).

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Section 9).
    K. Gatmiry et al. The inductive bias of flatness regularization for deep matrix factorization.
    NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flatminima.experiments import figures
from flatminima.experiments.reproduction import (
    Frames,
    Reproduction,
    reproduction_spec,
    single_frame,
    summarize_by_solver,
    sweep_name,
)
from flatminima.experiments.spec import SweepSpec


def _hadamard_specs(quick: bool) -> list[SweepSpec]:
    solvers = [{"name": "flat_hadamard", "label": f"k={k}", "options": {"depth": k}} for k in (2, 3, 4, 8)]
    grid = {"num_measurements": [10, 20, 30] if quick else [5, 10, 15, 20, 25, 30, 35]}
    return [
        reproduction_spec(
            sweep_name("depth-hadamard", quick),
            {"name": "sparse_recovery", "dim": 40, "sparsity": 3},
            grid,
            solvers,
            draws=4 if quick else 10,
            truth="draw",
            description="sparse recovery under the depth-k Hadamard parameterization",
            figure={"kind": "hadamard", "x": "num_measurements"},
        )
    ]


def _draw_hadamard(frames: Frames, specs: list[SweepSpec], path: Path) -> Path:
    spec = specs[0]
    extra = (
        "Flat solutions minimize sum_j D_jj^2 |x_j|^(2 - 2/k) s.t. Ax = b (exponent 1 for k = 2, "
        "weighted l1); nonzeros count |x_j| > 1e-6 max|x|."
    )
    return figures.line_panels(
        single_frame(frames),
        x="num_measurements",
        panels=[
            ("success", "mean", "success frequency"),
            ("nonzeros", "median", "median nonzeros"),
            ("error", "median", "median ||x - x*||"),
        ],
        log_scale=("error",),
        title="Depth hurts flat solutions of Hadamard sparse recovery",
        caption=figures.grid_caption(spec.to_dict(), extra),
        path=path,
    )


def _deep_specs(quick: bool) -> list[SweepSpec]:
    def depths(values: Sequence[int]) -> list[dict[str, Any]]:
        options = {"inner_iterations": 100}
        return [{"name": "deep_flat", "label": f"N={n}", "options": {"depth": n, **options}} for n in values]

    population = reproduction_spec(
        sweep_name("depth-deep", quick, "population"),
        {"name": "matrix_completion", "dim": 6, "probability": 1.0},
        {"rank": [1, 2] if quick else [1, 2, 3, 4]},
        depths([2, 3, 4]),
        draws=1 if quick else 3,
        description="deep trace at full observation: numerical minimum vs closed form",
        figure={"kind": "deep", "x": "rank"},
    )
    sensing = reproduction_spec(
        sweep_name("depth-deep", quick, "sensing"),
        {"name": "matrix_sensing", "dim": 6, "rank": 1},
        {"num_measurements": [12, 24] if quick else [6, 12, 18, 24, 30]},
        [{"name": "nuclear_norm"}, *depths([2, 3] if quick else [2, 3, 4])],
        draws=1 if quick else 5,
        description="flattest deep factorization vs nuclear norm, Gaussian sensing",
        figure={"kind": "success", "x": "num_measurements"},
    )
    return [population, sensing]


def _draw_deep(frames: Frames, specs: list[SweepSpec], path: Path) -> Path:
    import pandas

    population, sensing = (frames.get(spec.name, pandas.DataFrame()) for spec in specs)
    plt = figures._pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.6))
    ok = population[population["status"] == "ok"] if len(population) else population
    for label, group in ok.groupby("label", sort=False) if len(ok) else []:
        series = group.groupby("rank")[["trace_ratio", "balanced_trace", "closed_form_trace"]].mean()
        line = axes[0].plot(
            series.index, (series["trace_ratio"] - 1.0).abs() + 1e-16, marker="o", label=f"{label}: found"
        )[0]
        axes[0].plot(
            series.index,
            series["balanced_trace"] / series["closed_form_trace"] - 1.0 + 1e-16,
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{label}: balanced SVD factors",
        )
    axes[0].set_yscale("log")
    axes[0].set_xlabel("rank of E")
    axes[0].set_ylabel("|trace / closed form - 1|")
    axes[0].set_title("min over factorizations of E (full observation)", fontsize=9)
    axes[0].legend(fontsize=7)
    for label, group in sensing.groupby("label", sort=False) if len(sensing) else []:
        series = group.groupby("num_measurements")["success"].mean()
        axes[1].plot(series.index, series.to_numpy(dtype=float), marker="o", label=str(label))
    axes[1].set_xlabel("m")
    axes[1].set_ylabel("success frequency")
    axes[1].set_title("flattest deep solution vs nuclear norm (sensing)", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.suptitle("Deep matrix factorization: the flattest solution is nuclear-norm-like at every depth")
    caption = " | ".join(figures.grid_caption(spec.to_dict()) for spec in specs) + (
        " Closed form: (2/m) N (d0 dN)^(1/N) ||E||_*^(2(N-1)/N) (Gatmiry et al. 2023); found: augmented "
        "Lagrangian + L-BFGS on the exact trace from a random start."
    )
    return figures._finish(fig, caption, path)


#: the depth reproductions by name
DEPTH_REPRODUCTIONS: dict[str, Reproduction] = {
    "depth-hadamard": Reproduction(
        "depth-hadamard",
        "sparse recovery with x = v_1 ⊙ ... ⊙ v_k, k = 2, 3, 4, 8: only k = 2 recovers",
        _hadamard_specs,
        _draw_hadamard,
        lambda frames, specs: summarize_by_solver(frames, ["success", "nonzeros", "error"]),
    ),
    "depth-deep": Reproduction(
        "depth-deep",
        "deep factorization, N = 2, 3, 4: flattest solution vs closed form and vs nuclear norm",
        _deep_specs,
        _draw_deep,
        lambda frames, specs: summarize_by_solver(frames, ["success", "trace_excess", "error"]),
    ),
}
