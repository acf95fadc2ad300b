"""Flat solutions (P_flat) at the sizes of issue 3: flatminima's certified solver against CVXPY + Clarabel.

Cases (float64, rank-r ground truth with ||M||_F = 1, one instance per case from a fixed seed):

* ``sensing-40``: Gaussian sensing d = 40, r = 2, m = 20 d: flatminima (ADMM + Newton-KKT polish) and
  CVXPY + Clarabel (the ``reference`` extra) on the same instance; the ratio of their wall times.
* ``sensing-100``: Gaussian sensing d = 100, r = 2, m = 20 d (CVXPY needs minutes and gigabytes here).
* ``bilinear-1000``: bilinear sensing A_i = a_i b_i^T, d = 1000, r = 5, m = 20 r d (factor search).
* ``completion-2000``: Bernoulli(p = 0.05) completion, d = 2000, r = 5 (factor search).
* ``completion-5000``: Bernoulli(p = 0.02) completion, d = 5000, r = 5 (for a CUDA device).

Each row reports the solve's wall time (instance sampling excluded; D1, D2 and everything else the
solver builds included), the Frobenius recovery error ||X - M||_F, the status and the certificate's
worst relative residual. Run as a script:

    .venv/bin/python benchmarks/bench_solvers.py                       # CPU: every case but 5000
    .venv/bin/python benchmarks/bench_solvers.py --device cuda --cases sensing-40 completion-5000

or the pytest-benchmark timings of the small cases:

    .venv/bin/python -m pytest benchmarks/bench_solvers.py --benchmark-only
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from flatminima.problems import BilinearSensing, Instance, MatrixCompletion, MatrixSensing
from flatminima.solvers import solve_flat

CASES: dict[str, Callable[[], Any]] = {
    "sensing-40": lambda: MatrixSensing(shape=(40, 40), rank=2, num_measurements=800),
    "sensing-100": lambda: MatrixSensing(shape=(100, 100), rank=2, num_measurements=2000),
    "bilinear-1000": lambda: BilinearSensing(shape=(1000, 1000), rank=5, num_measurements=100_000),
    "completion-2000": lambda: MatrixCompletion(shape=(2000, 2000), rank=5, probability=0.05),
    "completion-5000": lambda: MatrixCompletion(shape=(5000, 5000), rank=5, probability=0.02),
}
WITH_CVXPY = ("sensing-40",)


def sample(case: str, device: str = "cpu") -> Instance:
    """The instance of ``case`` (seed 0, float64) on ``device``."""
    instance = CASES[case]().sample(generator=torch.Generator().manual_seed(0))
    return instance.to(device=device)


def timed_solve(instance: Instance, **options: Any) -> dict[str, Any]:
    """Solve P_flat once; wall time, recovery error, status and worst certificate residual."""
    if instance.ground_truth.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = solve_flat(instance, **options)
    if instance.ground_truth.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    certificate = result.certificate
    return {
        "seconds": seconds,
        "error": float(result.recovery_error(instance.ground_truth)),
        "status": result.status.value,
        "residual": max(
            certificate.relative_primal_residual, certificate.dual_residual, certificate.relative_duality_gap
        ),
    }


def report(cases: list[str], device: str) -> None:
    """Print one line per (case, backend) and the CVXPY/flatminima ratio where both ran."""
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for case in cases:
        instance = sample(case, device)
        ours = timed_solve(instance)
        print(
            f"{case:<16} flatminima {ours['seconds']:8.2f} s  error {ours['error']:.1e}  "
            f"{ours['status']}  residual {ours['residual']:.1e}",
            flush=True,
        )
        if case in WITH_CVXPY and device == "cpu":
            reference = timed_solve(instance, backend="cvxpy")
            print(
                f"{case:<16} cvxpy      {reference['seconds']:8.2f} s  error {reference['error']:.1e}  "
                f"{reference['status']}  ratio {reference['seconds'] / ours['seconds']:.1f}x",
                flush=True,
            )


@pytest.mark.parametrize("case", ["sensing-40", "sensing-100"])
def test_flat_solve(benchmark: Any, case: str) -> None:
    instance = sample(case)
    result = benchmark.pedantic(lambda: solve_flat(instance), rounds=3, iterations=1)
    assert result.recovery_error(instance.ground_truth) <= 1e-8


def test_cvxpy_clarabel_sensing_40(benchmark: Any) -> None:
    pytest.importorskip("cvxpy")
    instance = sample("sensing-40")
    result = benchmark.pedantic(lambda: solve_flat(instance, backend="cvxpy"), rounds=1, iterations=1)
    assert result.recovery_error(instance.ground_truth) <= 1e-6


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="+", default=[c for c in CASES if c != "completion-5000"])
    parser.add_argument("--threads", type=int, default=None)
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    report(arguments.cases, arguments.device)
