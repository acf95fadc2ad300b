"""Contract tests over every registered nonconvex solver: a new solver is tested by being registered.

Each solver runs with its default hyperparameters (only ``max_iterations`` shortened) on a tiny sensing
instance and must: decrease the training loss, return finite parameters of the initial dtype (float32
and float64) and device, not modify the initial point, be reproducible given a seeded generator, and
record a history whose first entry is the initial point.
"""

from __future__ import annotations

import math

import pytest
import torch
from nonconvex_cases import make_generator, quadratic_objective, sensing_objective

from flatminima.solvers.nonconvex import NONCONVEX_SOLVERS, SOLVERS, NonconvexResult, NonconvexSolver
from flatminima.solvers.result import Status

NAMES = sorted(NONCONVEX_SOLVERS)
ITERATIONS = 40


def _solver(name: str) -> NonconvexSolver:
    cls = NONCONVEX_SOLVERS[name]
    return cls(max_iterations=ITERATIONS, record_every=10)


def test_registry_names_match_classes() -> None:
    assert SOLVERS is NONCONVEX_SOLVERS
    assert len(NAMES) == 11  # issue 16 item 6 registered replicated_sgd
    for name, cls in NONCONVEX_SOLVERS.items():
        assert cls.name == name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, dtype: torch.dtype) -> None:
    objective = sensing_objective(dtype=dtype)
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    saved = tuple(p.clone() for p in init)
    solver = _solver(name)

    first = solver.run(objective, init, generator=make_generator(7))
    second = solver.run(objective, init, generator=make_generator(7))

    assert isinstance(first, NonconvexResult)
    assert first.status in (Status.MAX_ITERATIONS, Status.CONVERGED)
    assert first.solver == name
    assert all(torch.equal(a, b) for a, b in zip(init, saved, strict=True)), "init was modified"
    for p, q in zip(first.params, init, strict=True):
        assert p.dtype == dtype and p.device == q.device and p.shape == q.shape
        assert bool(torch.isfinite(p).all())
    # reproducible given the generator (bitwise)
    assert all(torch.equal(a, b) for a, b in zip(first.params, second.params, strict=True))
    # decreases the training loss
    start, end = float(objective.value(init)), float(objective.value(first.params))
    assert end < 0.5 * start, f"{name}: loss {start:.3g} -> {end:.3g}"
    # the history starts at the initial point and ends at the returned point
    assert first.history[0]["iteration"] == 0
    assert math.isclose(first.history[0]["loss"], start, rel_tol=1e-5)
    assert math.isclose(first.final("loss"), end, rel_tol=1e-5, abs_tol=1e-12)
    assert math.isclose(
        first.final("scaled_trace"), float(objective.scaled_trace(first.params)), rel_tol=1e-5
    )
    assert first.iterations <= ITERATIONS and first.wall_time > 0
    assert first.hyperparameters == solver.hyperparameters


@pytest.mark.parametrize("name", NAMES)
def test_generator_changes_only_stochastic_runs(name: str) -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    solver = _solver(name)
    a = solver.run(objective, init, generator=make_generator(1))
    b = solver.run(objective, init, generator=make_generator(2))
    same = all(torch.equal(x, y) for x, y in zip(a.params, b.params, strict=True))
    assert same != solver.stochastic
    if not solver.stochastic:
        c = solver.run(objective, init)
        assert all(torch.equal(x, y) for x, y in zip(a.params, c.params, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_contract_on_the_quadratic_network(name: str) -> None:
    objective = quadratic_objective()
    init = objective.random_params(generator=make_generator(3), scale=0.3)
    cls = NONCONVEX_SOLVERS[name]
    # the quadratic network's Hessian is larger (E<x x^T, S>^2 = 2||S||^2 + tr(S)^2): smaller steps
    kwargs = {"step_size": 0.01} if name != "entropy_sgd" else {"inner_step_size": 0.01}
    result = cls(max_iterations=ITERATIONS, record_every=10, **kwargs).run(
        objective, init, generator=make_generator(4)
    )
    assert bool(all(torch.isfinite(p).all() for p in result.params))
    assert float(objective.value(result.params)) < float(objective.value(init))


def test_result_trace_and_final() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    result = _solver("gd").run(objective, init)
    steps, losses = result.trace("loss")
    assert steps[0] == 0 and steps[-1] == result.iterations
    assert losses == sorted(losses, reverse=True)  # GD with a small step decreases the loss monotonically
    assert result.final("loss") == losses[-1]
    assert not result.converged and not result.diverged and result.dtype == torch.float64


def test_deterministic_solver_converges_with_status() -> None:
    objective = sensing_objective(width=1)
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    result = NONCONVEX_SOLVERS["gd"](step_size=0.1, max_iterations=5000, tolerance=1e-8).run(objective, init)
    assert result.status is Status.CONVERGED and result.iterations < 5000
    assert result.final("gradient_norm") < 1e-7


def test_divergence_is_reported_and_the_last_finite_iterate_returned() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    result = NONCONVEX_SOLVERS["gd"](step_size=5.0, max_iterations=200).run(objective, init)
    assert result.status is Status.DIVERGED and result.diverged
    assert "Try a smaller step_size" in result.message
    assert bool(all(torch.isfinite(p).all() for p in result.params))
    assert result.iterations < 200


def test_time_limit_status() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    result = NONCONVEX_SOLVERS["gd"](max_iterations=10**7, time_limit=0.05).run(objective, init)
    assert result.status is Status.TIME_LIMIT and result.iterations < 10**7
