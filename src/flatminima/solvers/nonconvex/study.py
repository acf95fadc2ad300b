r"""Which flat-minimum-seeking algorithm reaches the flat solution? The study behind issue 5.

For Gaussian matrix sensing (d x d, rank r, width k = d, m from below to above the recovery threshold)
and one quadratic-network setting, every algorithm of :data:`~flatminima.solvers.nonconvex.NONCONVEX_SOLVERS`
runs from the **same** initializations (a small and a large scale), and each final point is compared
with the flat solution (P_flat, :func:`~flatminima.solvers.solve_flat`, whose factors minimize the scaled
trace str over the zero-loss set) and the norm-minimal one (NNM,
:func:`~flatminima.solvers.solve_nuclear_norm`):

* ``final_loss`` f; ``str_ratio`` = str(theta) / str(flat factors) (>= 1 on the zero-loss set, = 1 exactly at
  the flat solutions; below 1 only with nonzero loss);
* ``recovery_error`` ||X - M||_F / ||M||_F with X the end-to-end matrix;
* ``balancedness`` ||L^T L - R^T R||_F (bilinear only);
* ``dist_flat``, ``dist_nnm``: ||X - X_ref||_F / ||X_ref||_F; ``factor_dist_flat``, ``factor_dist_nnm``:
  the factor-space distance modulo the rotations that leave f and str unchanged (orthogonal Procrustes,
  L -> L Q, R -> R Q; U1 -> U1 Q1, U2 -> U2 Q2), relative to the reference factors' norm.

The suite also holds GD with a non-monotonic step-size schedule (a large-rate burst and a cyclic
schedule, :mod:`flatminima.optim.schedules`; Seong et al. 2018) and replicated SGD (Baldassi et al. 2016).
Does a large-rate burst move GD from a sharp zero-loss solution (the one it reaches from the large init) to
the flat one? Measured on the default configuration (d = 30, rank 2, large init, m = 150 / 250 / 350 /
450): GD ends at str ratio 6.4 / 6.2 / 5.6 / 5.3, its sharpness 3.2 / 2.4 / 2.1 / 2.0 times the flat
solution's; after the burst (a ramp to 1.8 / lambda_max(flat) at n/2, held until 7n/10) the sharpness is
1.07-1.10 times the flat solution's, i.e. at the stability limit 2 / eta_burst, and the str ratio 2.4 / 2.7 /
2.9 / 3.1 (recovery error 0.92 / 0.96 / 0.92 / 0.68): much flatter, but not the flat solution, because
the step bounds only the top eigenvalue while the flat solution minimizes the (scaled) trace. The cyclic
schedule does about as well (2.5 / 2.8 / 2.8 / 2.6). From the small init GD already ends near the flat
solution (str ratio 1.006-1.06) and the burst changes nothing. (An abrupt burst without the ramp diverged
at m = 150.)

:func:`run_flat_algorithms_study` writes ``flat_algorithms_study.csv`` (one row per run and reference),
``flat_algorithms_trajectories.csv`` (loss and str ratio along training) and
``flat_algorithms_study.png``; ``quick=True`` is a tiny version for tests. Randomness: one seed, split into
named child streams per (setting, m) for the instance, per init scale for the initialization and per
algorithm for its noise, so adding an algorithm never changes the others' runs.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024.
    S. Seong, Y. Lee, Y. Kee, D. Han, J. Kim. Towards flatter loss surface via nonmonotonic learning rate
    scheduling. UAI 2018.
    C. Baldassi et al. Unreasonable effectiveness of learning neural networks: from accessible states and
    robust ensembles to basic algorithmic schemes. PNAS 2016.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from flatminima.objectives import BilinearFactorization, Objective, SymmetricFactorization
from flatminima.optim.schedules import BurstSchedule, CyclicSchedule
from flatminima.problems import Instance, MatrixSensing, QuadraticNetwork
from flatminima.random import child_generators
from flatminima.solvers.nonconvex._study_measures import compute_references, solution_metrics
from flatminima.solvers.nonconvex._study_report import plot_study, summary_table, write_csv
from flatminima.solvers.nonconvex.base import NonconvexSolver
from flatminima.solvers.nonconvex.descent import (
    GradientDescent,
    LargeStepGradientDescent,
    StochasticGradientDescent,
    top_hessian_eigenvalue,
)
from flatminima.solvers.nonconvex.entropy import EntropySGD
from flatminima.solvers.nonconvex.label_noise import LabelNoiseSGD
from flatminima.solvers.nonconvex.penalty import HutchinsonPenaltyDescent, TracePenaltyDescent
from flatminima.solvers.nonconvex.replicated import ReplicatedSGD
from flatminima.solvers.nonconvex.sam import (
    AdaptiveSharpnessAwareMinimization,
    SharpnessAwareMinimization,
)
from flatminima.solvers.nonconvex.swa import StochasticWeightAveraging

Row = dict[str, Any]

__all__ = [
    "StudyConfig",
    "StudyOutput",
    "algorithm_suite",
    "run_flat_algorithms_study",
    "run_setting",
    "summary_table",
]


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Sizes and budgets of the study.

    Attributes:
        dim, rank: the d x d sensing problem with a rank-r ground truth (width k = d).
        measurements: the values of m (below to above the recovery threshold).
        qnet_dim, qnet_positive, qnet_negative, qnet_measurements: the quadratic-network setting
            (widths (d, d)); ``qnet_measurements = 0`` skips it.
        init_scales: name -> standard deviation of the initial factor entries (the same init for all).
        iterations: iterations per algorithm (Entropy-SGD: gradient evaluations, i.e. iterations / L outer
            steps).
        qnet_step_factor: the step sizes of the quadratic network are this times those of sensing (its
            Hessian is larger: E<x x^T, S>^2 = 2||S||_F^2 + tr(S)^2).
        records: history records per run (the trajectories).
        seed: the root seed.
    """

    dim: int = 30
    rank: int = 2
    measurements: tuple[int, ...] = (150, 250, 350, 450)
    qnet_dim: int = 15
    qnet_positive: int = 2
    qnet_negative: int = 1
    qnet_measurements: int = 60
    init_scales: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"small": 1e-3, "large": 0.1}
    )
    iterations: int = 2500
    qnet_step_factor: float = 0.2
    records: int = 50
    seed: int = 0

    @classmethod
    def quick(cls) -> StudyConfig:
        """A tiny configuration (seconds): d = 8, r = 1, m in {20, 48}, a d = 6 quadratic network."""
        return cls(
            dim=8,
            rank=1,
            measurements=(20, 48),
            qnet_dim=6,
            qnet_positive=1,
            qnet_negative=1,
            qnet_measurements=30,
            init_scales={"small": 1e-3, "large": 0.2},
            iterations=200,
            records=10,
        )


