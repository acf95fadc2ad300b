"""Face correction of a dual point of min ||Z||_* s.t. B(Z) = b: the top block of B^*(lambda) made exactly I.

At a solution Z* = U diag(s) V^T of rank k with multiplier lambda*, the dual matrix G* = B^*(lambda*) has
its k largest singular values equal to 1, with singular vectors U and V (the subgradient condition
G* = U V^T + W, ||W||_op <= 1). Near the end of an interior-point path those k singular values sit within
rounding of 1 on either side (1 +- 1e-9 is typical), and a multiplier whose G exceeds 1 in norm bounds
the optimum only after scaling by 1 / ||G||_op, which costs the certificate that relative amount. On
degenerate instances (the dual solution set is not a point, the Schur complement of the path singular),
no iterate gets closer, and the certificate stalls a few multiples above 1e-9.

The correction moves lambda by the least-norm d that makes the k x k block exactly the identity in the
current singular bases U_k, V_k of G:

    min ||d||  s.t.  U_k^T B^*(d) V_k = I_k - U_k^T G V_k        (k^2 linear equations in m unknowns),

then repeats with the new bases (the equations are linear for fixed bases; two or three rounds reach
rounding). The other singular values of G move by O(||d||), so a strictly complementary dual
(sigma_(k+1)(G) < 1) stays feasible; the result is only a candidate: its bound <lambda', b> / max(1,
||B^*(lambda')||_op) is valid whatever happens (weak duality, :class:`~.certificate.BoundLedger`), and
the ledger keeps it only if it is better. The rank k is not known exactly: :func:`face_ranks` proposes the
sizes at which 1 - sigma_i(G) jumps by the most decades.

References:
    Recht, Fazel, Parrilo. Guaranteed minimum-rank solutions of linear matrix equations via nuclear norm
    minimization (SIAM Review 2010), Section 3 (the subgradient of the nuclear norm).
    Alizadeh, Haeberly, Overton. Complementarity and nondegeneracy in semidefinite programming (Math.
    Program. 1997) (strict complementarity; degenerate duals).
"""

from __future__ import annotations

import math

import torch

from flatminima.solvers._deadline import NO_DEADLINE, Deadline
from flatminima.solvers.convex.admm import nuclear_prox
from flatminima.solvers.convex.certificate import BoundLedger, dense_candidate
from flatminima.solvers.convex.constraints import AffineSet
from flatminima.solvers.convex.linear_map import ScaledMap
from flatminima.solvers.convex.polish import gauss_newton

#: rounds of the least-norm correction (each re-reads the singular bases of the corrected G).
CORRECTION_ROUNDS = 3
#: ranks tried at most, at the largest jumps of -log10(1 - sigma_i(G)).
FACE_RANKS = 3


def face_ranks(singular_values: torch.Tensor, *, limit: int = FACE_RANKS) -> list[int]:
    """Candidate face sizes k: where -log10(1 - sigma_i) drops the most from i = k to k + 1.

    Only singular values above 1/2 are read (the face sits at 1); sizes are returned by decreasing drop.

    Example:
        >>> face_ranks(torch.tensor([1 - 1e-10, 1 - 1e-9, 1 - 1e-4, 0.9]), limit=1)
        [2]
    """
    sigma = singular_values[singular_values > 0.5]
    if sigma.numel() == 0:
        return []
    decades = -torch.log10((1.0 - sigma).clamp_min(1e-16))
    decades = torch.cat([decades, decades.new_zeros(1)])  # the first value below 1/2 closes the face
    drops = decades[:-1] - decades[1:]
    order = drops.argsort(descending=True)[:limit]
    return [int(i) + 1 for i in order if float(drops[i]) > 0.0]


