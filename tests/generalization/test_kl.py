"""The Bernoulli kl and its inverses against brute force, at the edges and for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flatminima.errors import InputDataError, InputTypeError
from flatminima.generalization import bernoulli_kl, kl_inverse_lower, kl_inverse_upper

GRID = np.linspace(0.0, 1.0, 200_001)  # spacing 5e-6


def brute_kl(q: float, p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(q == 0.0, 0.0, q * (np.log(q) - np.log(p)))
        second = np.where(q == 1.0, 0.0, (1.0 - q) * (np.log1p(-q) - np.log1p(-p)))
    return np.nan_to_num(first, nan=np.inf) + np.nan_to_num(second, nan=np.inf)


@pytest.mark.parametrize("q", [0.0, 1e-4, 0.03, 0.1, 0.37, 0.5, 0.8, 0.999, 1.0])
@pytest.mark.parametrize("budget", [0.0, 1e-5, 0.01, 0.1, 0.5, 2.0, 30.0])
def test_inverses_match_brute_force_and_are_conservative(q: float, budget: float) -> None:
    grid = np.union1d(GRID, [q])  # kl(q || q) = 0: q is always feasible
    values = brute_kl(q, grid)
    feasible = grid[values <= budget]
    upper, lower = kl_inverse_upper(q, budget), kl_inverse_lower(q, budget)
    spacing = GRID[1] - GRID[0]
    assert lower <= q <= upper
    assert feasible.max() <= upper + 1e-15 and upper <= feasible.max() + spacing
    assert lower <= feasible.min() + 1e-15 and feasible.min() - spacing <= lower
    # conservative to the last bit: the returned end is infeasible, the next float towards q feasible
    if budget > 0.0 and upper < 1.0:
        assert bernoulli_kl(q, upper) > budget
        assert bernoulli_kl(q, float(np.nextafter(upper, 0.0))) <= budget
    if budget > 0.0 and lower > 0.0:
        assert bernoulli_kl(q, lower) > budget
        assert bernoulli_kl(q, float(np.nextafter(lower, 1.0))) <= budget


def test_kl_values_and_edges() -> None:
    assert bernoulli_kl(0.5, 0.25) == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0))
    assert bernoulli_kl(0.3, 0.3) == 0.0
    assert bernoulli_kl(0.0, 0.0) == 0.0 and bernoulli_kl(1.0, 1.0) == 0.0
    assert bernoulli_kl(0.2, 0.0) == math.inf and bernoulli_kl(0.2, 1.0) == math.inf
    assert bernoulli_kl(0.0, 1e-300) == pytest.approx(1e-300, rel=1e-12)  # log1p keeps tiny p exact
    assert kl_inverse_upper(0.0, 1e-300) == pytest.approx(1e-300, rel=1e-9)
    assert kl_inverse_upper(0.2, 1e3) == 1.0 and kl_inverse_lower(0.2, 1e3) == 0.0
    assert kl_inverse_upper(1.0, 0.1) == 1.0 and kl_inverse_lower(0.0, 0.1) == 0.0


def test_upper_inverse_is_below_pinsker_and_monotone() -> None:
    for q in (0.0, 0.05, 0.2, 0.5):
        previous = q
        for budget in (1e-3, 1e-2, 0.1, 0.3):
            upper = kl_inverse_upper(q, budget)
            assert upper <= min(1.0, q + math.sqrt(budget / 2.0)) + 1e-12
            assert upper >= previous
            previous = upper


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: bernoulli_kl(-0.1, 0.5), InputDataError, "q must satisfy"),
        (lambda: bernoulli_kl(0.5, 1.5), InputDataError, "p must satisfy"),
        (lambda: kl_inverse_upper(0.5, -1.0), InputDataError, "budget must satisfy 0.0 <= budget"),
        (lambda: kl_inverse_lower(float("nan"), 0.1), InputDataError, "q must be finite"),
        (lambda: kl_inverse_upper("0.5", 0.1), InputTypeError, "q must be a real number"),
    ],
)
def test_bad_input_raises_one_line_errors(call, error, match) -> None:
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)
