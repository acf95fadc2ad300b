"""ADMM for min ||Z||_* s.t. Z in C, with residual balancing and rank-identified polishing.

Splitting min ||Z||_* + 1_C(X) s.t. X = Z with scaled dual W (Boyd et al. 2011, Section 3.1):

    X+ = P_C(Z - W),    Z+ = prox_{||.||_*/rho}(X+ + W) (singular value thresholding),    W+ = W + X+ - Z+.

After each step G = rho W+ is an exact subgradient of ||.||_* at Z+ (so ||G||_op <= 1 and
<G, Z+> = ||Z+||_*), and the constraint set turns it into a multiplier (e.g. lambda = (B B^*)^{-1} B(G)).
The penalty rho follows residual balancing (He, Yang, Wang 2000): it doubles when the primal residual
||X - Z|| dominates the dual residual rho ||Z+ - Z|| tenfold and halves in the opposite case.

Singular value thresholding costs one d1 x d2 SVD per iteration (an eigendecomposition in the symmetric
case), the projection one B and one B^* application. When the iterate's rank has been stable and the
residuals are small, the caller's ``polish`` (Gauss-Newton on the rank-r manifold + multiplier
correction, :mod:`flatminima.solvers.convex.polish`) is tried; the loop ends as soon as a candidate's
KKT certificate meets the tolerance.

References:
    Boyd, Parikh, Chu, Peleato, Eckstein. Distributed optimization and statistical learning via the
    alternating direction method of multipliers (2011). Cai, Candès, Shen. A singular value thresholding
    algorithm for matrix completion (SIAM J. Optim. 2010).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable

import torch

from flatminima.solvers._deadline import Deadline
from flatminima.solvers.convex.certificate import Candidate, better
from flatminima.solvers.convex.constraints import ConstraintSet
from flatminima.solvers.result import Status

Evaluate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Candidate]
Polish = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Candidate | None]


def nuclear_prox(
    V: torch.Tensor, threshold: float, *, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """prox_{threshold ||.||_*}(V) as factors (U, s, W) with U diag(s) W^T the result (s > 0).

    For symmetric V the eigenvalues are soft-thresholded by magnitude: U = Q, W = Q sign(lambda).
    """
    if symmetric:
        eigenvalues, Q = torch.linalg.eigh((V + V.mT) / 2)
        shrunk = eigenvalues.abs() - threshold
        keep = shrunk > 0
        Qk = Q[:, keep]
        return Qk, shrunk[keep], Qk * eigenvalues[keep].sign()
    U, s, Vh = torch.linalg.svd(V, full_matrices=False)
    shrunk = s - threshold
    keep = shrunk > 0
    return U[:, keep], shrunk[keep], Vh[keep].mT


@dataclasses.dataclass(frozen=True)
class AdmmSettings:
    """Stopping rules and knobs of the ADMM loop."""

    tolerance: float
    max_iterations: int
    time_limit: float | None
    check_every: int = 10
    adapt_every: int = 5
    balance_ratio: float = 10.0
    polish_start: float = 3e-2
    polish_interval: int = 200
    rank_stable_for: int = 8
    #: ADMM has stagnated when the KKT residual's linear rate over the last ``stall_window`` iterations
    #: predicts more than ``stall_horizon`` further iterations; with ``stop_on_stall`` the loop then ends
    #: (status INACCURATE, for a caller with a fallback), else the diagnosis joins the final message.
    stall_horizon: int = 2000
    stall_window: int = 200
    stop_on_stall: bool = False


@dataclasses.dataclass(frozen=True)
class AdmmOutcome:
    """The best certified candidate and how the loop ended."""

    candidate: Candidate
    status: Status
    iterations: int
    history: tuple[dict[str, float], ...]
    message: str
    polish_attempts: int


def admm(
    constraint: ConstraintSet,
    shape: tuple[int, int],
    *,
    symmetric: bool,
    settings: AdmmSettings,
    evaluate: Evaluate,
    polish: Polish | None,
    start_time: float,
    dtype: torch.dtype,
    device: torch.device,
    initial_penalty: float,
    warm_start: tuple[torch.Tensor, torch.Tensor] | None = None,
    deadline: Deadline | None = None,
) -> AdmmOutcome:
    """Run ADMM until a candidate certificate meets ``settings.tolerance`` or a limit is hit.

    Args:
        constraint: the set C (with projection and dual function).
        shape: (d1, d2).
        symmetric: restrict to symmetric Z (eigenvalue thresholding).
        settings: tolerances and limits.
        evaluate: (U, s, V, G) -> certified candidate from the primal factors and a subgradient G.
        polish: (U, s, V, G) -> polished candidate or None (tried once the rank is stable).
        start_time: ``time.perf_counter()`` at the start of the solve (for the time limit).
        dtype: dtype of the iterates.
        device: device of the iterates.
        initial_penalty: rho at the first iteration.
        warm_start: (Z, G) to start from, a primal point and a subgradient estimate (W = G / rho);
            None: zeros.
        deadline: the solve's deadline (default: ``settings.time_limit`` from ``start_time``); the loop
            ends at the first iteration past it, and no polish starts after it.

    Returns:
        The best candidate seen, with status CONVERGED iff its certificate meets the tolerance.
    """
    if deadline is None:
        deadline = Deadline(settings.time_limit, start=start_time)
    Z = torch.zeros(shape, dtype=dtype, device=device)
    W = torch.zeros_like(Z)
    rho = initial_penalty
    if warm_start is not None:
        Z, W = warm_start[0].clone(), warm_start[1] / rho
    history: list[dict[str, float]] = []
    best: Candidate | None = None
    polish_level = settings.polish_start
    polish_attempts = 0
    last_polish = 0
    polish_interval = settings.polish_interval
    rank_history: list[int] = []
    status = Status.MAX_ITERATIONS
    message = f"reached max_iterations={settings.max_iterations} without meeting the tolerance"
    iteration = 0
    factors = (Z.new_zeros(shape[0], 0), Z.new_zeros(0), Z.new_zeros(shape[1], 0))
    levels: list[tuple[int, float]] = []
    stalled: str | None = None
    for iteration in range(1, settings.max_iterations + 1):
        X = constraint.project(Z - W)
        V = X + W
        U_f, s_f, V_f = nuclear_prox(V, 1.0 / rho, symmetric=symmetric)
        Z_new = (U_f * s_f) @ V_f.mT
        W = V - Z_new
        primal = float(torch.linalg.matrix_norm(X - Z_new))
        dual = rho * float(torch.linalg.matrix_norm(Z_new - Z))
        Z = Z_new
        factors = (U_f, s_f, V_f)
        norm_scale = max(float(torch.linalg.matrix_norm(X)), float(torch.linalg.matrix_norm(Z)), 1e-300)
        primal_rel = primal / norm_scale
        dual_rel = dual / max(rho * float(torch.linalg.matrix_norm(W)), 1e-300)
        rank = int(s_f.numel())
        rank_history.append(rank)
        history.append(
            {"iteration": iteration, "primal": primal_rel, "dual": dual_rel, "rho": rho, "rank": rank}
        )
        if not (math.isfinite(primal) and math.isfinite(dual)):
            status, message = Status.DIVERGED, f"non-finite residuals at iteration {iteration}"
            break
        G = rho * W
        converged = False
        small = max(primal_rel, dual_rel) <= settings.tolerance
        if iteration % settings.check_every == 0 or small:
            candidate = evaluate(U_f, s_f, V_f, G)
            best = better(best, candidate)
            history[-1]["kkt"] = candidate.certificate.max_relative_residual
            converged = candidate.certificate.satisfied
        stable = len(rank_history) >= settings.rank_stable_for and (
            len(set(rank_history[-settings.rank_stable_for :])) == 1
        )
        if (
            not converged
            and polish is not None
            and not deadline.expired()
            and stable
            and rank > 0
            and (
                max(primal_rel, dual_rel) <= polish_level
                or (
                    iteration - last_polish >= polish_interval
                    and max(primal_rel, dual_rel) <= settings.polish_start
                )
            )
        ):
            polish_attempts += 1
            if iteration - last_polish >= polish_interval:
                polish_interval *= 2  # back off on repeated failures (degenerate instances)
            last_polish = iteration
            polished = polish(U_f, s_f, V_f, G)
            polish_level = min(polish_level, max(primal_rel, dual_rel)) / 10.0
            if polished is not None:
                best = better(best, polished)
                history[-1]["polish_kkt"] = polished.certificate.max_relative_residual
                converged = polished.certificate.satisfied
        if converged:
            status, message = Status.CONVERGED, f"certificate met the tolerance at iteration {iteration}"
            break
        if best is not None and iteration % settings.check_every == 0:
            levels.append((iteration, best.certificate.max_relative_residual))
            stalled = _stagnation(levels, settings) or stalled
            if stalled is not None and settings.stop_on_stall:
                status, message = Status.INACCURATE, stalled
                break
        if deadline.expired():
            status, message = Status.TIME_LIMIT, f"time limit {deadline.limit} s reached"
            break
        if iteration % settings.adapt_every == 0:
            if primal_rel > settings.balance_ratio * dual_rel:
                rho *= 2.0
                W = W / 2.0
            elif dual_rel > settings.balance_ratio * primal_rel:
                rho /= 2.0
                W = W * 2.0
    if status is not Status.CONVERGED:
        U_f, s_f, V_f = factors
        finite = bool(torch.isfinite(W).all()) and bool(torch.isfinite(s_f).all())
        if finite or best is None:
            if not finite:
                U_f, s_f, V_f = (Z.new_zeros(shape[0], 0), Z.new_zeros(0), Z.new_zeros(shape[1], 0))
                W = torch.zeros_like(W)
            best = better(best, evaluate(U_f, s_f, V_f, rho * W))
        if status is not Status.DIVERGED and best is not None and best.certificate.satisfied:
            status, message = Status.CONVERGED, f"certificate met the tolerance at iteration {iteration}"
        elif status is Status.MAX_ITERATIONS and stalled is not None:
            message = f"{message} ({stalled})"
    return AdmmOutcome(
        typing.cast(Candidate, best), status, iteration, tuple(history), message, polish_attempts
    )


def _stagnation(levels: list[tuple[int, float]], settings: AdmmSettings) -> str | None:
    """A message if the best KKT residual's recent linear rate predicts too many further iterations.

    With residual r_now at iteration k and r_then at k - w (w = ``stall_window``), the observed rate
    rho = (r_now / r_then)^(1 / w) needs log(tol / r_now) / log(rho) more iterations to reach the tolerance.
    """
    horizon = settings.stall_horizon
    if not levels:
        return None
    iteration, now = levels[-1]
    then = next((level for it, level in reversed(levels) if iteration - it >= settings.stall_window), None)
    if then is None or not (now > settings.tolerance) or not math.isfinite(now):
        return None
    if now >= then:
        needed = math.inf
    else:
        rate = (now / then) ** (1.0 / settings.stall_window)
        needed = math.log(settings.tolerance / now) / math.log(rate)
    if needed <= horizon:
        return None
    return (
        f"ADMM stagnated: relative KKT residual {now:.2e} at iteration {iteration}, {then:.2e} "
        f"{settings.stall_window} iterations before (about {needed:.3g} more iterations to reach "
        f"{settings.tolerance:g})"
    )