def face_corrected_multiplier(
    bmap: ScaledMap, lam: torch.Tensor, rank: int, *, rounds: int = CORRECTION_ROUNDS
) -> torch.Tensor | None:
    """The multiplier moved by least-norm steps until B^*(lambda)'s top ``rank`` block is I (None: no rank).

    Each round: U_k, V_k from the SVD of G = B^*(lambda), the k^2 rows U_k^T B_l V_k, and the least-norm
    solution of the block equation (``torch.linalg.lstsq`` with the SVD driver, so rank-deficient rows
    are handled).
    """
    d1, d2 = bmap.shape
    if not 0 < rank <= min(d1, d2):
        return None
    eye = torch.eye(rank, dtype=lam.dtype, device=lam.device)
    for _ in range(rounds):
        G = bmap.adjoint(lam)
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        U_k, V_k = U[:, :rank], Vh[:rank].mT
        _, right = bmap.tangent_rows(U_k, V_k)  # B_l V_k, shape (m, d1, k)
        rows = (U_k.mT @ right).reshape(lam.numel(), rank * rank)  # vec(U_k^T B_l V_k) per l
        target = (eye - U_k.mT @ G @ V_k).reshape(-1, 1)
        step = torch.linalg.lstsq(rows.mT.cpu(), target.cpu(), driver="gelsd").solution.squeeze(-1)
        if not bool(torch.isfinite(step).all()):
            return None
        lam = lam + step.to(lam.device)
        if float(torch.linalg.vector_norm(step)) <= 4 * torch.finfo(lam.dtype).eps * max(
            1.0, float(torch.linalg.vector_norm(lam))
        ):
            break
    return lam if math.isfinite(float(torch.linalg.vector_norm(lam))) else None


def observe_face_pairs(
    ledger: BoundLedger,
    constraint: AffineSet,
    multipliers: list[torch.Tensor | None],
    *,
    symmetric: bool,
    deadline: Deadline = NO_DEADLINE,
) -> None:
    """Face-corrected duals and rank-k feasible primals at each candidate rank, shown to ``ledger``.

    For each multiplier and each rank k of :func:`face_ranks`: the face-corrected multiplier, and the
    ledger's best feasible point truncated to its k largest singular values and brought back to B(Z) = b
    by Gauss-Newton on the rank-k manifold (least-norm steps; the truncation drops the O(mu) tail of an
    interior-point iterate, whose nuclear norm is part of the gap) then projected exactly. The pair is
    observed as one candidate; the ledger keeps whichever half improves its bounds.
    """
    primal = ledger.primal
    if primal is None:
        return
    bmap, b = constraint.bmap, constraint.b
    order = primal.s.argsort(descending=True)
    U, s, V = primal.U[:, order], primal.s[order], primal.V[:, order]
    truncated: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for lam in multipliers:
        if lam is None:
            continue
        for rank in face_ranks(torch.linalg.svdvals(bmap.adjoint(lam))):
            if deadline.expired():
                return
            corrected = face_corrected_multiplier(bmap, lam, rank)
            if corrected is None:
                continue
            if rank not in truncated and rank <= s.numel():
                outcome = gauss_newton(
                    bmap, b, U[:, :rank], s[:rank], V[:, :rank], symmetric=symmetric, deadline=deadline
                )
                Z = (outcome.U * outcome.s) @ outcome.V.mT
                Z = constraint.project_accurately((Z + Z.mT) / 2 if symmetric else Z)
                truncated[rank] = nuclear_prox(Z, 0.0, symmetric=symmetric)
            U_k, s_k, V_k = truncated.get(rank, (U, s, V))
            ledger.observe(
                dense_candidate(
                    U=U_k,
                    s=s_k,
                    V=V_k,
                    multiplier=corrected,
                    dual_matrix=bmap.adjoint(corrected),
                    dual_objective=float(corrected @ b),
                    primal_residual=constraint.residual((U_k * s_k) @ V_k.mT),
                    scale=ledger.scale,
                    symmetric=symmetric,
                    tolerance=ledger.tolerance,
                    source=f"rank-{rank} face pair",
                )
            )
