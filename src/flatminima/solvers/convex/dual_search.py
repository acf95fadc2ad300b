"""Dual search along the face: a multiplier whose part of B^*(lambda) off the tangent space has norm < 1.

A rank-r point Z = U diag(s) V^T of min ||Z||_* s.t. B(Z) = b is optimal, certified by lambda, when

    P_T(B^*(lambda)) = U V^T      and      ||W(lambda)||_op <= 1,    W(lambda) = P_T-perp(B^*(lambda))

(the subgradient of the nuclear norm; Recht, Fazel, Parrilo 2010, Section 3). With J the Jacobian of the
tangent map (:class:`~.polish.TangentSystem`, J^T lambda = the tangent part of B^*(lambda)), the first
condition is the affine set lambda_c + null(J^T). Its least-norm point (:func:`~.polish.corrected_multiplier`)
is the usual certificate, but near the phase transition it can have ||W|| > 1 while another point of
the set certifies: the dual solution set is then large and its least-norm point sits outside the
spectral-norm ball. This module searches the set for a certifying point:

    min_nu  phi(nu) = (1/2) sum_i (sigma_i(W(lambda_c + P nu)) - tau)_+^2,     P = I - J (J^T J)^+ J^T,

with tau = 1 - :data:`MARGIN`. phi is convex and continuously differentiable (a convex, differentiable,
absolutely symmetric function of the singular values of a linear function of nu; Lewis 1996), it
vanishes exactly where ||W|| <= tau, and its gradient needs only the singular triplets above tau:

    grad phi = P B(Gamma),       Gamma = sum_{sigma_i > tau} (sigma_i - tau) u_i v_i^T

(u_i, v_i lie in T-perp, so P_T-perp(Gamma) = Gamma). L-BFGS minimizes it (strong-Wolfe line search)
until phi = 0, the budget ends, or phi stops halving over :data:`STAGNATION_WINDOW` iterations (no
certifying multiplier with the margin: phi creeps towards a positive minimum). The result is only a
candidate multiplier: the caller certifies it as any other (a satisfied certificate is a proof whatever
produced it).

W is formed densely (one B^*(lambda) and one SVD per evaluation), so the search runs for max(d1, d2)
up to :data:`DENSE_LIMIT` (a 1000 x 1000 SVD takes about a second on two cores); above that it returns None.

References:
    Recht, Fazel, Parrilo. Guaranteed minimum-rank solutions of linear matrix equations via nuclear norm
    minimization (SIAM Review 2010). Lewis. Convex analysis on the Hermitian matrices (SIAM J. Optim.
    1996; derivatives of spectral functions). Amelunxen, Lotz, McCoy, Tropp. Living on the edge (2014;
    the dual certificate at the phase transition).
"""

from __future__ import annotations

import math

import torch

from flatminima.numerics.lbfgs import minimize_lbfgs
from flatminima.solvers._deadline import NO_DEADLINE, Deadline
from flatminima.solvers.convex.linear_map import ScaledMap
from flatminima.solvers.convex.polish import TangentSystem

#: the search aims at ||W||_op <= 1 - MARGIN (a certificate with room for rounding).
MARGIN = 1e-3
#: largest max(d1, d2) for which W is formed and decomposed densely.
DENSE_LIMIT = 1500
#: L-BFGS iterations at most.
MAX_ITERATIONS = 200
#: the search gives up when the best value has not halved over this many iterations.
STAGNATION_WINDOW = 10


def off_tangent(G: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """P_T-perp(G) = (I - U U^T) G (I - V V^T)."""
    G = G - U @ (U.mT @ G)
    return G - (G @ V) @ V.mT


class _Progress:
    """The deadline of the search, which also expires once the best value stops halving.

    Where a certifying multiplier exists with the margin, phi reaches exactly 0 (its zero set has an
    interior) after a few to a few dozen L-BFGS steps, each shrinking phi fast; where none exists (the
    point is not optimal) phi creeps towards a positive minimum. The stop is tested once per iteration.
    """

    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        self.best = math.inf
        self.history: list[float] = []

    def record(self, value: float) -> None:
        self.best = min(self.best, value)

    def expired(self) -> bool:
        self.history.append(self.best)
        if len(self.history) > STAGNATION_WINDOW and self.best > 0.5 * self.history[-1 - STAGNATION_WINDOW]:
            return True
        return self.deadline.expired()


def search_dual(
    bmap: ScaledMap,
    system: TangentSystem,
    lam: torch.Tensor,
    *,
    max_iterations: int = MAX_ITERATIONS,
    deadline: Deadline = NO_DEADLINE,
) -> torch.Tensor | None:
    """A multiplier lambda + P nu of the face with ||W|| as far below 1 as the search gets; see the module.

    Args:
        bmap: the scaled map B.
        system: the tangent system J at the point's U, V.
        lam: a multiplier on the face (P_T(B^*(lambda)) = U V^T to the accuracy wanted).
        max_iterations: L-BFGS iterations at most.
        deadline: tested before each L-BFGS iteration.

    Returns:
        The best multiplier found (lambda itself if it already has ||W|| <= 1 - MARGIN), or None when
        max(d1, d2) > DENSE_LIMIT or an evaluation is not finite.
    """
    if max(bmap.shape) > DENSE_LIMIT:
        return None
    U, V = system.U, system.V
    tau = 1.0 - MARGIN

    def project(nu: torch.Tensor) -> torch.Tensor:
        """P nu: nu minus its least-squares component in range(J)."""
        return nu - system.matvec(system.solve_normal(system.rmatvec(nu), deadline=deadline))

    def fun(nu: torch.Tensor) -> tuple[float, torch.Tensor]:
        W = off_tangent(bmap.adjoint(lam + project(nu)), U, V)
        left, sigma, right_h = torch.linalg.svd(W, full_matrices=False)
        excess = (sigma - tau).clamp_min(0.0)
        active = int((excess > 0).sum())
        value = 0.5 * float(excess[:active].square().sum())
        progress.record(value)
        if active == 0:
            return value, torch.zeros_like(nu)
        gamma_left = left[:, :active] * excess[:active]
        gradient = project(bmap.apply_factored(gamma_left, right_h[:active].mT))
        return value, gradient

    progress = _Progress(deadline)
    outcome = minimize_lbfgs(
        fun, torch.zeros_like(lam), gradient_tolerance=0.0, max_iterations=max_iterations, deadline=progress
    )
    if outcome.iterations == 0 and outcome.value == 0.0:
        return lam  # it already certifies with the margin
    candidate = lam + project(outcome.x)
    return candidate if bool(torch.isfinite(candidate).all()) else None
