"""Polish of a rank-identified solution: Gauss-Newton on the fixed-rank manifold + multiplier correction.

Once a first-order method has identified the rank r of the solution of min ||Z||_* s.t. B(Z) = b, the
solution is the rank-r matrix with B(Z) = b and P_T(B^*(lambda)) = U V^T (T the tangent space at
Z = U S V^T). Both conditions are solved to machine precision here:

1. Feasibility by Riemannian Gauss-Newton: tangent vectors xi = U Y1^T + (I - U U^T) Y2 V^T are
   parametrized isometrically by x = (Y1, Y2); the Jacobian is J x = B(xi), J^T y =
   (B^*(y)^T U, (I - U U^T) B^*(y) V). Each step solves min ||J x - (b - B(Z))|| (dense normal equations
   with an eigen pseudo-inverse for small problems, conjugate gradients otherwise) and retracts by a
   truncated SVD of the rank-2r matrix Z + xi, formed in factored form. Quadratic convergence for
   consistent systems where B is injective on T.
2. The multiplier: lambda = lambda0 + J w with J^T J w = t - J^T lambda0, t = (V, 0), the smallest change
   of lambda0 that satisfies P_T(B^*(lambda)) = U V^T exactly (lambda0 = 0 gives the least-squares dual
   certificate of Candès and Recht).

The certificate (||W||_op <= 1 for W = P_T-perp(B^*(lambda))) is checked by the caller.

References:
    Candès and Recht. Exact matrix completion via convex optimization (2009), Section 3.
    Absil, Mahony, Sepulchre. Optimization Algorithms on Matrix Manifolds (2008), Section 8.4.
    Vandereycken. Low-rank matrix completion by Riemannian optimization (SIAM J. Optim. 2013).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch

from flatminima.solvers._deadline import NO_DEADLINE, Deadline
from flatminima.solvers.convex.linear_map import ScaledMap

#: above this many Jacobian entries, or this many unknowns, the matrix-free conjugate-gradient path is used.
DENSE_JACOBIAN_LIMIT = 20_000_000
DENSE_UNKNOWNS_LIMIT = 1500


class TangentSystem:
    """The Jacobian J of x = (Y1, Y2) -> B(U Y1^T + (I - U U^T) Y2 V^T), dense or matrix-free."""

    def __init__(self, bmap: ScaledMap, U: torch.Tensor, V: torch.Tensor, *, dense: bool | None = None):
        self.bmap, self.U, self.V = bmap, U, V
        d1, d2 = bmap.shape
        r = U.shape[-1]
        self.sizes = (d2 * r, d1 * r)
        n = (d1 + d2) * r
        if dense is None:  # entry masks: matrix-free products cost O(m r), cheaper than any dense Jacobian
            small = bmap.num_measurements * n <= DENSE_JACOBIAN_LIMIT and n <= DENSE_UNKNOWNS_LIMIT
            dense = small and not bmap.entry_mask
        self.dense = dense
        self._J: torch.Tensor | None = None
        self._pinv: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cholesky: torch.Tensor | None = None
        self._projections: tuple[torch.Tensor, torch.Tensor] | None = None
        if not dense and bmap.rank_one:
            # (a'_l^T U) and (c'_l^T V) are fixed along the solve: cache them (two passes saved per product)
            self._projections = (bmap._left_project(U), bmap._right_project(V))
        if dense:
            JU, JV = bmap.tangent_rows(U, V)
            JV = JV - U @ (U.mT @ JV)
            m = bmap.num_measurements
            self._J = torch.cat([JU.reshape(m, -1), JV.reshape(m, -1)], dim=1)
            N = self._J.mT @ self._J
            factor, info = torch.linalg.cholesky_ex(N)
            pivots = factor.diagonal()
            if int(info) == 0 and float(pivots.min()) > 1e-6 * float(pivots.max()):
                self._cholesky = factor  # well-conditioned: no pseudo-inverse needed
                return
            eigenvalues, Q = torch.linalg.eigh(N)
            floor = 1e-11 * float(eigenvalues.max().clamp_min(torch.finfo(N.dtype).tiny))
            inverse = torch.where(
                eigenvalues > floor, 1.0 / eigenvalues.clamp_min(floor), torch.zeros_like(eigenvalues)
            )
            self._pinv = (Q, inverse)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X -> (Y1 (d2, r), Y2 (d1, r)) with Y2 projected onto the complement of range(U)."""
        r = self.U.shape[-1]
        Y1 = x[: self.sizes[0]].reshape(-1, r)
        Y2 = x[self.sizes[0] :].reshape(-1, r)
        return Y1, Y2 - self.U @ (self.U.mT @ Y2)

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """J x."""
        if self._J is not None:
            return self._J @ x
        Y1, Y2 = self.split(x)
        if self._projections is not None:
            AU, CV = self._projections
            left = self.bmap._left_project(Y2)
            right = self.bmap._right_project(Y1)
            return (AU * right).sum(-1) + (left * CV).sum(-1)
        return self.bmap.apply_factored(torch.cat([self.U, Y2], dim=1), torch.cat([Y1, self.V], dim=1))

    def rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        """J^T y = (B^*(y)^T U, (I - U U^T) B^*(y) V), flattened."""
        if self._J is not None:
            return self._J.mT @ y
        if self._projections is not None:
            AU, CV = self._projections
            yc = y.unsqueeze(-1)
            first = self.bmap._right_back(yc * AU)  # B^*(y)^T U
            second = self.bmap._left_back(yc * CV)  # B^*(y) V
        else:
            first = self.bmap.adjoint_t_matmul(y, self.U)
            second = self.bmap.adjoint_matmul(y, self.V)
        second = second - self.U @ (self.U.mT @ second)
        return torch.cat([first.reshape(-1), second.reshape(-1)])

    def solve_normal(
        self,
        rhs: torch.Tensor,
        *,
        tolerance: float = 1e-11,
        max_iterations: int = 500,
        deadline: Deadline = NO_DEADLINE,
    ) -> torch.Tensor:
        """X = (J^T J)^+ rhs (dense pseudo-inverse, or conjugate gradients from 0 until ``deadline``)."""
        if self._cholesky is not None:
            return torch.cholesky_solve(rhs.unsqueeze(-1), self._cholesky).squeeze(-1)
        if self._pinv is not None:
            Q, inverse = self._pinv
            return Q @ (inverse * (Q.mT @ rhs))
        return conjugate_gradient(
            lambda x: self.rmatvec(self.matvec(x)),
            rhs,
            tolerance=tolerance,
            max_iterations=max_iterations,
            deadline=deadline,
        )


