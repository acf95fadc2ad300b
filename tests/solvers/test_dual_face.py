"""Face correction of a dual point and rank-k primals: exact top block, valid bounds, degenerate case."""

from __future__ import annotations

import pytest
import torch

from flatminima.experiments.trial import Trial, trial_instance
from flatminima.problems import MatrixSensing
from flatminima.solvers import solve_flat, solve_nuclear_norm
from flatminima.solvers.convex.certificate import BoundLedger, dense_candidate
from flatminima.solvers.convex.dual_face import face_corrected_multiplier, face_ranks, observe_face_pairs
from flatminima.solvers.convex.first_order import build_constraint
from flatminima.solvers.convex.formulation import formulate

TOLERANCE = 1e-9


def _solved() -> tuple[object, object]:
    instance = MatrixSensing(shape=(8, 7), rank=2, num_measurements=40).sample(
        generator=torch.Generator().manual_seed(3)
    )
    result = solve_nuclear_norm(instance)
    assert result.converged
    return result, build_constraint(formulate(instance, "nuclear_norm", eps=None))


def test_face_ranks_reads_the_largest_jumps_towards_one() -> None:
    sigma = torch.tensor([1 - 1e-12, 1 - 1e-11, 1 - 1e-5, 1 - 1e-4, 0.6, 0.2], dtype=torch.float64)
    assert face_ranks(sigma, limit=2) == [2, 4]
    assert face_ranks(torch.tensor([0.3, 0.1])) == []


def test_corrected_multiplier_makes_the_top_block_one_and_stays_a_bound() -> None:
    """A multiplier knocked off by 1e-7 is moved back: sigma_1..k = 1 to rounding, and the bound is valid."""
    result, constraint = _solved()
    lam_star = result.multiplier
    optimum = float(torch.linalg.matrix_norm(result.matrix, ord="nuc"))
    noise = torch.randn(lam_star.shape, generator=torch.Generator().manual_seed(0), dtype=lam_star.dtype)
    lam = lam_star + 1e-7 * noise / noise.norm()
    before = torch.linalg.svdvals(constraint.bmap.adjoint(lam))
    assert float((before[:2] - 1).abs().max()) > 1e-11  # the perturbation is visible
    corrected = face_corrected_multiplier(constraint.bmap, lam, 2)
    assert corrected is not None
    after = torch.linalg.svdvals(constraint.bmap.adjoint(corrected))
    assert float((after[:2] - 1).abs().max()) < 1e-13
    assert float(after[2]) < 1.0
    bound = float(corrected @ constraint.b) / max(1.0, float(after[0]))
    assert bound <= optimum * (1 + 1e-13)  # weak duality
    assert bound >= optimum * (1 - 1e-12)  # and it is tight: the correction moved along the dual face
    assert face_corrected_multiplier(constraint.bmap, lam, 0) is None


def test_face_pairs_only_ever_improve_the_ledger() -> None:
    """Observing face pairs never lowers the dual bound nor raises the best feasible objective."""
    result, constraint = _solved()
    ledger = BoundLedger(TOLERANCE, constraint.scale)
    Z = result.matrix + 1e-6 * torch.ones_like(result.matrix)
    Z = constraint.project_accurately(Z)
    U, s, Vh = torch.linalg.svd(Z, full_matrices=False)
    noise = torch.randn(result.multiplier.shape, generator=torch.Generator().manual_seed(1), dtype=Z.dtype)
    lam = result.multiplier + 1e-7 * noise / noise.norm()
    ledger.observe(
        dense_candidate(
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
            source="perturbed",
        )
    )
    before = ledger.combined(symmetric=False)
    assert before is not None and not before.certificate.satisfied
    primal_before = ledger.primal.certificate.primal_objective  # type: ignore[union-attr]
    bound_before = ledger.dual_bound
    observe_face_pairs(ledger, constraint, [lam], symmetric=False)
    assert ledger.primal.certificate.primal_objective <= primal_before  # type: ignore[union-attr]
    assert ledger.dual_bound >= bound_before
    pair = ledger.combined(symmetric=False)
    assert pair is not None and pair.certificate.satisfied  # rank-2 truncation + corrected dual


@pytest.mark.parametrize("threads", [1, 2])
def test_degenerate_completion_trial_at_the_transition_is_certified(threads: int) -> None:
    """fig3-completion quick, 16 x 16, p = 0.6, draw 3, flat: a rank-6 solution with singular values over
    five decades and a dual solution set that is not a point. The interior-point path stalls at a relative
    KKT residual of 5e-9 (its Schur complement is singular in the limit); the rank-6 face pair certifies."""
    trial = Trial(
        sweep="fig3-completion/quick",
        problem="matrix_completion",
        params={"probability": 0.6, "rank": 2, "shape": [16, 16]},
        method="flat",
        label="flat",
        seed=0,
        draw=3,
        options={},
        cell={"dim": 16, "probability": 0.6},
        truth="cell",
        tolerance=1e-6,
    )
    instance, _ = trial_instance(trial)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = solve_flat(instance)
    finally:
        torch.set_num_threads(previous)
    assert result.converged, result.message
    assert result.certificate.max_relative_residual <= 1e-9
