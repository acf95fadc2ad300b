"""Newton's method on the KKT system of the factored problem (small problems, any regime).

With Z = L R^T and the variational form of the nuclear norm, min ||Z||_* s.t. B(Z) = b at rank r is

    min (1/2)(||L||_F^2 + ||R||_F^2)  s.t.  B(L R^T) = b,

whose Lagrangian (1/2)(||L||^2 + ||R||^2) - <lambda, B(L R^T) - b> has the KKT conditions
L = G R, R = G^T L, B(L R^T) = b with G = B^*(lambda). Newton's method solves the symmetric system

    [ H      -J^T   C^T ] [dx]     [ -(L - G R, R - G^T L) ]
    [ -J      0      0  ] [dl]  =  [  B(L R^T) - b         ]
    [ C       0      0  ] [mu]     [  0                    ]

with H = [[I, -G (x) I_r], [-G^T (x) I_r, I]] the Hessian of the Lagrangian, J the Jacobian of
(L, R) -> B(L R^T) and C the r(r-1)/2 gauge rows skew(L^T dL + R^T dR) = 0 that remove the invariance
(L, R) -> (L Q, R Q), Q orthogonal. Unlike feasibility-only Gauss-Newton it uses the objective, so it
also converges where the rank-r feasible set is not locally unique (e.g. below the recovery threshold),
whenever second-order sufficiency holds. Dense linear algebra: for (d1 + d2) r + m up to a few
thousand.

The noisy relaxation min ||Z||_* s.t. ||B(Z) - b|| <= eps (active ball, lambda != 0) has the same
stationarity rows; its constraint row becomes B(L R^T) - b + eps lambda / ||lambda|| = 0 (the residual is
antiparallel to the multiplier and has length eps), whose derivative in lambda,
(eps / ||lambda||)(I - lambda lambda^T / ||lambda||^2), fills the (lambda, lambda) block of the matrix.

References:
    Nocedal and Wright. Numerical Optimization (2006), Chapter 18 (Newton-KKT / SQP).
    Burer and Monteiro. A nonlinear programming algorithm for solving semidefinite programs via
    low-rank factorization (Math. Program. 2003).
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing

import torch

from flatminima.solvers._deadline import NO_DEADLINE, Deadline
from flatminima.solvers.convex.linear_map import ScaledMap
from flatminima.solvers.convex.structured import factor_svd

#: above this many unknowns (n + m) the dense KKT Newton step is skipped.
KKT_SIZE_LIMIT = 6000
#: halvings of a Newton step at most before the iteration stops (no decrease of the KKT residual).
BACKTRACKS = 12
#: steps in a row that may fail to halve the KKT residual before the iteration stops.
SLOW_STEPS = 2

#: seconds per (system size)^3 of the last Newton-KKT step of this process, to predict the first step of
#: a time-limited polish (a dense solve of a few thousand unknowns can take longer than the whole limit).
_SECONDS_PER_CUBE = [0.0]


@dataclasses.dataclass(frozen=True)
class NewtonOutcome:
    """Balanced factors and multiplier after Newton-KKT, with the KKT residual history."""

    U: torch.Tensor
    s: torch.Tensor
    V: torch.Tensor
    multiplier: torch.Tensor
    residuals: tuple[float, ...]


def kkt_newton(
    bmap: ScaledMap,
    b: torch.Tensor,
    U: torch.Tensor,
    s: torch.Tensor,
    V: torch.Tensor,
    lam: torch.Tensor,
    *,
    eps: float | None = None,
    max_steps: int = 15,
    deadline: Deadline = NO_DEADLINE,
) -> NewtonOutcome | None:
    """Newton-KKT iterations from Z = U diag(s) V^T and multiplier lambda; None if the system is too big.

    ``eps``: the radius of the ball constraint ||B(Z) - b|| <= eps (None or 0: the equality B(Z) = b);
    the ball must be active at the solution (lambda != 0). None as well when the first step would end
    past ``deadline`` (predicted from the last step this process took, scaled by the cube of the system
    size); later steps are skipped once the previous step's duration would carry the next one past it
    (each step is a dense solve of size (d1 + d2) r + m, the expensive part of a polish).
    """
    d1, d2 = bmap.shape
    r = int(s.numel())
    m = bmap.num_measurements
    n = (d1 + d2) * r
    ball = eps is not None and eps > 0
    if r == 0 or n + m > KKT_SIZE_LIMIT or (ball and float(torch.linalg.vector_norm(lam)) == 0.0):
        return None
    size = n + m + r * (r - 1) // 2
    step_cost = _SECONDS_PER_CUBE[0] * size**3
    if not deadline.allows(step_cost):
        return None
    root = s.sqrt()
    L, R = U * root, V * root
    pairs = [(i, j) for i in range(r) for j in range(i + 1, r)]
    pair_index = torch.tensor(pairs, dtype=torch.long, device=b.device).reshape(-1, 2).unbind(1)
    eye_r = torch.eye(r, dtype=b.dtype, device=b.device)
    residuals: list[float] = []
    best = (L, R, lam)

    def kkt_residual(
        L: torch.Tensor, R: torch.Tensor, lam: torch.Tensor
    ) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The KKT residual's norm and parts (G, grad_L, grad_R, constraint, lambda's direction)."""
        G = bmap.adjoint(lam)
        grad_L = L - G @ R
        grad_R = R - G.mT @ L
        constraint = bmap.apply_factored(L, R) - b
        direction = lam
        if ball:
            lam_norm = float(torch.linalg.vector_norm(lam))
            if not lam_norm > 0.0:
                return None
            direction = lam / lam_norm
            constraint = constraint + typing.cast(float, eps) * direction
        norm = math.sqrt(float(grad_L.square().sum() + grad_R.square().sum() + constraint.square().sum()))
        return norm, G, grad_L, grad_R, constraint, direction

    parts = kkt_residual(L, R, lam)
    slow = 0  # consecutive steps that did not halve the residual
    for _ in range(max_steps + 1):
        if parts is None:
            break
        norm, G, grad_L, grad_R, constraint, direction = parts
        lam_norm = float(torch.linalg.vector_norm(lam))
        residuals.append(norm)
        if not norm < min(residuals[:-1], default=math.inf):
            break
        slow = slow + 1 if len(residuals) > 1 and norm > 0.5 * residuals[-2] else 0
        if slow > SLOW_STEPS:
            break  # not in Newton's quadratic regime (a singular or wrong-rank system): each step is dense
        best = (L, R, lam)
        if len(residuals) > max_steps or norm <= 1e-15 * max(1.0, float(torch.linalg.vector_norm(b))):
            break
        if not deadline.allows(step_cost):
            break
        clock = time.perf_counter()
        rows_R, rows_L = bmap.tangent_rows(L, R)  # B_l^T L (m, d2, r) and B_l R (m, d1, r)
        J = torch.cat([rows_L.reshape(m, -1), rows_R.reshape(m, -1)], dim=1)
        H = torch.eye(n, dtype=b.dtype, device=b.device)
        coupling = torch.kron(G, eye_r)
        H[: d1 * r, d1 * r :] = -coupling
        H[d1 * r :, : d1 * r] = -coupling.mT
        g = len(pairs)
        K = torch.zeros(n + m + g, n + m + g, dtype=b.dtype, device=b.device)
        K[:n, :n] = H
        K[:n, n : n + m] = -J.mT
        K[n : n + m, :n] = -J
        if ball:
            curvature = (typing.cast(float, eps) / lam_norm) * (
                torch.eye(m, dtype=b.dtype, device=b.device) - torch.outer(direction, direction)
            )
            K[n : n + m, n : n + m] = -curvature
        if g:
            # gauge row of the pair (i, j): vec(L E_ij, R E_ij) with E_ij = e_i e_j^T - e_j e_i^T, i.e.
            # column j holds column i of L (R) and column i holds minus column j
            first, second = pair_index
            rows = torch.zeros(g, d1 + d2, r, dtype=b.dtype, device=b.device)
            LR = torch.cat([L, R])
            rows[torch.arange(g), :, second] = LR[:, first].mT
            rows[torch.arange(g), :, first] = -LR[:, second].mT
            gauge = torch.cat([rows[:, :d1].reshape(g, -1), rows[:, d1:].reshape(g, -1)], dim=1)
            K[n + m :, :n] = gauge
            K[:n, n + m :] = gauge.mT
        rhs = torch.cat([-grad_L.reshape(-1), -grad_R.reshape(-1), constraint, b.new_zeros(g)])
        solution, info = torch.linalg.solve_ex(K, rhs)
        if int(info) != 0 or not bool(torch.isfinite(solution).all()):
            break
        dL, dR, dlam = (
            solution[: d1 * r].reshape(d1, r),
            solution[d1 * r : n].reshape(d2, r),
            solution[n : n + m],
        )
        # backtracking on the residual's norm: far from the solution, or where the rank-r manifold's
        # curvature (1 / s_r) is large, the full step can overshoot; near it the full step is taken
        step, trial = 1.0, None
        for _ in range(BACKTRACKS):
            trial = kkt_residual(L + step * dL, R + step * dR, lam + step * dlam)
            if trial is not None and trial[0] < norm:
                break
            step /= 2
        if trial is None or not trial[0] < norm:
            residuals.append(math.inf if trial is None else trial[0])
            break
        L, R, lam, parts = L + step * dL, R + step * dR, lam + step * dlam, trial
        step_cost = time.perf_counter() - clock
        _SECONDS_PER_CUBE[0] = step_cost / size**3
    L, R, lam = best
    U_new, s_new, V_new = factor_svd(L, R)
    return NewtonOutcome(U_new, s_new, V_new, lam, tuple(residuals))
