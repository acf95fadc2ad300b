"""Diagnostics: recovery error, balancedness, norm gap, kappa and the Theorem 3.3 bounds."""

from __future__ import annotations

import pytest
import torch
from objective_cases import CASES, assert_close, truth_factors

from flatminima.objectives import balancedness, kappa, norm_gap, recovery_error, regularity_bounds
from flatminima.operators import EntryMask, IdentityOperator

F64 = torch.float64


def _balanced_factors(M: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    L = torch.zeros(M.shape[0], width, dtype=M.dtype)
    R = torch.zeros(M.shape[1], width, dtype=M.dtype)
    r = min(width, S.numel())
    L[:, :r] = U[:, :r] * S[:r].sqrt()
    R[:, :r] = Vh[:r].mT * S[:r].sqrt()
    return L, R


def test_recovery_error_absolute_and_relative(generator: torch.Generator) -> None:
    objective = CASES["bilinear-dense"].build(generator)
    M = objective.instance.ground_truth  # type: ignore[attr-defined]
    params = truth_factors(M, 3, generator)
    assert float(recovery_error(objective.end_to_end(params), M)) < 1e-14  # type: ignore[attr-defined]
    assert float(recovery_error(torch.zeros_like(M), M)) == pytest.approx(1.0)  # ||M||_F = 1
    assert float(recovery_error(3 * M, M, relative=True)) == pytest.approx(2.0)


def test_balanced_factors_have_zero_balancedness_and_norm_gap(generator: torch.Generator) -> None:
    M = torch.randn(5, 4, generator=generator, dtype=F64)
    L, R = _balanced_factors(M, 6)
    for norm in ("fro", "nuc"):
        assert float(balancedness(L, R, norm=norm)) < 1e-13
    assert abs(float(norm_gap(L, R))) < 1e-13
    # an unbalanced factorization of the same matrix: both measures become positive
    B = torch.diag(torch.tensor([2.0, 1.0, 0.5, 1.0, 1.0, 1.0], dtype=F64))
    L2, R2 = L @ B, R @ torch.linalg.inv(B).mT
    assert_close(L2 @ R2.mT, M)
    assert float(balancedness(L2, R2, norm="nuc")) > 0.1
    assert float(norm_gap(L2, R2)) > 0.1


def test_balancedness_and_norm_gap_known_numbers() -> None:
    L = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=F64)
    R = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=F64)
    # L^T L - R^T R = diag(3, 0)
    assert float(balancedness(L, R)) == pytest.approx(3.0)
    assert float(balancedness(L, R, norm="nuc")) == pytest.approx(3.0)
    # ||L||^2 + ||R||^2 = 7, ||L R^T||_* = 3  ->  gap 1; against a reference of nuclear norm 2: gap 3
    assert float(norm_gap(L, R)) == pytest.approx(1.0)
    reference = torch.zeros(2, 3, dtype=F64)
    reference[0, 0] = 2.0
    assert float(norm_gap(L, R, reference)) == pytest.approx(3.0)


def test_kappa_of_identity_mask_and_sensing(generator: torch.Generator) -> None:
    assert kappa(IdentityOperator((3, 5))) == pytest.approx(1.0)
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[1] = False  # an empty row: D1 singular
    assert kappa(EntryMask.from_mask(mask)) == float("inf")
    instance = CASES["bilinear-dense"].build(generator).instance  # type: ignore[attr-defined]
    D1_sq, D2_sq = instance.operator.rescaling_squares()
    eigenvalues = torch.cat([torch.linalg.eigvalsh(D1_sq), torch.linalg.eigvalsh(D2_sq)])
    assert kappa(instance) == pytest.approx(float((eigenvalues.max() / eigenvalues.min()).sqrt()))


def test_regularity_bounds() -> None:
    assert regularity_bounds(1.0, 3.0) == (6.0, 0.0)
    norm_bound, balance_bound = regularity_bounds(2.0, 0.5)
    assert norm_bound == pytest.approx(4.0)  # 2 * 4 * 0.5
    assert balance_bound == pytest.approx(3.0)  # 2 * 4 * (1 - 1/4) * 0.5
    assert regularity_bounds(float("inf"), 1.0) == (float("inf"), float("inf"))