def algorithm_suite(
    num_measurements: int,
    iterations: int,
    step_factor: float = 1.0,
    *,
    large_step: float | None = None,
    records: int = 50,
) -> dict[str, NonconvexSolver]:
    """The algorithms and hyperparameters of the study (label -> configured solver).

    Step sizes are those of a sensing problem with ||M||_F = 1 times ``step_factor``; minibatches are
    b = m / 5; every solver records about ``records`` history points. ``large_step`` is the step of large-step
    GD (default 3.5 times the GD step); the study sets it to 1.8 / lambda_max(flat solution), just below
    the largest step at which GD can still converge to the flat solution. Non-monotonic schedules:
    ``gd_burst`` is GD whose step rises (over n/10 iterations) to ``large_step`` at iteration n/2, stays
    there until 7n/10 and drops back, so that it first converges with the small step, then is pushed out
    of minima sharper than 2 / large_step; ``gd_cyclic`` cycles triangularly between the GD step and
    ``large_step`` (period n/10). Entropy-SGD (L = 5) and replicated SGD (y = 3) get the same number of
    gradients as the others (n / L outer steps, n / y steps).
    """
    b = max(1, num_measurements // 5)
    eta = 0.1 * step_factor
    eta_sgd = 0.05 * step_factor
    n = iterations
    common: dict[str, Any] = {"max_iterations": n, "record_every": max(1, n // records)}
    eta_large = 3.5 * eta if large_step is None else large_step
    peak = max(1.0, eta_large / eta)  # the schedules' largest multiplier
    return {
        "gd": GradientDescent(step_size=eta, **common),
        "gd_momentum": GradientDescent(step_size=eta / 5, momentum=0.9, **common),
        "large_step_gd": LargeStepGradientDescent(
            step_size=eta_large, warmup_iterations=n // 10, power_iterations=10, **common
        ),
        "sgd": StochasticGradientDescent(step_size=eta_sgd, batch_size=b, **common),
        "sam": SharpnessAwareMinimization(rho=0.1, step_size=eta, **common),
        "sam_minibatch": SharpnessAwareMinimization(rho=0.1, step_size=eta_sgd, batch_size=b, **common),
        "asam_minibatch": AdaptiveSharpnessAwareMinimization(
            rho=0.5, step_size=eta_sgd, batch_size=b, **common
        ),
        "entropy_sgd": EntropySGD(
            step_size=1.0,
            inner_step_size=eta_sgd,
            inner_steps=5,
            gamma=1.0,
            thermal_noise=1e-3,
            averaging=0.75,
            batch_size=b,
            max_iterations=max(1, n // 5),
            record_every=max(1, n // (5 * records)),
        ),
        "replicated_sgd": ReplicatedSGD(
            step_size=eta_sgd,
            replicas=3,
            gamma=0.5,
            scoping=2e-3,
            batch_size=b,
            max_iterations=max(1, n // 3),
            record_every=max(1, n // (3 * records)),
        ),
        "gd_burst": GradientDescent(  # no tolerance: GD must not stop at its sharp solution before the burst
            step_size=eta,
            schedule=BurstSchedule(start=n // 2, length=n // 5, factor=peak, ramp=n // 10),
            tolerance=0.0,
            **common,
        ),
        "gd_cyclic": GradientDescent(
            step_size=eta,
            schedule=CyclicSchedule(half_period=max(1, n // 20), minimum=1.0, maximum=peak),
            **common,
        ),
        "label_noise_sgd": LabelNoiseSGD(
            step_size=eta_sgd, noise_level=1.0, batch_size=b, anneal_iterations=n // 5, **common
        ),
        "swa": StochasticWeightAveraging(step_size=eta_sgd, batch_size=b, swa_start=n // 2, **common),
        "trace_penalty": TracePenaltyDescent(penalty=3e-3, step_size=eta, **common),
        "hutchinson_penalty": HutchinsonPenaltyDescent(penalty=3e-3, step_size=eta, **common),
    }


# ---- the runs ---------------------------------------------------------------------------------------
def run_setting(
    setting: str,
    instance: Instance,
    objective: Objective,
    width: Any,
    rank: int,
    config: StudyConfig,
    *,
    step_factor: float,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Row], list[Row]]:
    """Run every algorithm of the suite from each init scale on one instance; return (rows, trajectories)."""
    m = instance.num_measurements
    d = instance.shape[0]
    refs = compute_references(objective, instance, width)
    flat_sharpness, _ = top_hessian_eigenvalue(objective, refs.flat_factors, iterations=200)
    base = {"setting": setting, "dim": d, "rank": rank, "num_measurements": m}
    rows: list[Row] = []
    for label, params in (("flat", refs.flat_factors), ("nnm", refs.nnm_factors)):
        status = refs.flat_status if label == "flat" else refs.nnm_status
        rows.append(
            {
                **base,
                "init": "-",
                "init_scale": math.nan,
                "algorithm": label,
                "solver": label,
                "status": status,
                "iterations": 0,
                "wall_time": math.nan,
                **solution_metrics(objective, params, instance, refs),
                "hyperparameters": json.dumps({"sharpness": flat_sharpness}) if label == "flat" else "{}",
            }
        )
    trajectories: list[Row] = []
    suite = algorithm_suite(
        m, config.iterations, step_factor, large_step=1.8 / flat_sharpness, records=config.records
    )
    for init_label, scale in config.init_scales.items():
        streams = child_generators(config.seed, f"{setting}/m={m}/init={init_label}")
        init = objective.random_params(generator=streams[f"{setting}/m={m}/init={init_label}"], scale=scale)
        for algorithm, solver in suite.items():
            key = f"{setting}/m={m}/init={init_label}/{algorithm}"
            generator = child_generators(config.seed, key)[key]
            result = solver.run(objective, init, generator=generator)
            metrics = solution_metrics(objective, result.params, instance, refs)
            rows.append(
                {
                    **base,
                    "init": init_label,
                    "init_scale": scale,
                    "algorithm": algorithm,
                    "solver": solver.name,
                    "status": result.status.value,
                    "iterations": result.iterations,
                    "wall_time": result.wall_time,
                    **metrics,
                    "hyperparameters": json.dumps(solver.hyperparameters, default=str, sort_keys=True),
                }
            )
            for record in result.history:
                trajectories.append(
                    {
                        **base,
                        "init": init_label,
                        "algorithm": algorithm,
                        "iteration": int(record["iteration"]),
                        "loss": record["loss"],
                        "str_ratio": record["scaled_trace"] / refs.flat_scaled_trace,
                    }
                )
            if progress is not None:
                progress(
                    f"{key}: str ratio {metrics['str_ratio']:.3f}, recovery {metrics['recovery_error']:.2e}, "
                    f"loss {metrics['final_loss']:.1e} ({result.wall_time:.1f} s)"
                )
    return rows, trajectories


@dataclasses.dataclass(frozen=True)
class StudyOutput:
    """What :func:`run_flat_algorithms_study` produced."""

    rows: tuple[Row, ...]
    trajectories: tuple[Row, ...]
    table_path: Path
    trajectories_path: Path
    figure_path: Path | None
    wall_time: float


def run_flat_algorithms_study(
    output_dir: str | Path,
    *,
    quick: bool = False,
    config: StudyConfig | None = None,
    figure: bool = True,
    num_threads: int | None = 1,
    progress: Callable[[str], None] | None = None,
) -> StudyOutput:
    """Run the study, write the CSV tables and the figure into ``output_dir``; return a :class:`StudyOutput`.

    Args:
        output_dir: the folder for ``flat_algorithms_study.csv``, ``flat_algorithms_trajectories.csv``
            and ``flat_algorithms_study.png`` (created if missing).
        quick: the tiny :meth:`StudyConfig.quick` configuration (ignored when ``config`` is given).
        config: the sizes and budgets (default :class:`StudyConfig` (), about 10 minutes on 2 cores).
        figure: draw the PNG (needs matplotlib).
        num_threads: torch intra-op threads during the run (restored afterwards; None: unchanged). One
            thread is fastest for these small problems on a shared machine.
        progress: called with one line per finished run.

    Returns:
        The rows, the trajectories and the paths written.
    """
    config = config or (StudyConfig.quick() if quick else StudyConfig())
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    start = time.perf_counter()
    rows: list[Row] = []
    trajectories: list[Row] = []
    try:
        for m in config.measurements:
            streams = child_generators(config.seed, f"sensing/m={m}/instance")
            problem = MatrixSensing(shape=(config.dim, config.dim), rank=config.rank, num_measurements=m)
            instance = problem.sample(generator=streams[f"sensing/m={m}/instance"])
            objective = BilinearFactorization(instance, width=config.dim)
            new_rows, new_traj = run_setting(
                "sensing",
                instance,
                objective,
                config.dim,
                config.rank,
                config,
                step_factor=1.0,
                progress=progress,
            )
            rows += new_rows
            trajectories += new_traj
        if config.qnet_measurements > 0:
            m = config.qnet_measurements
            streams = child_generators(config.seed, f"quadratic_network/m={m}/instance")
            qproblem = QuadraticNetwork(
                dim=config.qnet_dim,
                num_positive=config.qnet_positive,
                num_negative=config.qnet_negative,
                num_measurements=m,
            )
            instance = qproblem.sample(generator=streams[f"quadratic_network/m={m}/instance"])
            widths = (config.qnet_dim, config.qnet_dim)
            qobjective = SymmetricFactorization(instance, widths=widths)
            new_rows, new_traj = run_setting(
                "quadratic_network",
                instance,
                qobjective,
                widths,
                config.qnet_positive + config.qnet_negative,
                config,
                step_factor=config.qnet_step_factor,
                progress=progress,
            )
            rows += new_rows
            trajectories += new_traj
    finally:
        torch.set_num_threads(threads)
    table_path = write_csv(rows, out / "flat_algorithms_study.csv")
    trajectories_path = write_csv(trajectories, out / "flat_algorithms_trajectories.csv")
    figure_path = plot_study(rows, trajectories, out / "flat_algorithms_study.png") if figure else None
    return StudyOutput(
        tuple(rows),
        tuple(trajectories),
        table_path,
        trajectories_path,
        figure_path,
        time.perf_counter() - start,
    )
