"""The interior-point method as a stage of the torch solver: iterates certified, rank-identified refinement.

:func:`interior_point_stage` runs :func:`~flatminima.solvers.convex.interior_point.interior_point` on
B(Z) = b and judges each iterate after an exact projection onto the affine set (so the primal residual is
at rounding and the certificate measures the gap and the dual norm); every candidate goes to the solve's
:class:`~flatminima.solvers.convex.certificate.BoundLedger`. Once the iterate is close, its singular
values split into O(1) and O(mu), which identifies the rank for the polish of
:mod:`~flatminima.solvers.convex.rank_polish`.

References:
    Helmberg, Rendl, Vanderbei, Wolkowicz. An interior-point method for semidefinite programming (SIAM J.
    Optim. 1996).
"""

from __future__ import annotations

import torch

from flatminima.solvers._deadline import Deadline
from flatminima.solvers.convex.admm import nuclear_prox
from flatminima.solvers.convex.certificate import BoundLedger, Candidate, better, dense_candidate
from flatminima.solvers.convex.constraints import AffineSet
from flatminima.solvers.convex.interior_point import InteriorPointOutcome, interior_point
from flatminima.solvers.convex.rank_polish import Polish

#: Newton steps of the interior-point method at most (it needs 15-40).
IPM_MAX_ITERATIONS = 80
#: besides the central-path split, the refinement tries the ranks at this many largest spectral gaps.
REFINE_RANKS = 2


def interior_point_stage(
    constraint: AffineSet,
    polish: Polish,
    symmetric: bool,
    scale: float,
    tolerance: float,
    time_limit: float | None,
    start_time: float,
    *,
    max_iterations: int | None = None,
    deadline: Deadline | None = None,
    ledger: BoundLedger | None = None,
) -> InteriorPointOutcome:
    """The interior-point method on B(Z) = b, its iterates certified after an exact projection onto C.

    With a ``ledger`` (which the polish also feeds), an iterate whose own pair misses the tolerance is
    replaced by the ledger's best primal and dual pair when that pair meets it, and the path stops there.

    The refinement identifies the rank from the iterate's singular values, which split into O(1) and
    O(mu) on the central path (threshold sqrt(mu s_1)), and hands the rank-r factors to the polish.
    """
    bmap, b = constraint.bmap, constraint.b
    clock = deadline if deadline is not None else Deadline(time_limit, start=start_time)

    def feasible_factors(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        Z = constraint.project_accurately((Z + Z.mT) / 2 if symmetric else Z)
        return nuclear_prox(Z, 0.0, symmetric=symmetric)

    def certify(Z: torch.Tensor, y: torch.Tensor) -> Candidate:
        U, s, V = feasible_factors(Z)
        candidate = dense_candidate(
            U=U,
            s=s,
            V=V,
            multiplier=y,
            dual_matrix=bmap.adjoint(y),
            dual_objective=float(y @ b),
            primal_residual=constraint.residual((U * s) @ V.mT),
            scale=scale,
            symmetric=symmetric,
            tolerance=tolerance,
            source="interior-point",
        )
        if ledger is None:
            return candidate
        ledger.observe(candidate)
        pair = ledger.combined(symmetric=symmetric)
        if not candidate.certificate.satisfied and pair is not None and pair.certificate.satisfied:
            return pair
        return candidate

    def refine(Z: torch.Tensor, y: torch.Tensor, mu: float) -> Candidate | None:
        U, s, V = feasible_factors(Z)
        if s.numel() == 0:
            return None
        order = s.argsort(descending=True)
        U, s, V = U[:, order], s[order], V[:, order]
        # the central-path split sqrt(mu s_1), then the largest gaps s_r / s_(r+1) (degenerate solutions
        # have singular values far below s_1 but above mu, which blur the split)
        ranks = [int((s > (mu * float(s[0])) ** 0.5).sum())]
        ratios = s[:-1] / s[1:].clamp_min(torch.finfo(s.dtype).tiny)
        ranks += [int(i) + 1 for i in ratios.argsort(descending=True)[:REFINE_RANKS]]
        G = bmap.adjoint(y)
        best: Candidate | None = None
        for r in dict.fromkeys(rank for rank in ranks if rank > 0):
            if best is not None and clock.expired():
                break
            best = better(best, polish(U[:, :r], s[:r], V[:, :r], G))
            if best is not None and best.certificate.satisfied:
                break
        return best

    outcome = interior_point(
        bmap,
        b,
        certify=certify,
        refine=refine,
        max_iterations=min(IPM_MAX_ITERATIONS, max_iterations or IPM_MAX_ITERATIONS),
        time_limit=time_limit,
        start_time=start_time,
        deadline=clock,
    )
    return outcome
