"""Noisy measurements: min ||Z||_* s.t. ||A(D1^{-1} Z D2^{-1}) - b|| <= eps (Ding et al. 2024, Appendix A)."""

from __future__ import annotations

import pytest
import torch

from flatminima.problems import MatrixSensing, QuadraticNetwork
from flatminima.solvers import ConvexResult, Status, solve_flat, solve_nuclear_norm


def _noisy(noise_std: float, seed: int = 0) -> object:
    return MatrixSensing(shape=(10, 10), rank=2, num_measurements=80, noise_std=noise_std).sample(
        generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("solve", [solve_flat, solve_nuclear_norm], ids=["flat", "nuclear_norm"])
def test_noisy_solution_is_certified_and_stable(solve: object) -> None:
    instance = _noisy(1e-3)
    eps = float(torch.linalg.vector_norm(instance.extras["noise"]))  # type: ignore[attr-defined]
    result = solve(instance, eps=eps)  # type: ignore[operator]
    assert isinstance(result, ConvexResult)
    assert result.status is Status.CONVERGED, result.message
    residual = instance.operator.apply(result.matrix) - instance.observations  # type: ignore[attr-defined]
    scale = float(torch.linalg.vector_norm(instance.observations))  # type: ignore[attr-defined]
    # inside the eps-ball up to the certified relative primal residual (1e-9 of ||b||)
    assert float(torch.linalg.vector_norm(residual)) <= eps + 1e-9 * scale
    assert result.certificate.primal_residual <= 1e-9 * scale
    # stable recovery: error of the order eps / sqrt(m) (Candès-Plan), here with a generous constant
    error = result.recovery_error(instance.ground_truth)  # type: ignore[attr-defined]
    assert error <= 10 * eps / 80**0.5
    assert error > 0  # noise is not magically removed


def test_error_scales_with_noise() -> None:
    errors = []
    for noise_std in (1e-4, 1e-3, 1e-2):
        instance = _noisy(noise_std, seed=3)
        eps = float(torch.linalg.vector_norm(instance.extras["noise"]))  # type: ignore[attr-defined]
        result = solve_flat(instance, eps=eps)
        assert isinstance(result, ConvexResult) and result.converged
        errors.append(result.recovery_error(instance.ground_truth))  # type: ignore[attr-defined]
    assert errors[0] < errors[1] < errors[2]
    assert errors[2] / errors[0] == pytest.approx(100, rel=0.5)


def test_eps_zero_is_the_equality_problem() -> None:
    instance = _noisy(0.0)
    ball = solve_flat(instance, eps=0.0)
    equality = solve_flat(instance)
    assert isinstance(ball, ConvexResult) and isinstance(equality, ConvexResult)
    assert ball.converged and equality.converged
    assert torch.allclose(ball.matrix, equality.matrix, atol=1e-8)


def test_noisy_quadratic_network() -> None:
    instance = QuadraticNetwork(
        dim=12, num_positive=2, num_negative=1, num_measurements=66, noise_std=1e-3
    ).sample(generator=torch.Generator().manual_seed(3))
    eps = float(torch.linalg.vector_norm(instance.extras["noise"]))
    result = solve_flat(instance, eps=eps)
    assert isinstance(result, ConvexResult)
    assert result.status is Status.CONVERGED, result.message
    assert torch.allclose(result.matrix, result.matrix.T, atol=1e-12)
    assert result.recovery_error(instance.ground_truth) < 0.05


def _overdetermined(noise_std: float, seed: int) -> object:
    """More measurements than unknowns (216 > 15 * 14): b has a part outside range(B)."""
    return MatrixSensing(shape=(15, 14), rank=2, num_measurements=216, noise_std=noise_std).sample(
        generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("noise_std", [1e-4, 1e-2, 1e-1])
@pytest.mark.parametrize("eps_factor", [0.9, 2.0])
@pytest.mark.parametrize("solve", [solve_flat, solve_nuclear_norm], ids=["flat", "nuclear_norm"])
def test_overdetermined_noisy_solves_are_certified(
    noise_std: float, eps_factor: float, solve: object
) -> None:
    # the multiplier's component in null(B^*) closes the duality gap that stalled the certificate at ~1e-3
    instance = _overdetermined(noise_std, seed=11)
    eps = eps_factor * float(torch.linalg.vector_norm(instance.extras["noise"]))  # type: ignore[attr-defined]
    result = solve(instance, eps=eps)  # type: ignore[operator]
    assert isinstance(result, ConvexResult)
    assert result.status is Status.CONVERGED, result.message
    assert result.certificate.max_relative_residual <= 1e-9


def test_ball_out_of_reach_of_range_is_infeasible() -> None:
    instance = _overdetermined(0.05, seed=12)
    # the noise's part in null(B^*) (6 of 216 directions) is about 0.17 ||noise||: no Z gets closer to b
    eps = 0.05 * float(torch.linalg.vector_norm(instance.extras["noise"]))  # type: ignore[attr-defined]
    result = solve_flat(instance, eps=eps)
    assert isinstance(result, ConvexResult)
    assert result.status is Status.INFEASIBLE
    assert "increase eps" in result.message
