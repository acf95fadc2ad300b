"""Checks that do not use autograd: Taylor remainders and coordinate second differences."""

from __future__ import annotations

import math

import pytest
import torch
from objective_cases import CASES

from flatminima.objectives import Objective, SymmetricFactorization

STEPS = [2.0**-e for e in range(9, 14)]


def _inner(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b, strict=True)))


def _move(params, direction, t):  # type: ignore[no-untyped-def]
    return tuple(p + t * d for p, d in zip(params, direction, strict=True))


def _slope(steps: list[float], remainders: list[float]) -> float:
    """Least-squares slope of log(remainder) against log(step)."""
    xs = [math.log(t) for t in steps]
    ys = [math.log(abs(r)) for r in remainders]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_and_second_order_taylor_remainders(name: str) -> None:
    generator = torch.Generator().manual_seed(21)
    objective = CASES[name].build(generator)
    params = objective.random_params(generator=generator)
    direction = objective.random_params(generator=generator)
    # For robust PCA the second-order expansion is that of the local model centred at params.
    model = objective.curvature_model(params)
    f0 = float(model(params))
    slope = _inner(objective.grad(params), direction)
    curvature = _inner(direction, objective.hvp(params, direction))
    first, second = [], []
    for t in STEPS:
        ft = float(model(_move(params, direction, t)))
        first.append(ft - f0 - t * slope)
        second.append(ft - f0 - t * slope - 0.5 * t**2 * curvature)
    assert _slope(STEPS, first) == pytest.approx(2.0, abs=0.1)
    if max(abs(r) for r in second) < 1e-12 * (1.0 + abs(f0)):
        # Quadratic models (depth 1, robust PCA off the interior) have no third-order term at all.
        return
    assert _slope(STEPS, second) == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("name", ["robust-pca-boundary", "robust-pca-interior"])
def test_robust_pca_loss_first_order_remainder(name: str) -> None:
    # The loss itself (C^1, piecewise quadratic) has an O(t^2) first-order remainder.
    generator = torch.Generator().manual_seed(22)
    objective = CASES[name].build(generator)
    params = objective.random_params(generator=generator)
    direction = objective.random_params(generator=generator)
    f0 = float(objective.value(params))
    slope = _inner(objective.grad(params), direction)
    remainders = [float(objective.value(_move(params, direction, t))) - f0 - t * slope for t in STEPS]
    assert _slope(STEPS, remainders) == pytest.approx(2.0, abs=0.1)


def _coordinate_diagonal(objective: Objective, params, h: float) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """Central second differences (f(x + h e) - 2 f(x) + f(x - h e)) / h^2 for every coordinate."""
    model = objective.curvature_model(params)
    f0 = model(params)
    blocks = []
    for index, p in enumerate(params):
        diagonal = torch.empty(p.numel(), dtype=p.dtype)
        for j in range(p.numel()):
            e = torch.zeros(p.numel(), dtype=p.dtype)
            e[j] = h
            e = e.reshape(p.shape)
            plus = (*params[:index], p + e, *params[index + 1 :])
            minus = (*params[:index], p - e, *params[index + 1 :])
            diagonal[j] = (model(plus) - 2 * f0 + model(minus)) / h**2
        blocks.append(diagonal.sum())
    return blocks


@pytest.mark.parametrize(
    "name",
    [
        "bilinear-dense",
        "bilinear-mask",
        "deep3-bilinear",
        "deep4-identity",
        "hadamard3",
        "robust-pca-boundary",
    ],
)
def test_block_traces_equal_coordinate_second_differences(name: str) -> None:
    # Along one coordinate these losses are exactly quadratic (the model is affine in each block), so
    # the central second difference with h = 1 is the Hessian diagonal up to rounding.
    generator = torch.Generator().manual_seed(23)
    objective = CASES[name].build(generator)
    params = objective.random_params(generator=generator)
    expected = _coordinate_diagonal(objective, params, h=1.0)
    for actual, want in zip(objective.block_traces(params), expected, strict=True):
        assert float(actual) == pytest.approx(float(want), rel=1e-10, abs=1e-10)


def test_symmetric_block_traces_equal_richardson_second_differences() -> None:
    # Along one coordinate the symmetric loss is quartic: Richardson-extrapolate h and h / 2.
    generator = torch.Generator().manual_seed(24)
    objective = CASES["symmetric-rank-one-(2,1)"].build(generator)
    assert isinstance(objective, SymmetricFactorization)
    params = objective.random_params(generator=generator)
    coarse = _coordinate_diagonal(objective, params, h=1e-2)
    fine = _coordinate_diagonal(objective, params, h=5e-3)
    for actual, c, f in zip(objective.block_traces(params), coarse, fine, strict=True):
        assert float(actual) == pytest.approx(float((4 * f - c) / 3), rel=1e-7)
