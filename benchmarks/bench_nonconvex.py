"""Cost per iteration of every registered nonconvex solver on the study's sensing problem (issue 5).

Dense Gaussian matrix sensing d1 = d2 = 30, rank 2, width k = 30, m = 450, float64, CPU, one thread
(the setting of ``examples/flat_algorithms_study.py``). Each benchmark runs 50 iterations of one solver
with its default hyperparameters (history recorded once), so the per-iteration cost is the reported
time / 50. Gradient evaluations per iteration: 1 (GD, SGD, label-noise SGD, SWA, trace penalty),
2 (SAM, ASAM), ``inner_steps`` = 10 (Entropy-SGD), 1 plus a double-backprop Hutchinson probe
(Hutchinson penalty). Run with

    .venv/bin/python -m pytest benchmarks/bench_nonconvex.py --benchmark-only
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from flatminima.objectives import BilinearFactorization
from flatminima.problems import MatrixSensing
from flatminima.solvers.nonconvex import NONCONVEX_SOLVERS

D, RANK, M, ITERATIONS = 30, 2, 450, 50


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def setting() -> tuple[BilinearFactorization, tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(0)
    instance = MatrixSensing(shape=(D, D), rank=RANK, num_measurements=M).sample(generator=generator)
    objective = BilinearFactorization(instance, width=D)
    return objective, objective.random_params(generator=generator, scale=0.1)


@pytest.mark.parametrize("name", sorted(NONCONVEX_SOLVERS))
def test_solver_iterations(benchmark, setting, name: str) -> None:  # type: ignore[no-untyped-def]
    objective, init = setting
    cls = NONCONVEX_SOLVERS[name]
    kwargs = {"max_iterations": ITERATIONS, "record_every": ITERATIONS}
    if name in ("sgd", "label_noise_sgd", "swa"):
        kwargs["batch_size"] = M // 5
    solver = cls(**kwargs)

    def run() -> None:
        solver.run(objective, init, generator=torch.Generator().manual_seed(1))

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
