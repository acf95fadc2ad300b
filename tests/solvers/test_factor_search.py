"""Direct flat search in factor space agrees with P_flat (ADMM) and carries the convex certificate."""

from __future__ import annotations

import pytest
import torch

from flatminima.problems import BilinearSensing, MatrixCompletion, MatrixSensing, Problem
from flatminima.solvers import ConvexResult, Status, solve_flat, solve_nuclear_norm

CASES: list[Problem] = [
    MatrixSensing(shape=(10, 12), rank=2, num_measurements=90),
    BilinearSensing(shape=(20, 20), rank=2, num_measurements=300),
    MatrixCompletion(shape=(30, 30), rank=2, probability=0.6),
]


@pytest.mark.parametrize("problem", CASES, ids=lambda p: p.name)
@pytest.mark.parametrize("relaxation", ["flat", "nuclear_norm"])
def test_factor_search_agrees_with_admm(problem: Problem, relaxation: str) -> None:
    instance = problem.sample(generator=torch.Generator().manual_seed(7))
    solve = solve_flat if relaxation == "flat" else solve_nuclear_norm
    factor = solve(instance, method="factor_search")
    admm = solve(instance, method="admm")
    assert isinstance(factor, ConvexResult) and isinstance(admm, ConvexResult)
    assert factor.method == "factor_search" and admm.method == "admm"
    assert factor.status is Status.CONVERGED, factor.message
    assert factor.certificate.max_relative_residual <= 1e-9
    assert factor.recovery_error(instance.ground_truth) < 1e-6
    assert float(torch.linalg.matrix_norm(factor.matrix - admm.matrix)) < 1e-8
    assert factor.certificate.primal_objective == pytest.approx(admm.certificate.primal_objective, rel=1e-10)


def test_structured_certificate_matches_the_exact_one() -> None:
    """Block Lanczos on B^*(lambda) (no dense SVD) gives the same dual residual as the exact path."""
    from flatminima.solvers.convex.dual_search import off_tangent
    from flatminima.solvers.convex.formulation import formulate
    from flatminima.solvers.convex.structured import certify_structured

    instance = BilinearSensing(shape=(20, 20), rank=2, num_measurements=300).sample(
        generator=torch.Generator().manual_seed(7)
    )
    result = solve_flat(instance, method="factor_search")
    assert isinstance(result, ConvexResult) and result.multiplier is not None
    bmap = formulate(instance, "flat", eps=None).bmap
    assert bmap is not None
    args = (bmap, instance.observations, result.left_singular_vectors, result.singular_values)
    kwargs = {"tolerance": 1e-9, "generator": torch.Generator().manual_seed(0), "source": "test"}
    exact = certify_structured(*args, result.right_singular_vectors, result.multiplier, exact=True, **kwargs)
    lanczos = certify_structured(
        *args, result.right_singular_vectors, result.multiplier, exact=False, **kwargs
    )
    assert not lanczos.certificate.dual_norm_exact
    assert lanczos.certificate.satisfied and exact.certificate.satisfied
    assert lanczos.certificate.dual_norm == pytest.approx(exact.certificate.dual_norm, abs=1e-9)
    # the part of B^*(lambda) off the tangent space has norm < 1: estimate it both ways
    G = bmap.adjoint(result.multiplier)
    U, V = result.left_singular_vectors, result.right_singular_vectors
    W = off_tangent(G, U, V)
    assert float(torch.linalg.matrix_norm(W, ord=2)) < 1


def test_width_grows_when_too_small() -> None:
    """Started at width 1 for a rank-2 solution, the search adds columns until the certificate holds."""
    instance = BilinearSensing(shape=(20, 20), rank=2, num_measurements=300).sample(
        generator=torch.Generator().manual_seed(7)
    )
    result = solve_flat(instance, method="factor_search", width=1)
    assert isinstance(result, ConvexResult)
    assert result.status is Status.CONVERGED, result.message
    assert result.rank == 2 and result.info["width"] >= 2
    assert result.recovery_error(instance.ground_truth) < 1e-6


def test_factor_search_failing_regime_is_not_recovered() -> None:
    instance = MatrixSensing(shape=(10, 10), rank=2, num_measurements=30).sample(
        generator=torch.Generator().manual_seed(0)
    )
    result = solve_flat(instance, method="factor_search", max_iterations=2000)
    assert isinstance(result, ConvexResult)
    assert not result.recovered(instance.ground_truth)


def test_factor_search_is_reproducible() -> None:
    instance = CASES[1].sample(generator=torch.Generator().manual_seed(7))
    first = solve_flat(instance, method="factor_search", generator=torch.Generator().manual_seed(3))
    second = solve_flat(instance, method="factor_search", generator=torch.Generator().manual_seed(3))
    assert isinstance(first, ConvexResult) and isinstance(second, ConvexResult)
    assert torch.equal(first.matrix, second.matrix)


