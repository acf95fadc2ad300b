"""The dual search finds a certifying multiplier on the face where the least-norm one fails, and no more."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from flatminima.problems import BilinearSensing, Instance
from flatminima.solvers import ConvexResult, Status, solve_flat
from flatminima.solvers._deadline import NO_DEADLINE
from flatminima.solvers.convex import dual_search
from flatminima.solvers.convex.certificate import tangent_residual
from flatminima.solvers.convex.dual_search import MARGIN, off_tangent, search_dual
from flatminima.solvers.convex.factor_polish import polish_and_certify
from flatminima.solvers.convex.formulation import formulate
from flatminima.solvers.convex.linear_map import ScaledMap
from flatminima.solvers.convex.polish import TangentSystem, corrected_multiplier
from flatminima.solvers.convex.structured import certify_structured


def _certify_options() -> dict[str, Any]:
    """The tolerance and a freshly seeded generator, for every certificate made here."""
    return {"tolerance": 1e-9, "generator": torch.Generator().manual_seed(0)}


def _instance(ratio: int, seed: int) -> Instance:
    """Bilinear sensing, d = 12, rank 2, m = ratio * d (the transition is near m = 10 d)."""
    problem = BilinearSensing(shape=(12, 12), rank=2, num_measurements=12 * ratio)
    return problem.sample(generator=torch.Generator().manual_seed(seed))


def _off_norm(bmap: ScaledMap, lam: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(off_tangent(bmap.adjoint(lam), U, V), ord=2))


def _face(
    instance: Instance, relaxation: str, X: torch.Tensor
) -> tuple[ScaledMap, TangentSystem, torch.Tensor]:
    """The map, the tangent system at the rank-2 matrix X and the least-norm multiplier of its face."""
    bmap = formulate(instance, relaxation, eps=None).bmap
    assert bmap is not None
    U, _, Vh = torch.linalg.svd(X)
    system = TangentSystem(bmap, U[:, :2], Vh[:2].mT)
    return bmap, system, corrected_multiplier(system, None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_certifying_multiplier_is_found_where_the_least_norm_one_fails(seed: int) -> None:
    instance = _instance(9, seed)
    flat = solve_flat(instance, method="interior_point")
    assert isinstance(flat, ConvexResult) and flat.certificate.satisfied
    assert flat.recovery_error(instance.ground_truth) < 1e-8
    Z = (flat.left_singular_vectors * flat.singular_values) @ flat.right_singular_vectors.mT
    bmap, system, least_norm = _face(instance, "flat", Z)
    U, V = system.U, system.V
    assert _off_norm(bmap, least_norm, U, V) > 1.0  # the usual certificate fails here
    lam = search_dual(bmap, system, least_norm)
    assert lam is not None
    assert _off_norm(bmap, lam, U, V) <= 1.0 - MARGIN
    assert tangent_residual(U, V, bmap.adjoint(lam)) < 1e-10  # still on the face
    point = (bmap, instance.observations, U, torch.linalg.svdvals(Z)[:2], V)
    candidate = certify_structured(*point, lam, exact=True, source="test", **_certify_options())
    assert candidate.certificate.satisfied, candidate.certificate


def test_a_multiplier_that_already_certifies_is_returned_unchanged() -> None:
    instance = _instance(16, 0)
    bmap, system, least_norm = _face(instance, "nuclear_norm", instance.ground_truth)
    assert _off_norm(bmap, least_norm, system.U, system.V) < 1.0 - MARGIN
    assert search_dual(bmap, system, least_norm) is least_norm


def test_no_certificate_comes_out_for_a_point_that_is_not_optimal() -> None:
    """Below the transition the ground truth is feasible but not the minimizer: no proof can exist."""
    instance = _instance(5, 0)
    bmap, system, least_norm = _face(instance, "nuclear_norm", instance.ground_truth)
    lam = search_dual(bmap, system, least_norm, max_iterations=200)
    assert lam is not None
    assert _off_norm(bmap, lam, system.U, system.V) > 1.0


def test_above_the_dense_limit_the_search_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    instance = _instance(9, 2)
    bmap, system, least_norm = _face(instance, "nuclear_norm", instance.ground_truth)
    monkeypatch.setattr(dual_search, "DENSE_LIMIT", 11)
    assert search_dual(bmap, system, least_norm) is None


def test_the_factor_search_certifies_through_the_dual_search() -> None:
    instance = _instance(9, 2)
    result = solve_flat(instance, method="factor_search")
    assert isinstance(result, ConvexResult)
    assert result.status is Status.CONVERGED, result.message
    assert result.certificate.satisfied
    assert result.info["candidate_source"].endswith("+dual-search")
    assert result.recovery_error(instance.ground_truth) < 1e-10


def test_the_search_gives_up_once_its_value_stops_halving() -> None:
    progress = dual_search._Progress(NO_DEADLINE)
    for value in [1.0, 0.4, 0.1, 0.02, 0.004, 1e-3, 2e-4, 5e-5, 1e-5, 2e-6, 4e-7, 8e-8]:
        progress.record(value)
        assert not progress.expired()  # shrinking fast: keep going
    for _ in range(dual_search.STAGNATION_WINDOW - 1):
        progress.record(7.9e-8)
        assert not progress.expired()
    progress.record(7.9e-8)
    assert progress.expired()  # not halved over the window


def test_the_searched_multiplier_is_certified_exactly_where_the_solve_uses_lanczos() -> None:
    """Above exact_dual_limit the certificate bounds ||W|| by block Lanczos, whose Ritz residual can
    exceed the search's margin: the searched pair is certified by a dense SVD instead."""
    instance = _instance(9, 2)
    flat = solve_flat(instance, method="interior_point")
    assert isinstance(flat, ConvexResult)
    U, s, V = flat.left_singular_vectors[:, :2], flat.singular_values[:2], flat.right_singular_vectors[:, :2]
    bmap, _, least_norm = _face(instance, "flat", (U * s) @ V.mT)
    candidate = polish_and_certify(
        bmap, instance.observations, U, s, V, least_norm, exact=False, **_certify_options()
    )
    assert candidate.certificate.satisfied, candidate.certificate
    assert candidate.source.endswith("+dual-search") and candidate.certificate.dual_norm_exact
