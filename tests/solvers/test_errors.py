"""Bad arguments and bad data: one-line errors from flatminima.errors, each with its message."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from flatminima.errors import (
    ConfigurationError,
    InputDataError,
    InputTypeError,
    SingularRescalingError,
    SolverError,
)
from flatminima.problems import BilinearSensing, MatrixCompletion, SparseRecovery
from flatminima.solvers import ConvexResult, solve_flat, solve_nuclear_norm

from .conftest import recovery_instance


def test_unknown_backend_names_the_valid_ones() -> None:
    with pytest.raises(
        ConfigurationError, match=r"backend must be one of 'torch', 'cvxpy'; got backend='mosek'"
    ):
        solve_flat(recovery_instance("matrix_sensing"), backend="mosek")


def test_unknown_method() -> None:
    with pytest.raises(
        ConfigurationError, match=r"method must be one of 'auto', 'admm', 'interior_point', 'factor_search'"
    ):
        solve_nuclear_norm(recovery_instance("matrix_sensing"), method="sdp")


def test_interior_point_needs_an_equality_constraint() -> None:
    with pytest.raises(ConfigurationError, match=r"method='interior_point' needs an equality-constrained"):
        solve_flat(recovery_instance("matrix_sensing"), method="interior_point", eps=0.1)
    with pytest.raises(ConfigurationError, match=r"got kind='robust_pca'"):
        solve_flat(recovery_instance("robust_pca"), method="interior_point")


def test_method_with_reference_backend() -> None:
    with pytest.raises(ConfigurationError, match=r"applies to the 'torch' backend only"):
        solve_flat(recovery_instance("matrix_sensing"), backend="cvxpy", method="admm")


def test_negative_eps() -> None:
    with pytest.raises(InputDataError, match=r"eps must satisfy 0.0 <= eps; got eps=-0.1"):
        solve_flat(recovery_instance("matrix_sensing"), eps=-0.1)


@pytest.mark.parametrize("tolerance", [0.0, -1e-9])
def test_non_positive_tolerance(tolerance: float) -> None:
    with pytest.raises(InputDataError, match=r"tolerance must satisfy 0.0 < tolerance"):
        solve_flat(recovery_instance("matrix_sensing"), tolerance=tolerance)


def test_width_below_one() -> None:
    with pytest.raises(InputDataError, match=r"width must be >= 1; got width=0"):
        solve_flat(recovery_instance("matrix_sensing"), width=0)


def test_max_iterations_and_time_limit() -> None:
    with pytest.raises(InputDataError, match=r"max_iterations must be >= 1; got max_iterations=0"):
        solve_flat(recovery_instance("matrix_sensing"), max_iterations=0)
    with pytest.raises(InputDataError, match=r"time_limit must satisfy 0.0 < time_limit"):
        solve_flat(recovery_instance("matrix_sensing"), time_limit=-1.0)
    with pytest.raises(InputTypeError, match=r"generator must be a torch.Generator or None; got int"):
        solve_flat(recovery_instance("matrix_sensing"), generator=0)  # type: ignore[arg-type]


def test_factors_width_below_rank_and_below_one() -> None:
    result = solve_flat(recovery_instance("matrix_sensing"))
    assert isinstance(result, ConvexResult) and result.rank == 2
    with pytest.raises(InputDataError, match=r"width must be >= the rank of the solution \(2\); got width=1"):
        result.factors(1)
    with pytest.raises(InputDataError, match=r"width must be >= 1; got width=0"):
        result.factors(0)


def test_symmetric_factors_width_below_signature() -> None:
    result = solve_flat(recovery_instance("quadratic_network"))
    assert isinstance(result, ConvexResult)
    with pytest.raises(InputDataError, match=r"width must hold the 2 positive and 1 negative eigenvalues"):
        result.factors((1, 1))


def test_depth_on_a_matrix_kind() -> None:
    with pytest.raises(ConfigurationError, match=r"depth applies to sparse_recovery instances"):
        solve_flat(recovery_instance("matrix_sensing"), depth=3)


def test_depth_below_two() -> None:
    instance = SparseRecovery(dim=20, sparsity=2, num_measurements=10).sample(
        generator=torch.Generator().manual_seed(0)
    )
    with pytest.raises(InputDataError, match=r"depth must be >= 2; got depth=1"):
        solve_flat(instance, depth=1)


def test_eps_on_robust_pca() -> None:
    with pytest.raises(
        ConfigurationError, match=r"eps \(noisy equality constraint\) does not apply to robust_pca"
    ):
        solve_flat(recovery_instance("robust_pca"), eps=0.1)


def test_unsupported_kind() -> None:
    instance = dataclasses.replace(recovery_instance("matrix_sensing"), kind="tensor_sensing")
    with pytest.raises(ConfigurationError, match=r"support problem kinds .*; got kind='tensor_sensing'"):
        solve_flat(instance)


def test_not_an_instance() -> None:
    with pytest.raises(InputTypeError, match=r"instance must be a flatminima.problems.Instance"):
        solve_flat(torch.zeros(3, 3))  # type: ignore[arg-type]


def test_factor_search_on_symmetric_kind() -> None:
    with pytest.raises(ConfigurationError, match=r"method='factor_search' supports equality-constrained"):
        solve_flat(recovery_instance("quadratic_network"), method="factor_search")


def _completion_with_empty_lines() -> MatrixCompletion:
    return MatrixCompletion(shape=(12, 12), rank=2, probability=0.15)


def test_singular_rescaling_names_empty_rows_and_columns() -> None:
    instance = _completion_with_empty_lines().sample(generator=torch.Generator().manual_seed(0))
    rows, cols = instance.metadata["empty_rows"], instance.metadata["empty_columns"]
    assert rows or cols
    expected = (
        "empty rows ["
        + ", ".join(str(i) for i in rows)
        + "] and empty columns ["
        + ", ".join(str(j) for j in cols)
    )
    with pytest.raises(SingularRescalingError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        solve_flat(instance)
    with pytest.raises(SingularRescalingError):
        solve_flat(instance, backend="cvxpy")


def test_nuclear_norm_does_not_need_rescaling() -> None:
    """NNM is defined with empty rows: it returns (the problem is simply not recovered), never raises."""
    instance = _completion_with_empty_lines().sample(generator=torch.Generator().manual_seed(0))
    result = solve_nuclear_norm(instance, max_iterations=200)
    assert isinstance(result, ConvexResult)
    assert not result.recovered(instance.ground_truth)


def test_singular_rescaling_of_rank_one_designs() -> None:
    """Bilinear designs with m < d have rank-deficient D1^2 = (1/(m d2)) sum ||b_l||^2 a_l a_l^T."""
    instance = BilinearSensing(shape=(10, 10), rank=1, num_measurements=6).sample(
        generator=torch.Generator().manual_seed(0)
    )
    with pytest.raises(
        SingularRescalingError, match=r"the rescaling matrix D1 is singular \(4 zero eigenvalue"
    ):
        solve_flat(instance)


def test_missing_reference_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    with pytest.raises(
        SolverError, match=r"the 'reference' extra is not installed; pip install 'flatminima\[reference\]'"
    ):
        solve_flat(recovery_instance("matrix_sensing"), backend="cvxpy")
