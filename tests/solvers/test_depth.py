"""Depth (Section 9): flat Hadamard solutions solve min sum D_jj^2 |x_j|^p, p = 2 - 2/k, s.t. A x = b."""

from __future__ import annotations

import pytest
import torch

from flatminima.problems import SparseRecovery
from flatminima.solvers import LpResult, Status, solve_flat, solve_nuclear_norm


def _instance(seed: int = 0) -> object:
    """Ding et al. 2024, Section 11 (depth): d = 40, m = 20, 3-sparse ground truth."""
    return SparseRecovery(dim=40, sparsity=3, num_measurements=20).sample(
        generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depth_two_recovers_the_sparse_vector(seed: int) -> None:
    instance = _instance(seed)
    result = solve_flat(instance, depth=2)
    assert isinstance(result, LpResult)
    assert result.exponent == 1.0
    assert result.status is Status.CONVERGED, result.message
    assert result.certificate.max_relative_residual <= 1e-9
    assert result.recovery_error(instance.ground_truth) < 1e-6  # type: ignore[attr-defined]
    assert int(result.support(1e-6).sum()) == 3


@pytest.mark.parametrize("depth", [3, 4, 8])
def test_deeper_models_give_dense_solutions(depth: int) -> None:
    instance = _instance(0)
    result = solve_flat(instance, depth=depth)
    assert isinstance(result, LpResult)
    assert result.exponent == pytest.approx(2 - 2 / depth)
    assert result.status is Status.CONVERGED, result.message
    assert result.certificate.max_relative_residual <= 1e-9
    # generically every entry is nonzero (x_j ~ |(A^T lambda)_j|^(1/(p-1)) can be small, not zero)
    assert int(result.support(1e-12).sum()) == 40
    assert int(result.support(1e-4).sum()) >= 30
    assert result.recovery_error(instance.ground_truth) > 0.05  # type: ignore[attr-defined]
    residual = instance.operator.matrix @ result.vector - instance.observations  # type: ignore[attr-defined]
    # the certified primal residual is relative to ||b|| (Certificate.relative_primal_residual)
    scale = float(torch.linalg.vector_norm(instance.observations))  # type: ignore[attr-defined]
    assert float(torch.linalg.vector_norm(residual)) <= 1e-9 * scale


def test_errors_grow_with_depth() -> None:
    instance = _instance(0)
    errors = [
        solve_flat(instance, depth=k).recovery_error(instance.ground_truth)  # type: ignore[union-attr, attr-defined]
        for k in (2, 3, 4, 8)
    ]
    assert errors == sorted(errors)


def test_hadamard_factors_are_balanced_and_flat() -> None:
    instance = _instance(0)
    result = solve_flat(instance, depth=3)
    assert isinstance(result, LpResult)
    v1, v2, v3 = result.factors()
    assert torch.allclose(v1 * v2 * v3, result.vector, atol=1e-12)
    assert torch.allclose(v1.abs(), v2.abs()) and torch.allclose(v2, v3)
    # tr grad^2 f = 2 sum_l ||D (prod_{i != l} v_i)||^2 = 2 k sum_j D_jj^2 |x_j|^p at the balanced point
    D = instance.operator.column_scales()  # type: ignore[attr-defined]
    trace = 2 * sum(float((D * a * b).square().sum()) for a, b in ((v2, v3), (v1, v3), (v1, v2)))
    objective = float((result.weights * result.vector.abs().pow(result.exponent)).sum())
    assert trace == pytest.approx(2 * 3 * objective, rel=1e-10)


def test_nuclear_norm_analogue_is_plain_l1() -> None:
    instance = _instance(1)
    result = solve_nuclear_norm(instance)
    assert isinstance(result, LpResult)
    assert torch.all(result.weights == 1)
    assert result.converged
    assert result.recovery_error(instance.ground_truth) < 1e-6  # type: ignore[attr-defined]
