"""Theorem 3.3 on random instances: near norm-minimality and near balancedness of flat solutions."""

from __future__ import annotations

import pytest
import torch

from flatminima.errors import InputDataError
from flatminima.problems import BilinearSensing, MatrixCompletion, MatrixSensing, Problem
from flatminima.solvers import ConvexResult, solve_flat, solve_nuclear_norm
from flatminima.solvers.regularity import flat_regularity, regularity_report

PROBLEMS: list[Problem] = [
    MatrixSensing(shape=(10, 10), rank=2, num_measurements=60),
    MatrixSensing(shape=(8, 12), rank=2, num_measurements=30),  # failing regime: bounds hold anyway
    BilinearSensing(shape=(12, 12), rank=2, num_measurements=100),
    MatrixCompletion(shape=(15, 15), rank=2, probability=0.7),
]


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
@pytest.mark.parametrize("seed", range(3))
def test_theorem_3_3_bounds(problem: Problem, seed: int) -> None:
    instance = problem.sample(generator=torch.Generator().manual_seed(100 + seed))
    if instance.metadata.get("empty_rows") or instance.metadata.get("empty_columns"):
        pytest.skip("singular D (empty line); the theorem needs invertible rescalings")
    report = regularity_report(instance)
    assert report.kappa == pytest.approx(instance.operator.rescaling_condition_number(), rel=1e-9)
    assert report.kappa > 1.0
    # (22): ||L_f||^2 + ||R_f||^2 <= kappa^2 * 2 ||X_nuc||_*
    assert report.norm_bound_holds
    assert report.flat_norm <= report.norm_bound
    # the flat factors are not more norm-minimal than NNM: gap >= 0 up to solver error
    assert report.norm_gap >= -1e-9
    # Lemma 3.4 with c(kappa) = 1 - kappa^-2, and (23) with ||M||_*
    assert report.balancedness_bound_holds
    assert report.balancedness_nuc <= report.balancedness_bound
    assert report.balancedness_nuc <= report.theorem_balancedness_bound
    assert report.balancedness_fro <= report.balancedness_nuc + 1e-12


def test_figure_4_measures_are_small_but_not_zero() -> None:
    """Ding et al. 2024, Fig. 4: where flat solutions recover, norm gap and balancedness are small, not 0."""
    instance = MatrixSensing(shape=(10, 10), rank=2, num_measurements=100).sample(
        generator=torch.Generator().manual_seed(0)
    )
    report = regularity_report(instance)
    assert 1e-5 < report.norm_gap < 0.1
    assert 1e-3 < report.balancedness_nuc < 0.5


def test_regularity_of_flat_against_itself_is_refused() -> None:
    instance = MatrixSensing(shape=(8, 8), rank=2, num_measurements=60).sample(
        generator=torch.Generator().manual_seed(0)
    )
    flat = solve_flat(instance)
    assert isinstance(flat, ConvexResult)
    with pytest.raises(InputDataError, match=r"needs a flat result and a nuclear_norm result"):
        flat_regularity(flat, flat)
    nuclear = solve_nuclear_norm(instance)
    assert isinstance(nuclear, ConvexResult)
    report = flat_regularity(flat, nuclear)
    assert report.theorem_balancedness_bound != report.theorem_balancedness_bound  # nan without M
    assert report.balancedness_bound_holds