def conjugate_gradient(
    apply: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    *,
    tolerance: float,
    max_iterations: int,
    deadline: Deadline = NO_DEADLINE,
) -> torch.Tensor:
    """Conjugate gradients for a symmetric PSD operator, from x = 0, to ||residual|| <= tol ||rhs||.

    Returns the iterate with the smallest recursive residual: once rounding stalls the true residual,
    further steps can lose conjugacy and diverge, so the loop also stops when the residual has grown
    a hundredfold above its minimum. It also stops (with the best iterate so far) once ``deadline``
    has passed.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = float(r @ r)
    target = tolerance**2 * rr
    best_x, best_rr = x, rr
    for _ in range(max_iterations):
        if rr <= target or rr == 0.0 or rr > 1e4 * best_rr or deadline.expired():
            break
        Ap = apply(p)
        curvature = float(p @ Ap)
        if not curvature > 0.0:
            break
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        if rr < best_rr:
            best_x, best_rr = x, rr
    return best_x


def retract(
    U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, Y1: torch.Tensor, Y2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-r truncated SVD of U S V^T + U Y1^T + Y2 V^T, computed in factored form (QR + small SVD)."""
    r = s.numel()
    P = torch.cat([U, Y2], dim=1)
    Q = torch.cat([V * s + Y1, V], dim=1)
    Qp, Rp = torch.linalg.qr(P)
    Qq, Rq = torch.linalg.qr(Q)
    Uc, sc, Vch = torch.linalg.svd(Rp @ Rq.mT)
    return Qp @ Uc[:, :r], sc[:r], Qq @ Vch.mT[:, :r]


