"""Keskar et al.'s epsilon-sharpness: the definition, the gradient given to L-BFGS-B, and its sign."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch
from curvature_cases import mlp_case

from flatminima.curvature import HessianOperator
from flatminima.curvature.epsilon import EpsilonSharpnessObjective, epsilon_sharpness, random_subspace
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError


def _quadratic(center: torch.Tensor, curvature: torch.Tensor, offset: float = 0.0) -> HessianOperator:
    """f(w) = offset + 0.5 sum_i h_i (w_i - c_i)^2 at its minimizer w = c."""
    return HessianOperator(
        lambda p: offset + 0.5 * (curvature * (p["w"] - center) ** 2).sum(), {"w": center.clone()}
    )


@pytest.mark.parametrize("subspace_dim", [None, 7])
def test_lbfgsb_objective_passes_check_grad_and_ascends(subspace_dim) -> None:
    case = mlp_case(0)
    H = HessianOperator(case.loss, case.params())
    g = torch.Generator().manual_seed(0)
    A = None if subspace_dim is None else random_subspace(H, subspace_dim, generator=g)
    objective = EpsilonSharpnessObjective(H, epsilon=1e-3, subspace=A)
    y0 = objective.random_point(g)
    error = scipy.optimize.check_grad(objective.fun, objective.jac, y0)
    assert error <= 1e-6 * max(1.0, float(np.linalg.norm(objective.jac(y0))))
    # the function handed to L-BFGS-B is -f and its gradient is -A^T grad f: minimizing it ascends f
    x = H.point + objective.perturbation(y0)
    value, grad = H.value_and_grad_at(x)
    assert objective.fun(y0) == pytest.approx(-float(value), rel=1e-12)
    expected = -(grad if A is None else A.T @ grad).numpy()
    np.testing.assert_allclose(objective.jac(y0), expected, rtol=1e-12)


def test_full_space_sharpness_of_a_quadratic_is_the_box_corner() -> None:
    """The max over |y_i| <= eps (|x_i| + 1) of 0.5 sum h_i y_i^2 is a corner; descending would give 0."""
    center = torch.tensor([0.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    curvature = torch.tensor([1.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    H = _quadratic(center, curvature, offset=0.25)
    for epsilon in (1e-3, 5e-4):
        result = epsilon_sharpness(H, epsilon, generator=torch.Generator().manual_seed(0))
        corner = 0.5 * float((curvature * (epsilon * (center.abs() + 1)) ** 2).sum())
        assert result.loss == pytest.approx(0.25)
        assert result.max_loss == pytest.approx(0.25 + corner, rel=1e-9)
        assert result.value == pytest.approx(100 * corner / 1.25, rel=1e-9)  # percent, over 1 + f(x)
        assert result.num_evaluations <= 30
        torch.testing.assert_close(result.perturbation.abs(), epsilon * (center.abs() + 1))


def test_zero_start_at_a_minimizer_cannot_move() -> None:
    """Why the start is random: at a minimizer the gradient vanishes and L-BFGS-B stops at y = 0."""
    H = _quadratic(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    assert epsilon_sharpness(H, start="zero", generator=torch.Generator().manual_seed(0)).value == 0.0
    assert epsilon_sharpness(H, start="random", generator=torch.Generator().manual_seed(0)).value > 0.0


def test_random_subspace_sharpness_respects_the_box() -> None:
    case = mlp_case(1)
    H = HessianOperator(case.loss, case.params())
    result = epsilon_sharpness(H, 1e-3, subspace_dim=10, generator=torch.Generator().manual_seed(3))
    A = random_subspace(H, 10, generator=torch.Generator().manual_seed(3))  # the same draw
    y = torch.linalg.lstsq(A, result.perturbation[:, None]).solution[:, 0]
    half_widths = 1e-3 * ((torch.linalg.pinv(A) @ H.point).abs() + 1)
    assert bool((y.abs() <= half_widths * (1 + 1e-9)).all())
    torch.testing.assert_close(A @ y, result.perturbation)
    assert result.max_loss == pytest.approx(float(H.value_at(H.point + result.perturbation)), rel=1e-12)
    assert result.value > 0 and result.subspace_dim == 10


def test_group_selection_perturbs_only_that_group() -> None:
    case = mlp_case(2)
    H = HessianOperator(case.loss, case.params())
    block = H.select("2.*")
    result = epsilon_sharpness(block, 1e-3, generator=torch.Generator().manual_seed(0))
    assert result.perturbation.shape == (block.size,)
    assert result.value > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": 0.0}, InputDataError, "epsilon must satisfy 0.0 < epsilon"),
        ({"epsilon": -1e-3}, InputDataError, "epsilon must satisfy 0.0 < epsilon"),
        ({"subspace_dim": 10}, InputDataError, "subspace_dim must satisfy 1 <= subspace_dim <= n = 3"),
        ({"start": "center"}, ConfigurationError, "start must be 'random' or 'zero'"),
        ({"max_iterations": 0}, InputDataError, "max_iterations must be >= 1"),
        ({"generator": None}, InputTypeError, "generator must be a torch.Generator"),
    ],
)
def test_errors(kwargs, error, match) -> None:
    H = _quadratic(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    with pytest.raises(error, match=match):
        epsilon_sharpness(H, **{"generator": torch.Generator().manual_seed(0), **kwargs})
