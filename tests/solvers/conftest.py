"""Fixtures of the solver tests: instances in the recovery regime of every problem kind.

The solver tests pin torch to one intra-op thread while they run (restored afterwards): their matrices
are small (d <= 15), where two OpenMP threads only add synchronization cost, and on a shared 2-core
machine oversubscribed OpenMP threads slow small LAPACK calls down by orders of magnitude.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from flatminima.problems import (
    BilinearSensing,
    Instance,
    MatrixCompletion,
    MatrixSensing,
    Problem,
    QuadraticNetwork,
    RobustPCA,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


#: (problem, seed) pairs in the recovery regime of the paper (flat and NNM both recover M).
RECOVERY: dict[str, tuple[Problem, int]] = {
    "matrix_sensing": (MatrixSensing(shape=(10, 10), rank=2, num_measurements=80), 0),
    "bilinear_sensing": (BilinearSensing(shape=(12, 12), rank=2, num_measurements=120), 1),
    "matrix_completion": (MatrixCompletion(shape=(15, 15), rank=2, probability=0.7), 2),
    "quadratic_network": (
        QuadraticNetwork(dim=12, num_positive=2, num_negative=1, num_measurements=66),
        3,
    ),
    "robust_pca": (RobustPCA(shape=(15, 15), rank=2, outlier_fraction=0.05), 1),
}


def recovery_instance(kind: str) -> Instance:
    problem, seed = RECOVERY[kind]
    return problem.sample(generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=sorted(RECOVERY))
def recovery_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
