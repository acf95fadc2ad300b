"""Theorem 3.2: the factors of the P_flat solution are flat, zero-loss, and have scaled trace 2||Z||_*."""

from __future__ import annotations

import pytest
import torch

from flatminima.solvers import ConvexResult, solve_flat, solve_nuclear_norm

from .conftest import recovery_instance


@pytest.mark.parametrize("kind", ["matrix_sensing", "bilinear_sensing", "matrix_completion"])
@pytest.mark.parametrize("width", [2, 3, 7])
def test_theorem_3_2_factors(kind: str, width: int) -> None:
    instance = recovery_instance(kind)
    result = solve_flat(instance)
    assert isinstance(result, ConvexResult) and result.rank == 2
    L, R = result.factors(width)
    d1, d2 = instance.shape
    assert L.shape == (d1, width) and R.shape == (d2, width)
    assert torch.all(L[:, result.rank :] == 0) and torch.all(R[:, result.rank :] == 0)
    # zero loss: A(L R^T) = b
    residual = instance.operator.apply_factored(L, R) - instance.observations
    assert float(torch.linalg.vector_norm(residual)) <= 1e-9 * float(
        torch.linalg.vector_norm(instance.observations)
    )
    assert torch.allclose(L @ R.T, result.matrix, atol=1e-12)
    # Theorem 3.2 (i): (1/2)(||D1 L||^2 + ||D2 R||^2) = ||Z||_* with Z = D1 L R^T D2, so the scaled
    # trace str = 2(||D1 L||^2 + ||D2 R||^2) (Lemma 3.1) equals 4 ||Z||_*
    D1, D2 = instance.operator.rescaling()
    weighted_norm = float((D1 @ L).square().sum() + (D2 @ R).square().sum())
    Z = D1 @ L @ R.T @ D2
    assert weighted_norm == pytest.approx(2 * float(torch.linalg.matrix_norm(Z, ord="nuc")), rel=1e-10)
    assert 2 * weighted_norm == pytest.approx(4 * result.certificate.primal_objective, rel=1e-10)
    # D-balanced: (D1 L)^T (D1 L) = (D2 R)^T (D2 R)
    assert torch.allclose((D1 @ L).T @ (D1 @ L), (D2 @ R).T @ (D2 @ R), atol=1e-10)


def test_flat_factors_have_smaller_scaled_trace_than_norm_minimal_ones() -> None:
    instance = recovery_instance("matrix_sensing")
    flat, nnm = solve_flat(instance), solve_nuclear_norm(instance)
    assert isinstance(flat, ConvexResult) and isinstance(nnm, ConvexResult)
    D1, D2 = instance.operator.rescaling()

    def scaled_trace(L: torch.Tensor, R: torch.Tensor) -> float:
        return 2 * float((D1 @ L).square().sum() + (D2 @ R).square().sum())

    assert scaled_trace(*flat.factors(2)) < scaled_trace(*nnm.factors(2))


def test_quadratic_network_factors_split_eigenvalues_by_sign() -> None:
    instance = recovery_instance("quadratic_network")
    result = solve_flat(instance)
    assert isinstance(result, ConvexResult)
    U1, U2 = result.factors((3, 2))
    assert U1.shape == (12, 3) and U2.shape == (12, 2)
    X = U1 @ U1.T - U2 @ U2.T
    assert float(torch.linalg.matrix_norm(X - instance.ground_truth)) < 1e-9
    y = instance.operator.apply(X)
    assert torch.allclose(y, instance.observations, atol=1e-10)
    (D, _) = instance.operator.rescaling()
    # ||D U1||^2 + ||D U2||^2 = ||D X D||_*
    assert float((D @ U1).square().sum() + (D @ U2).square().sum()) == pytest.approx(
        float(torch.linalg.matrix_norm(D @ X @ D, ord="nuc")), rel=1e-10
    )
    U1b, U2b = result.factors(2)
    assert U1b.shape == (12, 2) and U2b.shape == (12, 2)


def test_robust_pca_factors_are_balanced() -> None:
    instance = recovery_instance("robust_pca")
    result = solve_flat(instance)
    assert isinstance(result, ConvexResult)
    L, R = result.factors(4)
    assert torch.allclose(L.T @ L, R.T @ R, atol=1e-10)
    assert torch.allclose(L @ R.T, result.matrix, atol=1e-12)
