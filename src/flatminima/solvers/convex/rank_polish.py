"""The polish of rank-identified iterates of min ||Z||_* s.t. Z in C, for linear constraint sets.

ADMM and the interior-point method hand it factors U diag(s) V^T of an iterate whose rank r is believed
right and a subgradient estimate G; it returns the best certified candidate it reaches:

* B(Z) = b: Riemannian Gauss-Newton on the rank-r manifold for feasibility, then the corrected multiplier
  (:mod:`flatminima.solvers.convex.polish`), where the rank-r feasible set can be locally unique;
* both B(Z) = b and ||B(Z) - b|| <= eps: Newton on the KKT system of the factored problem
  (:mod:`flatminima.solvers.convex.newton`), which uses the objective as well.

References:
    Vandereycken (SIAM J. Optim. 2013); Nocedal and Wright, Numerical Optimization (2006), Chapter 18.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flatminima.solvers._deadline import NO_DEADLINE, Deadline
from flatminima.solvers.convex.admm import Polish
from flatminima.solvers.convex.certificate import Candidate, better, dense_candidate
from flatminima.solvers.convex.constraints import AffineSet, BallSet, ConstraintSet
from flatminima.solvers.convex.newton import kkt_newton
from flatminima.solvers.convex.polish import corrected_multiplier, gauss_newton, symmetrize


def make_polish(
    constraint: ConstraintSet,
    *,
    symmetric: bool,
    scale: float,
    tolerance: float,
    deadline: Deadline = NO_DEADLINE,
    observe: Callable[[Candidate], None] | None = None,
) -> Polish | None:
    """The polish of rank-identified ADMM iterates for a linear constraint set (None for robust PCA).

    Equality constraints: Gauss-Newton feasibility on the rank-r manifold + multiplier correction, then
    Newton-KKT. Ball constraints: Newton-KKT with the ball's constraint row (the residual of length eps,
    antiparallel to the multiplier); both reach round-off in a few steps once the rank is identified.
    Every stage is skipped once ``deadline`` has passed (the polish then returns what it has, or None).
    ``observe`` sees every candidate the polish certifies (a ``BoundLedger.observe``).
    """
    if not isinstance(constraint, AffineSet | BallSet):
        return None
    bmap, b = constraint.bmap, constraint.b
    eps = constraint.eps if isinstance(constraint, BallSet) else None

    def certify(
        U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, lam: torch.Tensor, source: str
    ) -> Candidate:
        residual = float(torch.linalg.vector_norm(bmap.apply_factored(U * s, V) - b))
        dual_value = float(lam @ b)
        if eps is not None:
            residual = max(0.0, residual - eps)
            dual_value -= eps * float(torch.linalg.vector_norm(lam))
        candidate = dense_candidate(
            U=U,
            s=s,
            V=V,
            multiplier=lam,
            dual_matrix=bmap.adjoint(lam),
            dual_objective=dual_value,
            primal_residual=residual,
            scale=scale,
            symmetric=symmetric,
            tolerance=tolerance,
            source=source,
        )
        if observe is not None:
            observe(candidate)
        return candidate

    def polish(U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, G: torch.Tensor) -> Candidate | None:
        lam_admm = constraint.dual(G)[0]
        best: Candidate | None = None
        d1, d2 = bmap.shape
        r = int(s.numel())
        # 1. feasibility by Gauss-Newton on the rank-r manifold, then the multiplier; only where the
        #    rank-r feasible set can be locally unique (dim T <= m)
        if deadline.expired():
            return None
        if eps is None and ((d1 + d2 - r) * r <= bmap.num_measurements or symmetric):
            outcome = gauss_newton(bmap, b, U, s, V, symmetric=symmetric, deadline=deadline)
            for start, source in ((lam_admm, "polish-gauss-newton"), (None, "polish-least-squares")):
                if best is not None and deadline.expired():
                    break
                lam = corrected_multiplier(outcome.system, start, deadline=deadline)
                best = better(best, certify(outcome.U, outcome.s, outcome.V, lam, source))
                if best is not None and best.certificate.satisfied:
                    return best
        # 2. Newton on the KKT system of the factored problem (uses the objective as well). A symmetric
        #    relaxation is solved as the general one, whose optimal set is closed under transposition
        #    (B(Z) = B(Z^T)) and so holds the symmetric solution, then symmetrized.
        if lam_admm is not None and not deadline.expired():
            newton = kkt_newton(bmap, b, U, s, V, lam_admm, eps=eps, deadline=deadline)
            if newton is not None:
                factors = (newton.U, newton.s, newton.V)
                if symmetric:
                    factors = symmetrize(*factors)
                best = better(best, certify(*factors, newton.multiplier, "polish-newton"))
        return best

    return polish
