"""Direct flat search in factor space: an augmented Lagrangian over width-k factors, certified by duality.

In the rescaled factors L' = D1 L, R' = D2 R the flat problem is

    min (1/2)(||L'||_F^2 + ||R'||_F^2)  s.t.  B(L' R'^T) = b,    B = A(D1^{-1} . D2^{-1}),

whose minimizers at any width k >= rank give the solution Z = L' R'^T of P_flat (Theorem 3.2). The
augmented Lagrangian (1/2)(||L'||^2 + ||R'||^2) - <lambda, c> + (rho/2)||c||^2, c = B(L' R'^T) - b, is
minimized over (L', R') by L-BFGS (:func:`flatminima.numerics.minimize_lbfgs`, strong-Wolfe line
search), followed by lambda <- lambda - rho c (Hestenes-Powell), from a
spectral start (top-k SVD of B^*(b) by randomized subspace iteration). Every product goes through the
operator's factored maps (O(m (d1 + d2) k) for rank-one designs, O(m k) for masks); nothing d1 x d2 or
(m, d1, d2) is formed. The map and data are normalized internally (B/gamma, b/(gamma beta)) so that the
tolerances are scale-free.

Before any of this, when the spectral start reveals the rank (a dominant jump in its singular values),
Gauss-Newton from it is tried and certified directly (:func:`~.factor_polish.spectral_polish`); in the
recovery regime that is the whole solve. Otherwise, when the constraint violation is small, the rank r is
read off the singular values of L' R'^T and the point is polished (Gauss-Newton on the rank-r manifold
with conjugate gradients, then the multiplier correction of :mod:`~flatminima.solvers.convex.polish`;
:func:`~.factor_polish.polish_and_certify`). The certificate is the convex one: primal
||B(Z) - b||, gap |||Z||_* - <lambda, b>|, and dual max(0, ||B^*(lambda)||_op - 1), where
||B^*(lambda)||_op <= max(1, ||W||_op) + ||P_T(B^*(lambda)) - U V^T||_F and ||W||_op, W the part of
B^*(lambda) off the tangent space, is estimated by block Lanczos on the structured operator (an exact SVD
for small d). When only the dual condition fails, another multiplier of the same face is searched for
(:mod:`~flatminima.solvers.convex.dual_search`). A satisfied certificate proves that the factor-space
point solves the convex P_flat.

References:
    Burer and Monteiro, Math. Program. 95 (2003); Hestenes (1969), Powell (1969) (method of
    multipliers); Ding, Drusvyatskiy, Fazel, Harchaoui (2024), Theorem 3.2.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from collections.abc import Callable

import torch

from flatminima.numerics.lbfgs import minimize_lbfgs
from flatminima.solvers._deadline import Deadline
from flatminima.solvers.convex.certificate import Candidate, better
from flatminima.solvers.convex.factor_polish import polish_and_certify, spectral_polish
from flatminima.solvers.convex.formulation import Formulation
from flatminima.solvers.convex.linear_map import ScaledMap
from flatminima.solvers.convex.structured import (
    certify_structured,
    factor_svd,
    probe_scale,
    random_normal,
    spectral_start,
    unit_generator,
)
from flatminima.solvers.result import ConvexResult, Status


@dataclasses.dataclass(frozen=True)
class FactorSearchSettings:
    """Stopping rules and knobs of the factor search.

    Attributes:
        tolerance: relative KKT tolerance of the certificate.
        max_iterations: total L-BFGS iterations over all augmented-Lagrangian rounds.
        time_limit: seconds (None: no limit).
        width: initial width k (None: min(d1, d2, 10)); grown when the certificate shows a missing
            direction (||W||_op > 1) and every column is in use.
        max_rounds: augmented-Lagrangian rounds.
        penalty: initial rho (in normalized units).
        penalty_growth: factor applied to rho when ||c|| fails to drop fourfold in a round.
        exact_dual_limit: max(d1, d2) up to which ||B^*(lambda)||_op comes from a dense SVD.
    """

    tolerance: float
    max_iterations: int
    time_limit: float | None
    width: int | None
    max_rounds: int = 80
    penalty: float = 10.0
    penalty_growth: float = 4.0
    exact_dual_limit: int = 200


def solve_factor_search(
    formulation: Formulation,
    *,
    settings: FactorSearchSettings,
    generator: torch.Generator | None,
    start_time: float,
    deadline: Deadline | None = None,
) -> ConvexResult:
    """Flat search in factor space with a convex certificate; see the module docstring.

    ``deadline`` (default: ``settings.time_limit`` from ``start_time``) is tested before the spectral
    polish, inside L-BFGS, before and inside each polish, and once per augmented-Lagrangian round.
    """
    from flatminima.solvers.convex.first_order import package_result

    if deadline is None:
        deadline = Deadline(settings.time_limit, start=start_time)
    bmap = formulation.bmap
    if bmap is None:  # pragma: no cover - guarded by the dispatcher
        raise ValueError("factor search needs a linear constraint")
    gen = unit_generator(generator)
    b = formulation.b
    d1, d2 = formulation.shape
    width = settings.width if settings.width is not None else min(d1, d2, 10)
    width = min(width, d1, d2)
    exact = max(d1, d2) <= settings.exact_dual_limit
    gamma = probe_scale(bmap, b, gen) ** 0.5
    U0, s0, V0 = spectral_start(bmap, b / gamma**2, width, gen)
    shortcut = (
        None
        if deadline.expired()
        else spectral_polish(
            bmap, b, U0, s0, V0, tolerance=settings.tolerance, exact=exact, generator=gen, deadline=deadline
        )
    )
    if shortcut is not None and shortcut[0].certificate.satisfied:
        candidate, steps = shortcut
        return package_result(
            formulation,
            candidate,
            Status.CONVERGED,
            steps,
            time.perf_counter() - start_time,
            (
                {
                    "round": 0,
                    "gauss_newton_steps": steps,
                    "rank": candidate.s.numel(),
                    "kkt": candidate.certificate.max_relative_residual,
                },
            ),
            "factor_search",
            "certificate met the tolerance at the spectral start (Gauss-Newton at the revealed rank)",
            {"candidate_source": candidate.source, "width": candidate.s.numel(), "penalty": 0.0},
        )
    beta = float(torch.linalg.vector_norm(s0)) or 1.0
    b_n = b / (gamma * beta)
    root = (s0 / beta).sqrt()
    L, R = U0 * root, V0 * root
    lam_n = torch.zeros_like(b)
    rho = settings.penalty
    history: list[dict[str, float]] = []
    best: Candidate | None = None if shortcut is None else shortcut[0]
    total_iterations = 0
    polish_level = 1e-2
    polished_at = math.inf
    previous_violation = math.inf
    status = Status.MAX_ITERATIONS
    message = f"reached max_iterations={settings.max_iterations} L-BFGS steps"
    inner_tolerance = 1e-2

    for round_index in range(1, settings.max_rounds + 1):
        k = L.shape[1]

        fun = _augmented_lagrangian(bmap, d1, d2, k, gamma, b_n, lam_n, rho)

        budget = settings.max_iterations - total_iterations
        if budget <= 0:
            break
        outcome = minimize_lbfgs(
            fun,
            torch.cat([L.reshape(-1), R.reshape(-1)]),
            gradient_tolerance=inner_tolerance,
            max_iterations=budget,
            deadline=deadline,
        )
        total_iterations += outcome.iterations
        L = outcome.x[: d1 * k].reshape(d1, k)
        R = outcome.x[d1 * k :].reshape(d2, k)
        c = bmap.apply_factored(L, R) / gamma - b_n
        lam_n = lam_n - rho * c
        violation = float(torch.linalg.vector_norm(c)) / max(float(torch.linalg.vector_norm(b_n)), 1e-300)
        stationarity = float(torch.linalg.vector_norm(outcome.gradient))
        U, s, V = factor_svd(L, R)
        rank = int((s > 1e-3 * float(s[0].clamp_min(1e-300))).sum()) if s.numel() else 0
        record: dict[str, float] = {
            "round": round_index,
            "iterations": total_iterations,
            "violation": violation,
            "stationarity": stationarity,
            "rho": rho,
            "rank": rank,
            "width": k,
        }
        history.append(record)
        if not (math.isfinite(violation) and math.isfinite(stationarity)):
            status, message = Status.DIVERGED, f"non-finite iterate in round {round_index}"
            break
        stalled = violation > 0.5 * previous_violation
        dual_failure = False
        retry = polished_at < math.inf and violation <= 0.1 * polished_at
        if rank > 0 and (max(violation, stationarity) <= polish_level or retry) and not deadline.expired():
            polish_level = max(violation, stationarity) / 10.0
            polished_at = violation
            candidate = polish_and_certify(
                bmap,
                b,
                U[:, :rank],
                s[:rank] * beta,
                V[:, :rank],
                lam_n / gamma,
                tolerance=settings.tolerance,
                exact=exact,
                generator=gen,
                deadline=deadline,
            )
            best = better(best, candidate)
            record["kkt"] = candidate.certificate.max_relative_residual
            if candidate.certificate.satisfied:
                status, message = Status.CONVERGED, f"certificate met the tolerance in round {round_index}"
                break
            dual_failure = candidate.certificate.dual_residual > settings.tolerance
        if deadline.expired():
            status, message = Status.TIME_LIMIT, f"time limit {settings.time_limit} s reached"
            break
        if rank == k and k < min(d1, d2) and (stalled or dual_failure):
            # every column is used and the constraint cannot be met, or B^*(lambda) has a singular value
            # > 1 off the tangent space: add columns (small random ones escape the saddle at zero)
            extra = min(max(1, k // 2), min(d1, d2) - k)
            noise = 1e-3 * float(s[0].sqrt())
            L = torch.cat([L, noise * random_normal(d1, extra, like=L, generator=gen)], dim=1)
            R = torch.cat([R, noise * random_normal(d2, extra, like=R, generator=gen)], dim=1)
            record["grown_to"] = L.shape[1]
            rho = settings.penalty
            previous_violation = math.inf
            continue
        if violation <= 1e-13 and stationarity <= 1e-12:
            message = "the augmented Lagrangian converged but the certificate misses the tolerance"
            status = Status.INACCURATE
            break
        if stalled and violation > 1e-12:
            rho = min(rho * settings.penalty_growth, settings.penalty * 1e5)
        previous_violation = violation
        inner_tolerance = max(min(inner_tolerance, 0.1 * max(violation, 1e-16)), 1e-14)
    if best is None or not best.certificate.satisfied:
        U, s, V = factor_svd(L, R)
        keep = s > 1e-12 * float(s[0].clamp_min(1e-300)) if s.numel() else s > 0
        final = certify_structured(
            bmap,
            b,
            U[:, keep],
            s[keep] * beta,
            V[:, keep],
            lam_n / gamma,
            tolerance=settings.tolerance,
            exact=exact,
            generator=gen,
            source="augmented-lagrangian",
        )
        best = better(best, final)
        if best is not None and best.certificate.satisfied and status is not Status.DIVERGED:
            status, message = Status.CONVERGED, "certificate met the tolerance"
    best = typing.cast(Candidate, best)
    return package_result(
        formulation,
        best,
        status,
        total_iterations,
        time.perf_counter() - start_time,
        tuple(history),
        "factor_search",
        message,
        {"candidate_source": best.source, "width": L.shape[1], "penalty": rho},
    )


def _augmented_lagrangian(
    bmap: ScaledMap,
    d1: int,
    d2: int,
    k: int,
    gamma: float,
    b_n: torch.Tensor,
    lam_n: torch.Tensor,
    rho: float,
) -> Callable[[torch.Tensor], tuple[float, torch.Tensor]]:
    """Value and gradient of (1/2)(||L||^2 + ||R||^2) - <lambda, c> + (rho/2)||c||^2 on x = (vec L, vec R).

    With c = B(L R^T)/gamma - b_n and y = rho c - lambda: grad_L = L + B^*(y/gamma) R,
    grad_R = R + B^*(y/gamma)^T L (one fused pass over the operator's data).
    """

    def fun(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        L = x[: d1 * k].reshape(d1, k)
        R = x[d1 * k :].reshape(d2, k)
        store: dict[str, torch.Tensor] = {}

        def residual(value: torch.Tensor) -> torch.Tensor:
            c = value / gamma - b_n
            store["c"] = c
            return (rho * c - lam_n) / gamma

        _, _, GR, GtL = bmap.factored_with_adjoint(L, R, residual)
        c = store["c"]
        f = 0.5 * float(x.square().sum()) - float(lam_n @ c) + 0.5 * rho * float(c.square().sum())
        return f, torch.cat([(L + GR).reshape(-1), (R + GtL).reshape(-1)])

    return fun
