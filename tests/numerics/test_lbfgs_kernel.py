"""The one L-BFGS kernel (flatminima.numerics.lbfgs): known minimizers, Wolfe steps, guards, deadline."""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable

import pytest
import torch

import flatminima.numerics.lbfgs as kernel
from flatminima.errors import InputDataError
from flatminima.numerics import LineSearchResult, minimize_lbfgs, strong_wolfe

F64 = torch.float64


def rosenbrock(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2, minimized at (1, ..., 1)."""
    a, b = x[:-1], x[1:]
    value = float((100 * (b - a**2) ** 2 + (1 - a) ** 2).sum())
    gradient = torch.zeros_like(x)
    gradient[:-1] += -400 * a * (b - a**2) - 2 * (1 - a)
    gradient[1:] += 200 * (b - a**2)
    return value, gradient


def quadratic(n: int, seed: int) -> tuple[Callable[[torch.Tensor], tuple[float, torch.Tensor]], torch.Tensor]:
    """f(x) = x^T A x / 2 - c^T x with A SPD (condition number 1e3), and its minimizer A^{-1} c."""
    generator = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=F64))
    A = Q @ torch.diag(torch.logspace(0, 3, n, dtype=F64)) @ Q.T
    c = torch.randn(n, generator=generator, dtype=F64)

    def fun(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        Ax = A @ x
        return float(x @ Ax / 2 - c @ x), Ax - c

    return fun, torch.linalg.solve(A, c)


@pytest.mark.parametrize("start", [(-1.2, 1.0), (-1.2, 1.0, -1.2, 1.0, 0.5, 0.5)])
def test_rosenbrock(start: tuple[float, ...]) -> None:
    outcome = minimize_lbfgs(
        rosenbrock, torch.tensor(start, dtype=F64), gradient_tolerance=1e-10, max_iterations=500
    )
    assert outcome.converged and outcome.reason == "gradient", outcome
    torch.testing.assert_close(outcome.x, torch.ones(len(start), dtype=F64), rtol=0, atol=1e-8)
    assert outcome.iterations < 150 and outcome.evaluations < 1.5 * outcome.iterations + 10


@pytest.mark.parametrize("memory", [1, 5, 30])
def test_quadratic_reaches_the_known_minimizer(memory: int) -> None:
    fun, minimizer = quadratic(40, memory)
    outcome = minimize_lbfgs(
        fun, torch.zeros(40, dtype=F64), gradient_tolerance=1e-11, max_iterations=2000, memory=memory
    )
    assert outcome.converged
    torch.testing.assert_close(outcome.x, minimizer, rtol=0, atol=1e-10)


def test_wolfe_conditions_hold_at_accepted_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every line search of a Rosenbrock run and check both strong Wolfe conditions exactly."""
    searches: list[tuple[torch.Tensor, float, torch.Tensor, torch.Tensor, LineSearchResult]] = []
    original = kernel.strong_wolfe

    def recording(fun, x, value, gradient, direction, **options):  # type: ignore[no-untyped-def]
        result = original(fun, x, value, gradient, direction, **options)
        searches.append((x, value, gradient, direction, result))
        return result

    monkeypatch.setattr(kernel, "strong_wolfe", recording)
    c1, c2 = 1e-4, 0.9
    outcome = minimize_lbfgs(
        rosenbrock,
        torch.tensor([-1.2, 1.0, 0.3], dtype=F64),
        gradient_tolerance=1e-8,
        max_iterations=300,
        c1=c1,
        c2=c2,
        relative_noise=0.0,
    )
    assert outcome.converged and len(searches) == outcome.iterations
    for x, value, gradient, direction, result in searches:
        slope = float(gradient @ direction)
        assert slope < 0 and result.success and result.wolfe
        new_value, new_gradient = rosenbrock(x + result.step * direction)
        assert new_value == result.value
        assert new_value <= value + c1 * result.step * slope
        assert abs(float(new_gradient @ direction)) <= c2 * abs(slope)


def test_line_search_brackets_extrapolates_and_handles_non_finite_values() -> None:
    def barrier(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        """-log(1 - x) + x^2 on x < 1, inf beyond (where a long step lands)."""
        if float(x[0]) >= 1:
            return math.inf, torch.full_like(x, math.nan)
        return float(-torch.log(1 - x[0]) + x[0] ** 2), 1 / (1 - x) + 2 * x

    x = torch.tensor([-3.0], dtype=F64)
    value, gradient = barrier(x)
    long = strong_wolfe(barrier, x, value, gradient, torch.ones(1, dtype=F64), step=10.0)  # lands beyond 1
    short = strong_wolfe(barrier, x, value, gradient, torch.ones(1, dtype=F64), step=1e-3)  # must extrapolate
    for result in (long, short):
        assert result.success and result.wolfe
        point = x + result.step
        assert float(point[0]) < 1
        assert abs(float(barrier(point)[1][0])) <= 0.9 * abs(float(gradient[0]))
    # an ascent direction has no step with sufficient decrease
    failed = strong_wolfe(barrier, x, value, gradient, -torch.ones(1, dtype=F64), max_evaluations=5)
    assert not failed.success and failed.step == 0.0 and failed.evaluations == 5


def test_minimizer_stops_at_an_expired_deadline_after_one_iteration() -> None:
    class Expired:
        def expired(self) -> bool:
            return True

    fun, _ = quadratic(10, 0)
    outcome = minimize_lbfgs(
        fun, torch.zeros(10, dtype=F64), gradient_tolerance=0.0, max_iterations=50, deadline=Expired()
    )
    assert (outcome.iterations, outcome.reason, outcome.converged) == (1, "deadline", False)


def test_stopping_rules() -> None:
    fun, _ = quadratic(30, 1)
    x0 = torch.zeros(30, dtype=F64)
    assert minimize_lbfgs(fun, x0, gradient_tolerance=0.0, max_iterations=3).iterations == 3
    capped = minimize_lbfgs(fun, x0, gradient_tolerance=0.0, max_iterations=100, max_evaluations=10)
    assert capped.reason == "max_evaluations" and capped.evaluations <= 10
    change = minimize_lbfgs(fun, x0, gradient_tolerance=0.0, max_iterations=10_000, change_tolerance=1e-12)
    assert change.reason == "change" and change.iterations < 10_000
    at_minimum = minimize_lbfgs(lambda x: (float(x @ x), 2 * x), x0, gradient_tolerance=0.0, max_iterations=5)
    assert at_minimum.iterations == 0 and at_minimum.converged and at_minimum.evaluations == 1


def test_curvature_pairs_with_non_positive_y_s_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line search that returns a step without the curvature condition: the pair must not be stored."""
    stored: list[int] = []
    original = kernel._two_loop

    def counting(gradient, pairs):  # type: ignore[no-untyped-def]
        stored.append(len(pairs))
        return original(gradient, pairs)

    def armijo_only(fun, x, value, gradient, direction, *, step, **options):  # type: ignore[no-untyped-def]
        new_value, new_gradient = fun(x + 1e-3 * direction)  # tiny step on a concave-then-convex path
        return LineSearchResult(1e-3, new_value, new_gradient, 1, False, True)

    def concave(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        return float(-(x @ x)), -2 * x

    monkeypatch.setattr(kernel, "_two_loop", counting)
    monkeypatch.setattr(kernel, "strong_wolfe", armijo_only)
    minimize_lbfgs(concave, torch.ones(3, dtype=F64), gradient_tolerance=0.0, max_iterations=4)
    assert stored == [0, 0, 0, 0]  # y^T s < 0 on a concave function: no pair ever kept


def test_errors() -> None:
    fun, _ = quadratic(3, 0)
    x0 = torch.zeros(3, dtype=F64)
    with pytest.raises(InputDataError, match="0 < c1 < c2 < 1"):
        minimize_lbfgs(fun, x0, gradient_tolerance=0.0, max_iterations=1, c1=0.9, c2=0.1)
    with pytest.raises(InputDataError, match="memory must be >= 1"):
        minimize_lbfgs(fun, x0, gradient_tolerance=0.0, max_iterations=1, memory=0)


def test_deprecated_convex_alias_runs_the_kernel() -> None:
    from flatminima.solvers.convex.lbfgs import LbfgsOutcome, lbfgs

    outcome = lbfgs(
        rosenbrock, torch.tensor([-1.2, 1.0], dtype=F64), gradient_tolerance=1e-10, max_iterations=500
    )
    expected = minimize_lbfgs(
        rosenbrock, torch.tensor([-1.2, 1.0], dtype=F64), gradient_tolerance=1e-10, max_iterations=500
    )
    assert isinstance(outcome, LbfgsOutcome) and torch.equal(outcome.x, expected.x)


def test_docstring_examples(docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples("flatminima.numerics.lbfgs")
    assert result.attempted > 0 and result.failed == 0