def symmetrize(
    U: torch.Tensor, s: torch.Tensor, V: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best rank-r approximation of sym(U S V^T), as (Q, |lambda|, Q sign(lambda))."""
    r = s.numel()
    basis, coefficients = torch.linalg.qr(torch.cat([U, V], dim=1))
    Ru, Rv = coefficients[:, :r], coefficients[:, r:]
    core = (Ru * s) @ Rv.mT
    eigenvalues, Qc = torch.linalg.eigh((core + core.mT) / 2)
    keep = eigenvalues.abs().argsort(descending=True)[:r]
    Q = basis @ Qc[:, keep]
    values = eigenvalues[keep]
    return Q, values.abs(), Q * values.sign()


@dataclasses.dataclass(frozen=True)
class PolishOutcome:
    """Factors after Gauss-Newton, the residual history, and the final tangent system."""

    U: torch.Tensor
    s: torch.Tensor
    V: torch.Tensor
    residuals: tuple[float, ...]
    system: TangentSystem


def gauss_newton(
    bmap: ScaledMap,
    b: torch.Tensor,
    U: torch.Tensor,
    s: torch.Tensor,
    V: torch.Tensor,
    *,
    symmetric: bool,
    max_steps: int = 12,
    dense: bool | None = None,
    target: float | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> PolishOutcome:
    """Riemannian Gauss-Newton for B(Z) = b on the rank-r manifold, from Z = U diag(s) V^T.

    Stops once ||B(Z) - b|| <= ``target`` (default: round-off, max(4 eps, 1e-13) ||b||). Each step is an
    inexact Newton step whose conjugate-gradient forcing term eta is min(0.1, ||res|| / ||b||) (quadratic
    convergence) but never tighter than 0.1 target / ||res||: the last step only needs to bring the
    residual below the target, not to round-off (Dembo, Eisenstat, Steihaug, SIAM J. Numer. Anal. 1982).
    No step starts once ``deadline`` has passed or when the previous step's duration would carry the
    next one past it.
    """
    scale = float(torch.linalg.vector_norm(b))
    eps = torch.finfo(b.dtype).eps
    floor = max(4 * eps, 1e-13) * scale
    target = floor if target is None else max(target, floor)
    residuals: list[float] = []
    clock = time.perf_counter()
    system = TangentSystem(bmap, U, V, dense=dense)
    step_cost = time.perf_counter() - clock  # a step costs about one tangent system and its solve
    best = (U, s, V, system)
    for _ in range(max_steps + 1):
        residual = b - bmap.apply_factored(U * s, V)
        norm = float(torch.linalg.vector_norm(residual))
        residuals.append(norm)
        if not norm < 0.5 * min(residuals[:-1], default=2 * norm + 1.0):
            break  # no sufficient decrease (or NaN): keep the best iterate
        best = (U, s, V, system)
        if norm <= target or len(residuals) > max_steps or not deadline.allows(step_cost):
            break
        clock = time.perf_counter()
        # inexact Newton: a forcing term proportional to the residual keeps quadratic convergence
        forcing = min(0.1, max(norm / max(scale, 1e-300), 0.1 * target / norm))
        x = system.solve_normal(system.rmatvec(residual), tolerance=max(forcing, 1e-11), deadline=deadline)
        Y1, Y2 = system.split(x)
        U_new, s_new, V_new = retract(U, s, V, Y1, Y2)
        if symmetric:
            U_new, s_new, V_new = symmetrize(U_new, s_new, V_new)
        if bool(s_new.isnan().any()):
            break
        U, s, V = U_new, s_new, V_new
        system = TangentSystem(bmap, U, V, dense=dense)
        step_cost = time.perf_counter() - clock
    U, s, V, system = best
    return PolishOutcome(U, s, V, tuple(residuals), system)


def corrected_multiplier(
    system: TangentSystem,
    lam0: torch.Tensor | None,
    *,
    accuracy: float = 1e-12,
    deadline: Deadline = NO_DEADLINE,
) -> torch.Tensor:
    """Return lambda = lambda0 + J w with J^T lambda = (V, 0) up to ``accuracy`` ||U V^T||_F.

    This is the smallest change of lambda0 with P_T(B^*(lambda)) = U V^T (lambda0 = None: from zero). The
    conjugate-gradient residual of J^T J w = (V, 0) - J^T lambda0 is exactly the tangent residual
    ||J^T lambda - (V, 0)|| of the certificate, so ``accuracy`` bounds it directly.
    """
    target = torch.cat([system.V.reshape(-1), torch.zeros_like(system.U).reshape(-1)])
    rhs = target if lam0 is None else target - system.rmatvec(lam0)
    # accuracy relative to the target (||U V^T||_F = sqrt(r)), not to the (possibly small) correction
    ratio = float(torch.linalg.vector_norm(target)) / max(float(torch.linalg.vector_norm(rhs)), 1e-300)
    w = system.solve_normal(rhs, tolerance=min(1e-2, max(accuracy * ratio, 1e-14)), deadline=deadline)
    return system.matvec(w) if lam0 is None else lam0 + system.matvec(w)
