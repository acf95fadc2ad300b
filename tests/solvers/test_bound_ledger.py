"""Weak duality across iterates: the ledger's best primal point with its best (scaled) dual bound."""

from __future__ import annotations

import math

import pytest
import torch

from flatminima.problems import MatrixSensing
from flatminima.solvers import solve_nuclear_norm
from flatminima.solvers.convex.certificate import BoundLedger, dense_candidate
from flatminima.solvers.convex.first_order import build_constraint
from flatminima.solvers.convex.formulation import formulate

TOLERANCE = 1e-9


def _setting() -> tuple[object, object, object]:
    instance = MatrixSensing(shape=(6, 5), rank=1, num_measurements=18).sample(
        generator=torch.Generator().manual_seed(4)
    )
    result = solve_nuclear_norm(instance)
    assert result.converged
    constraint = build_constraint(formulate(instance, "nuclear_norm", eps=None))
    return instance, result, constraint


def _candidate(constraint, Z: torch.Tensor, lam: torch.Tensor, source: str):  # type: ignore[no-untyped-def]
    U, s, Vh = torch.linalg.svd(Z, full_matrices=False)
    return dense_candidate(
        U=U,
        s=s,
        V=Vh.mT,
        multiplier=lam,
        dual_matrix=constraint.bmap.adjoint(lam),
        dual_objective=float(lam @ constraint.b),
        primal_residual=constraint.residual(Z),
        scale=constraint.scale,
        symmetric=False,
        tolerance=TOLERANCE,
        source=source,
    )


def test_pair_of_optimal_primal_and_an_oversized_dual_is_certified() -> None:
    """lambda* x 1.5 has ||B^*||_op = 1.5 and bound <lambda*, b>: scaled back, it certifies Z*."""
    _, result, constraint = _setting()
    Z, lam = result.matrix, result.multiplier
    ledger = BoundLedger(TOLERANCE, constraint.scale)
    ledger.observe(
        _candidate(constraint, constraint.project(torch.zeros_like(Z)), 1.5 * lam, "oversized dual")
    )
    pair = ledger.combined(symmetric=False)
    assert pair is not None
    assert pair.certificate.dual_norm == pytest.approx(1.0, abs=1e-12)
    assert ledger.dual_bound == pytest.approx(float(lam @ constraint.b), rel=1e-12)
    # the least-norm point is feasible but not optimal: the pair's gap is its true excess, not zero
    least_norm = float(torch.linalg.matrix_norm(constraint.project(torch.zeros_like(Z)), ord="nuc"))
    optimum = float(torch.linalg.matrix_norm(Z, ord="nuc"))
    assert least_norm > optimum * (1 + 1e-6)
    assert pair.certificate.relative_duality_gap == pytest.approx(
        (least_norm - optimum) / least_norm, rel=1e-6
    )
    assert not pair.certificate.satisfied
    ledger.observe(_candidate(constraint, Z, 0 * lam, "optimal primal, useless dual"))
    pair = ledger.combined(symmetric=False)
    assert pair is not None and pair.certificate.satisfied
    assert pair.source == "optimal primal, useless dual + dual of oversized dual"


def test_infeasible_points_never_bound_the_primal() -> None:
    """A point with a smaller nuclear norm that misses B(Z) = b is no upper bound on p*."""
    _, result, constraint = _setting()
    Z, lam = result.matrix, result.multiplier
    ledger = BoundLedger(TOLERANCE, constraint.scale)
    ledger.observe(_candidate(constraint, 0.5 * Z, lam, "infeasible"))
    assert ledger.primal is None and ledger.combined(symmetric=False) is None
    assert math.isfinite(ledger.dual_bound)