@pytest.mark.parametrize("problem", CASES, ids=lambda p: p.name)
def test_fused_pass_equals_separate_products(problem: Problem) -> None:
    """factored_with_adjoint equals B(P Q^T), y and (B^*(y) Q, B^*(y)^T P) computed separately."""
    from flatminima.solvers.convex.formulation import formulate

    if isinstance(problem, BilinearSensing):  # several blocks of the fused rank-one pass
        problem = BilinearSensing(shape=(20, 20), rank=2, num_measurements=4500)
    generator = torch.Generator().manual_seed(3)
    formulation = formulate(problem.sample(generator=generator), "flat", eps=None)
    bmap = formulation.bmap
    assert bmap is not None
    d1, d2 = bmap.shape
    P = torch.randn(d1, 3, generator=generator, dtype=torch.float64)
    Q = torch.randn(d2, 3, generator=generator, dtype=torch.float64)
    b = formulation.b

    def residual(value: torch.Tensor) -> torch.Tensor:
        return 2.0 * value - b

    value, y, GQ, GtP = bmap.factored_with_adjoint(P, Q, residual)
    expected_value = bmap.apply_factored(P, Q)
    expected_y = 2.0 * expected_value - b
    torch.testing.assert_close(value, expected_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, expected_y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(GQ, bmap.adjoint_matmul(expected_y, Q), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(GtP, bmap.adjoint_t_matmul(expected_y, P), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([9.0, 8.0, 3.0, 2.9, 2.8], 2),  # a dominant jump after the second value
        ([9.0, 5.0, 3.0, 2.9], None),  # two comparable jumps: ambiguous
        ([9.0, 8.9, 8.8], None),  # no jump at all
        ([4.0], None),  # one value: no ratio
    ],
)
def test_revealed_rank(values: list[float], expected: int | None) -> None:
    from flatminima.solvers.convex.factor_polish import revealed_rank

    assert revealed_rank(torch.tensor(values, dtype=torch.float64)) == expected


def test_spectral_start_is_certified_directly_when_the_rank_is_revealed() -> None:
    """A clear spectral gap: Gauss-Newton from the spectral start is certified, no augmented Lagrangian."""
    instance = BilinearSensing(shape=(60, 60), rank=2, num_measurements=2400).sample(
        generator=torch.Generator().manual_seed(7)
    )
    factor = solve_flat(instance, method="factor_search")
    admm = solve_flat(instance, method="admm")
    assert isinstance(factor, ConvexResult) and isinstance(admm, ConvexResult)
    assert factor.status is Status.CONVERGED, factor.message
    assert factor.info["candidate_source"] == "spectral-gauss-newton"
    assert factor.history[0]["gauss_newton_steps"] == factor.iterations >= 1
    assert factor.certificate.max_relative_residual <= 1e-9
    assert float(torch.linalg.matrix_norm(factor.matrix - admm.matrix)) < 1e-8


def test_spectral_shortcut_declines_a_misread_rank() -> None:
    """A spectrum read as rank 1 for a rank-2 solution: Gauss-Newton cannot reach feasibility (None)."""
    from flatminima.solvers.convex.factor_polish import spectral_polish
    from flatminima.solvers.convex.formulation import formulate
    from flatminima.solvers.convex.structured import spectral_start

    instance = BilinearSensing(shape=(60, 60), rank=2, num_measurements=2400).sample(
        generator=torch.Generator().manual_seed(7)
    )
    formulation = formulate(instance, "flat", eps=None)
    assert formulation.bmap is not None
    generator = torch.Generator().manual_seed(0)
    U0, s0, V0 = spectral_start(formulation.bmap, formulation.b, 6, generator)
    misread = torch.tensor([10.0, 1.0, 0.99, 0.98, 0.97, 0.96], dtype=torch.float64)
    args = (formulation.bmap, formulation.b, U0, misread, V0)
    assert spectral_polish(*args, tolerance=1e-9, exact=True, generator=generator) is None
    # the true spectrum reveals rank 2 and is certified
    found = spectral_polish(
        formulation.bmap, formulation.b, U0, s0, V0, tolerance=1e-9, exact=True, generator=generator
    )
    assert found is not None and found[0].certificate.satisfied and found[0].s.numel() == 2


def test_completion_tangent_system_is_matrix_free() -> None:
    """Entry masks never build a dense Jacobian (O(m r) products); Gauss-Newton still reaches round-off."""
    from flatminima.solvers.convex.formulation import formulate
    from flatminima.solvers.convex.polish import TangentSystem, gauss_newton

    instance = MatrixCompletion(shape=(40, 40), rank=2, probability=0.5).sample(
        generator=torch.Generator().manual_seed(3)
    )
    formulation = formulate(instance, "flat", eps=None)
    bmap, b = formulation.bmap, formulation.b
    assert bmap is not None and bmap.entry_mask
    left, right = formulation.left_inverse, formulation.right_inverse
    assert left is not None and right is not None and left.ndim == right.ndim == 1  # diagonal D1, D2
    Z = instance.ground_truth / left[:, None] / right  # the solution in rescaled coordinates, D1 M D2
    U, s, V = torch.linalg.svd(Z)
    U, s, V = U[:, :2], s[:2], V.mT[:, :2]
    assert not TangentSystem(bmap, U, V).dense
    noise = 1e-3 * torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    outcome = gauss_newton(bmap, b, U + noise, s, V, symmetric=False)
    assert min(outcome.residuals) <= 1e-12 * float(torch.linalg.vector_norm(b))
