"""Throughput of the sweep engine (issue 6 acceptance): trials/s in-process and with 1 and 2 Dask workers,
and the wall time of the full ``fig3-sensing`` reproduction.

The throughput sweep is a slice of fig3-sensing (Gaussian sensing, rank 2, P_flat and NNM): d in {20, 30},
m/d in {4, 6, 8, 10}, 3 draws per cell, 48 trials, run into a fresh store each time. Cluster start-up is
timed separately and excluded from trials/s. Run as a script:

    .venv/bin/python benchmarks/bench_experiments.py              # throughput table
    .venv/bin/python benchmarks/bench_experiments.py --full-fig3  # + full fig3-sensing, 2 workers

or, for the single-trial timing with pytest-benchmark:

    .venv/bin/python -m pytest benchmarks/bench_experiments.py --benchmark-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from flatminima.experiments import (
    DaskExecutor,
    InProcessExecutor,
    Store,
    Trial,
    parse_spec,
    run_sweep,
    run_trial,
)
from flatminima.experiments.runner import reproduce

SPEC = {
    "name": "bench-throughput",
    "draws": 3,
    "problem": {"name": "matrix_sensing", "rank": 2},
    "grid": {"dim": [20, 30], "measurements_per_dim": [4, 6, 8, 10]},
    "solvers": ["flat", "nuclear_norm"],
}


def throughput(kind: str) -> dict[str, Any]:
    """Run the throughput sweep with ``kind`` in {"in-process", "1 worker", "2 workers"}."""
    spec = parse_spec(SPEC)
    start = time.perf_counter()
    executor: Any = InProcessExecutor() if kind == "in-process" else DaskExecutor(workers=int(kind[0]))
    startup = time.perf_counter() - start
    try:
        with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "bench.sqlite") as store:
            result = run_sweep(spec, store, executor=executor, progress=False)
            cpu_seconds = sum(r.duration for r in store.records())
    finally:
        executor.close()
    return {
        "executor": kind,
        "trials": result.completed,
        "failed": result.failed,
        "startup_s": round(startup, 2),
        "sweep_s": round(result.wall_time, 2),
        "trials_per_s": round(result.trials_per_second, 3),
        "sum_of_trial_durations_s": round(cpu_seconds, 2),
    }


def full_fig3(out: Path, workers: int) -> dict[str, Any]:
    """Time ``flatminima reproduce fig3-sensing --workers N`` into a fresh output folder."""
    start = time.perf_counter()
    outcome = reproduce("fig3-sensing", quick=False, out_dir=out, workers=workers, progress=False)
    total = time.perf_counter() - start
    (sweep,) = outcome.sweeps
    return {
        "reproduction": "fig3-sensing (full)",
        "workers": workers,
        "trials": sweep.completed,
        "failed": sweep.failed,
        "sweep_s": round(sweep.wall_time, 1),
        "total_s_including_startup_and_figure": round(total, 1),
        "trials_per_s": round(sweep.trials_per_second, 3),
        "csv": str(outcome.csv),
        "png": str(outcome.figure),
    }


def environment() -> dict[str, Any]:
    """Where the numbers were taken (the 2-core CPU machine is shared: note its load)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-fig3", action="store_true", help="also time the full fig3-sensing, 2 workers")
    parser.add_argument("--out", default="results/bench-fig3", help="output folder of the full fig3-sensing")
    parser.add_argument("--json", default=None, help="write the results as JSON here")
    parser.add_argument("--kinds", default="in-process,1 worker,2 workers", help="comma-separated executors")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"environment_before": environment(), "throughput": []}
    for kind in args.kinds.split(","):
        row = throughput(kind.strip())
        results["throughput"].append(row)
        print(json.dumps(row), flush=True)
    if args.full_fig3:
        results["fig3_sensing"] = full_fig3(Path(args.out), workers=2)
        print(json.dumps(results["fig3_sensing"]), flush=True)
    results["environment_after"] = environment()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def test_one_fig3_trial(benchmark: Any) -> None:
    """One fig3-sensing trial near the phase transition (d = 30, m/d = 8, P_flat), single thread."""
    trial = Trial(
        sweep="bench",
        problem="matrix_sensing",
        params={"shape": [30, 30], "rank": 2, "num_measurements": 240},
        cell={"dim": 30, "measurements_per_dim": 8.0},
        method="flat",
        label="flat",
        options={},
        seed=0,
        draw=0,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = benchmark(run_trial, trial)
    finally:
        torch.set_num_threads(threads)
    assert record.status == "ok"


if __name__ == "__main__":
    main()
