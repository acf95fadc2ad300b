from __future__ import annotations

import pytest
import torch
from curvature_cases import dense_hessian, mlp_case, within

from flatminima.curvature import (
    HessianOperator,
    MatrixOperator,
    exact_hessian_diagonal,
    exact_squared_frobenius_norm,
    hutchinson_hessian_diagonal,
    hutchinson_squared_frobenius_norm,
)
from flatminima.errors import InputDataError, InputTypeError


@pytest.fixture(scope="module")
def mlp():
    case = mlp_case(1)
    return HessianOperator(case.loss, case.params()), dense_hessian(case.loss, case.params())


def test_exact_diagonal(mlp) -> None:
    H, dense = mlp
    torch.testing.assert_close(exact_hessian_diagonal(H, batch_size=5), dense.diagonal())


def test_hutchinson_diagonal_within_five_standard_errors(mlp) -> None:
    H, dense = mlp
    estimate = hutchinson_hessian_diagonal(H, 400, generator=torch.Generator().manual_seed(0))
    assert estimate.value.shape == (H.size,) and estimate.num_matvecs == 400
    error = (estimate.value - dense.diagonal()).abs()
    assert bool((error <= 5 * estimate.stderr + 1e-12).all())
    assert bool((estimate.stderr > 0).any())


def test_hutchinson_diagonal_is_exact_for_a_diagonal_matrix() -> None:
    H = MatrixOperator(torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)))
    estimate = hutchinson_hessian_diagonal(H, 10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(estimate.value, torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    assert float(estimate.stderr.max()) == 0.0


def test_squared_frobenius_norm(mlp) -> None:
    H, dense = mlp
    exact = float(dense.square().sum())
    assert float(exact_squared_frobenius_norm(H, batch_size=9)) == pytest.approx(exact, rel=1e-10)
    for distribution in ("rademacher", "gaussian"):
        estimate = hutchinson_squared_frobenius_norm(
            H, 300, generator=torch.Generator().manual_seed(1), distribution=distribution
        )
        assert estimate.stderr > 0 and within(estimate, exact)
    eigenvalues = torch.linalg.eigvalsh(dense)
    assert float((eigenvalues**2).sum()) == pytest.approx(exact, rel=1e-10)


def test_errors() -> None:
    H = MatrixOperator(torch.eye(2, dtype=torch.float64))
    with pytest.raises(InputTypeError, match="generator"):
        hutchinson_hessian_diagonal(H, 10)
    with pytest.raises(InputDataError, match="num_probes must be >= 10"):
        hutchinson_hessian_diagonal(H, 3, generator=torch.Generator())
    with pytest.raises(InputDataError, match="num_probes must be >= 10"):
        hutchinson_squared_frobenius_norm(H, 3, generator=torch.Generator())
    with pytest.raises(InputDataError, match="batch_size must be >= 1"):
        exact_hessian_diagonal(H, batch_size=0)
