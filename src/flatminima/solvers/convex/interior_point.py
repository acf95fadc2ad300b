"""A primal-dual interior-point method for min ||Z||_* s.t. B(Z) = b, through its semidefinite program.

The nuclear norm is the value of an SDP (Fazel 2002; Recht, Fazel, Parrilo 2010, Section 2):

    (P)  min <C, X>  s.t.  <A_l, X> = b_l (l = 1..m),  X = [[W1, Z], [Z^T, W2]] >= 0,
    (D)  max <y, b>  s.t.  S = C - sum_l y_l A_l >= 0,

with C = I / 2 and A_l = (1/2) [[0, B_l], [B_l^T, 0]], so that <A_l, X> = <B_l, Z> and
S = (1/2) [[I, -G], [-G^T, I]] with G = B^*(y); S >= 0 is ||G||_op <= 1. The dual multiplier y is the
multiplier lambda of the certificate, and the optimal Z is the off-diagonal block of X.

Unlike ADMM, whose linear rate degrades where strict complementarity nearly fails (near a phase
transition the solution has many tiny singular values and the rank is never identified), a path-following
method converges in a few dozen Newton steps whatever the rank structure. Each step is Mehrotra's
predictor-corrector with the HKM direction (Helmberg, Rendl, Vanderbei, Wolkowicz 1996; Kojima,
Shindoh, Hara 1997; Monteiro 1997): Delta X = sym((R_c - X Delta S) S^{-1}), Delta S = R_d - A^*(Delta y)
and the Schur complement system M Delta y = r_p - A(R_c S^{-1}) + A(X R_d S^{-1}) with
M_lk = <A_l, X A_k S^{-1}>. With T = S^{-1} in blocks,

    4 M_lk = <B_l, X11 B_k T22 + T11 B_k X22 + X12 B_k^T T12 + T12 B_k^T X12>,

formed for all k at once in O(m d1 d2 (d1 + d2) + m^2 d1 d2): dense linear algebra for d1 + d2 up to a few
hundred and m up to a few thousand.

The start is X = xi I (infeasible) and y = 0, S = C (dual feasible, so every dual iterate stays feasible).
The loop stops as soon as the caller's certificate of the current (Z, y) meets its tolerance, or when a
step can no longer make progress (rounding), and says which.

References:
    Recht, Fazel, Parrilo. Guaranteed minimum-rank solutions of linear matrix equations via nuclear
    norm minimization (SIAM Review 2010), Section 2. Helmberg, Rendl, Vanderbei, Wolkowicz. An
    interior-point method for semidefinite programming (SIAM J. Optim. 1996). Mehrotra. On the
    implementation of a primal-dual interior point method (SIAM J. Optim. 1992). Todd, Toh, Tütüncü. On
    the Nesterov-Todd direction in semidefinite programming (SIAM J. Optim. 1998), Section 5.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from collections.abc import Callable

import torch

from flatminima.operators import EntryMask
from flatminima.solvers._deadline import Deadline
from flatminima.solvers.convex.certificate import Candidate, better
from flatminima.solvers.convex.linear_map import ScaledMap
from flatminima.solvers.result import Status

#: the interior-point method is offered up to this many Schur complement entries m^2 ...
MAX_SCHUR_ENTRIES = 4000**2
#: ... and this many entries of the dense rows of B (m d1 d2).
MAX_DENSE_ROWS = 12_000_000
#: fraction of the step to the boundary of the cone.
STEP_FRACTION = 0.95

#: the caller's refinement is tried once the certificate's largest relative residual is below this.
REFINE_BELOW = 1e-5
#: ... and again each time the iterate's residual has fallen by this factor since the last try.
REFINE_GAIN = 0.1
#: the loop gives up when this many steps in a row have reduced neither the best residual nor mu tenfold.
STALL_STEPS = 6
#: rounds of iterative refinement of each Newton direction against the unreduced operator.
REFINEMENT_STEPS = 2

Certify = Callable[[torch.Tensor, torch.Tensor], Candidate]
Refine = Callable[[torch.Tensor, torch.Tensor, float], Candidate | None]


def interior_point_fits(bmap: ScaledMap) -> bool:
    """Whether the dense interior-point method is affordable for this map (memory and time)."""
    d1, d2 = bmap.shape
    m = bmap.num_measurements
    return m * m <= MAX_SCHUR_ENTRIES and m * d1 * d2 <= MAX_DENSE_ROWS


@dataclasses.dataclass(frozen=True)
class InteriorPointOutcome:
    """The best certified candidate, how the loop ended, and its history."""

    candidate: Candidate | None
    status: Status
    iterations: int
    history: tuple[dict[str, float], ...]
    message: str


def _sym(K: torch.Tensor) -> torch.Tensor:
    return (K + K.mT) / 2


def _step_to_boundary(X: torch.Tensor, dX: torch.Tensor) -> float:
    """The largest alpha with X + alpha dX >= 0 (X positive definite), inf if none bounds it."""
    factor, info = torch.linalg.cholesky_ex(X)
    if int(info) != 0:
        return 0.0
    W = torch.linalg.solve_triangular(factor, dX, upper=False)
    W = torch.linalg.solve_triangular(factor, W.mT, upper=False)
    try:
        smallest = float(torch.linalg.eigvalsh(_sym(W))[0])
    except torch.linalg.LinAlgError:  # non-finite or pathological direction: no step
        return 0.0
    return math.inf if smallest >= 0 else -1.0 / smallest


def _schur_complement_function(
    bmap: ScaledMap, rows: torch.Tensor
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(X, T = S^{-1}) -> M with 4 M_lk = <B_l, X11 B_k T22 + T11 B_k X22 + X12 B_k^T T12 + T12 B_k^T X12>.

    Dense rows: batched products, O(m d1 d2 (d1 + d2) + m^2 d1 d2). Entry masks B_k = w_k e_(i_k) e_(j_k)^T
    (matrix completion): every term is a product of gathered entries,
    4 M_lk = w_l w_k (X11[i_l, i_k] T22[j_k, j_l] + T11[i_l, i_k] X22[j_k, j_l] + X12[i_l, j_k] T12[i_k, j_l]
    + T12[i_l, j_k] X12[i_k, j_l]), in O(m^2).
    """
    m, d1, _ = rows.shape
    flat_rows = rows.reshape(m, -1)
    if bmap.entry_mask:
        operator = typing.cast(EntryMask, bmap.operator)
        i, j = operator.rows, operator.cols
        w = bmap._mask_weights(operator)
        weights = torch.outer(w, w) / 4

        def masked(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
            X11, X12, X22 = X[:d1, :d1], X[:d1, d1:], X[d1:, d1:]
            T11, T12, T22 = T[:d1, :d1], T[:d1, d1:], T[d1:, d1:]
            diagonal_blocks = X11[i][:, i] * T22[j][:, j].mT + T11[i][:, i] * X22[j][:, j].mT
            off_diagonal = X12[i][:, j] * T12[i][:, j].mT + T12[i][:, j] * X12[i][:, j].mT
            return _sym(weights * (diagonal_blocks + off_diagonal))

        return masked

    def dense(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        X11, X12, X22 = X[:d1, :d1], X[:d1, d1:], X[d1:, d1:]
        T11, T12, T22 = T[:d1, :d1], T[:d1, d1:], T[d1:, d1:]
        products = X11 @ rows @ T22 + T11 @ rows @ X22 + X12 @ rows.mT @ T12 + T12 @ rows.mT @ X12
        return _sym(flat_rows @ products.reshape(m, -1).mT) / 4

    return dense


def _schur_solver(M: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Solve M dy = rhs: Cholesky, or LU where rounding cost M its definiteness (near the end of the path)."""
    factor, info = torch.linalg.cholesky_ex(M)
    if int(info) == 0:
        return lambda rhs: torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
    lu, pivots = torch.linalg.lu_factor(M)
    return lambda rhs: torch.linalg.lu_solve(lu, pivots, rhs.unsqueeze(-1)).squeeze(-1)


def interior_point(
    bmap: ScaledMap,
    b: torch.Tensor,
    *,
    certify: Certify,
    refine: Refine | None = None,
    max_iterations: int = 80,
    time_limit: float | None = None,
    start_time: float | None = None,
    deadline: Deadline | None = None,
) -> InteriorPointOutcome:
    """Solve min ||Z||_* s.t. B(Z) = b by the SDP above; ``certify(Z, y)`` judges every iterate.

    Args:
        bmap: the map B (any structure; its dense rows are formed).
        b: right-hand side (m,).
        certify: (Z, y) -> certified candidate (the caller projects Z and checks the KKT residuals).
        refine: (Z, y, mu) -> a refined candidate or None, tried once the iterate is close: rounding
            limits a path-following method to a relative gap of about 1e-9, while the singular values of
            Z already separate into O(1) and O(mu), which identifies the rank for a Newton polish.
        max_iterations: Newton steps at most.
        time_limit: seconds from ``start_time`` (None: none).
        start_time: ``time.perf_counter()`` at the start of the solve.
        deadline: the solve's deadline (default: ``time_limit`` from ``start_time``); tested between the
            setup stages (dense rows, Gram factor, least-norm start), before each refinement and once per
            Newton step.

    Returns:
        The best candidate seen (CONVERGED iff its certificate met the tolerance) with the reason the loop
        ended in ``message``; no candidate (status TIME_LIMIT) if the deadline passed during the setup.
    """
    start_time = time.perf_counter() if start_time is None else start_time
    if deadline is None:
        deadline = Deadline(time_limit, start=start_time)
    out_of_time = InteriorPointOutcome(
        None, Status.TIME_LIMIT, 0, (), f"interior point: time limit {deadline.limit} s reached during setup"
    )
    if deadline.expired():
        return out_of_time
    d1, d2 = bmap.shape
    n = d1 + d2
    m = bmap.num_measurements
    dtype, device = b.dtype, b.device
    rows = bmap.dense_rows().reshape(m, d1, d2)
    flat_rows = rows.reshape(m, -1)
    schur_complement = _schur_complement_function(bmap, rows)
    if deadline.expired():
        return out_of_time
    eye = torch.eye(n, dtype=dtype, device=device)
    C = eye / 2

    def apply(K: torch.Tensor) -> torch.Tensor:  # A(K) = <B_l, sym(K)_12>
        return flat_rows @ ((K[:d1, d1:] + K[d1:, :d1].mT) / 2).reshape(-1)

    def adjoint(y: torch.Tensor) -> torch.Tensor:  # A^*(y) = (1/2) [[0, G], [G^T, 0]]
        G = (y @ flat_rows).reshape(d1, d2)
        out = torch.zeros(n, n, dtype=dtype, device=device)
        out[:d1, d1:] = G / 2
        out[d1:, :d1] = G.mT / 2
        return out

    gram_factor, info = torch.linalg.cholesky_ex(flat_rows @ flat_rows.mT)
    if int(info) != 0:
        gram_factor = None
    if deadline.expired():
        return out_of_time
    # a scale-aware start: xi ~ the size of the least-norm solution's singular values
    least_norm = torch.linalg.lstsq(flat_rows, b.unsqueeze(-1)).solution.reshape(d1, d2)
    xi = max(1.0, 2.0 * float(torch.linalg.matrix_norm(least_norm, ord=2)))
    X = xi * eye
    y = torch.zeros(m, dtype=dtype, device=device)
    S = C.clone()
    history: list[dict[str, float]] = []
    best: Candidate | None = None
    status, message = Status.MAX_ITERATIONS, f"interior point: reached max_iterations={max_iterations}"
    iteration = last_progress = 0
    last_level = last_mu = refined_at = math.inf
    closest: tuple[float, torch.Tensor, torch.Tensor, float] = (math.inf, b, b, math.inf)
    for iteration in range(1, max_iterations + 1):
        r_p = b - apply(X)
        R_d = C - S - adjoint(y)
        mu = float((X * S).sum()) / n
        candidate = certify(X[:d1, d1:], y)
        best = better(best, candidate)
        history.append(
            {
                "iteration": iteration,
                "mu": mu,
                "primal": float(torch.linalg.vector_norm(r_p)),
                "kkt": candidate.certificate.max_relative_residual,
            }
        )
        if candidate.certificate.satisfied:
            status, message = Status.CONVERGED, f"interior point: certified at iteration {iteration}"
            break
        residual = candidate.certificate.max_relative_residual
        if residual < closest[0]:  # the iterate nearest the solution so far, for a last refinement
            closest = (residual, X[:d1, d1:].clone(), y.clone(), mu)
        if (
            refine is not None
            and residual <= min(REFINE_BELOW, REFINE_GAIN * refined_at)
            and not deadline.expired()
        ):
            # the polish costs up to a few dense Newton-KKT solves: tried once per decade of progress
            refined_at = residual
            refined = refine(X[:d1, d1:], y, mu)
            best = better(best, refined)
            if refined is not None:
                history[-1]["refined_kkt"] = refined.certificate.max_relative_residual
                if refined.certificate.satisfied:
                    status = Status.CONVERGED
                    message = f"interior point + {refined.source}: certified at iteration {iteration}"
                    break
        level = typing.cast(Candidate, best).certificate.max_relative_residual
        # progress: the certified residual or the duality measure mu fell tenfold (early on, the
        # projected iterate's certificate can plateau while the path still converges)
        if level < 0.1 * last_level or mu < 0.1 * last_mu:
            last_level, last_mu, last_progress = min(level, last_level), mu, iteration
        elif iteration - last_progress >= STALL_STEPS:
            status = Status.INACCURATE
            message = (
                f"interior point: stalled at relative KKT residual {level:.2e} (rounding near the end of "
                f"the central path, mu = {mu:.1e}) at iteration {iteration}"
            )
            break
        if deadline.expired():
            status, message = Status.TIME_LIMIT, f"interior point: time limit {deadline.limit} s reached"
            break
        S_factor, info = torch.linalg.cholesky_ex(S)
        if int(info) != 0:
            status, message = Status.INACCURATE, "interior point: S lost definiteness to rounding"
            break
        T = torch.cholesky_inverse(S_factor)
        M = schur_complement(X, T)
        solve_schur = _schur_solver(M)
        XRdT = X @ R_d @ T

        def direction(R_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            rhs = r_p - apply(R_c @ T) + apply(XRdT)  # noqa: B023 (used within this iteration only)
            dy = solve_schur(rhs)  # noqa: B023
            dS = R_d - adjoint(dy)  # noqa: B023
            dX = _sym((R_c - X @ dS) @ T)  # noqa: B023
            for _ in range(REFINEMENT_STEPS):
                # iterative refinement against the operator itself (A(dX) is affine in dy with slope M):
                # the formed M carries rounding of order cond(M) eps near the end of the path
                dy = dy + solve_schur(r_p - apply(dX))  # noqa: B023
                dS = R_d - adjoint(dy)  # noqa: B023
                dX = _sym((R_c - X @ dS) @ T)  # noqa: B023
            return dX, dy, dS

        XS = X @ S
        dX, dy, dS = direction(-XS)
        alpha_p = min(1.0, _step_to_boundary(X, dX))
        alpha_d = min(1.0, _step_to_boundary(S, dS))
        mu_affine = float(((X + alpha_p * dX) * (S + alpha_d * dS)).sum()) / n
        sigma = min(1.0, max(mu_affine / max(mu, 1e-300), 0.0) ** 3)
        dX, dy, dS = direction(sigma * mu * eye - XS - dX @ dS)
        alpha_p = min(1.0, STEP_FRACTION * _step_to_boundary(X, dX))
        alpha_d = min(1.0, STEP_FRACTION * _step_to_boundary(S, dS))
        if not (alpha_p > 1e-12 or alpha_d > 1e-12):
            status, message = Status.INACCURATE, "interior point: no progress along the central path"
            break
        history[-1]["alpha_primal"], history[-1]["alpha_dual"], history[-1]["sigma"] = alpha_p, alpha_d, sigma
        X = _sym(X + alpha_p * dX)
        if gram_factor is not None:
            # A(dX) = r_p holds only to rounding of order cond(M) eps, and near the end of the path that
            # error lets the primal residual grow back: the least-norm correction of the new X restores
            # A(X) = b - (1 - alpha) r_p (A A^* = B B^* / 2, well conditioned), kept only while X stays
            # positive definite (correcting the direction instead would block the steps)
            defect = b - (1 - alpha_p) * r_p - apply(X)
            corrected = X + adjoint(2 * torch.cholesky_solve(defect.unsqueeze(-1), gram_factor).squeeze(-1))
            if int(torch.linalg.cholesky_ex(corrected)[1]) == 0:
                X = corrected
        y = y + alpha_d * dy
        S = _sym(S + alpha_d * dS)
    if (
        status is not Status.CONVERGED
        and refine is not None
        and closest[0] < refined_at
        and not deadline.expired()
    ):
        # the path ended (rounding) after its last refinement: the singular values of the nearest
        # iterate have separated further since, which identifies the rank the earlier try missed
        refined = refine(*closest[1:])
        best = better(best, refined)
        if refined is not None and refined.certificate.satisfied:
            status = Status.CONVERGED
            message = f"interior point + {refined.source} at its nearest iterate: certified after {message}"
    return InteriorPointOutcome(best, status, iteration, tuple(history), message)
