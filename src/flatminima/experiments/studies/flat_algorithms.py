"""Which flat-minimum algorithm finds the flat solution? The study of issue 5 as a named reproduction.

For Gaussian matrix sensing (d x d, rank r, width k = d, m from below to above the recovery threshold)
and one quadratic-network setting, every registered nonconvex solver (GD, large-step GD, SGD, SAM,
ASAM, Entropy-SGD, label-noise SGD, SWA, replicated SGD, the closed-form and Hutchinson trace penalties,
and GD under a large-rate burst and a cyclic learning-rate schedule) runs from the same small and large
initializations; each final point is compared with the flat solution of the convex
relaxation (its scaled trace 2(||D1 L||^2 + ||D2 R||^2) is the minimum over zero-loss factorizations,
Ding et al. 2024, Theorem 3.2) and with the norm-minimal one. This module adapts
:func:`flatminima.solvers.nonconvex.run_flat_algorithms_study` to the study interface, so that
``flatminima reproduce flat-algorithms [--quick]`` writes ``NAME.csv`` (one row per setting, m, init and
algorithm), ``NAME.png`` and, beside them, ``flat_algorithms_trajectories.csv`` (loss and scaled-trace
ratio along training).

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from flatminima.experiments.study import StudyOutput, progress_bar
from flatminima.solvers.nonconvex.study import StudyConfig, algorithm_suite, run_flat_algorithms_study

QUICK = StudyConfig.quick()
FULL = StudyConfig()


def _num_runs(config: StudyConfig) -> int:
    settings = len(config.measurements) + (1 if config.qnet_measurements else 0)
    suite = algorithm_suite(1, config.iterations, 1.0, large_step=1.0, records=config.records)
    return settings * len(config.init_scales) * len(suite)


def run(
    config: StudyConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Run the study into ``out_dir``; the frame has one row per (setting, m, init, algorithm)."""
    import pandas

    del store  # each run takes seconds; the study is not split into stored trials
    with progress_bar(sweep, _num_runs(config), progress) as bar:
        output = run_flat_algorithms_study(
            out_dir, config=config, progress=lambda _line: bar.advance(failed=False)
        )
    figure = out_dir / f"{name}.png"
    if output.figure_path is not None:
        shutil.move(str(output.figure_path), figure)
    output.table_path.unlink(missing_ok=True)  # the runner writes the same rows to NAME.csv
    frame = pandas.DataFrame(list(output.rows))
    return StudyOutput(frame, figure, _summary(frame))


def _summary(frame: Any) -> tuple[list[str], list[list[str]]]:
    """Median over the values of m, per (setting, init, algorithm): scaled-trace ratio, recovery, loss."""
    headers = ["setting", "init", "algorithm", "str / flat (median)", "recovery error (median)", "final loss"]
    grouped = frame.groupby(["setting", "init", "algorithm"], sort=False)[
        ["str_ratio", "recovery_error", "final_loss"]
    ].median()
    rows = [
        [setting, init, algorithm, f"{v.str_ratio:.3g}", f"{v.recovery_error:.2e}", f"{v.final_loss:.1e}"]
        for (setting, init, algorithm), v in grouped.iterrows()
    ]
    return headers, rows
