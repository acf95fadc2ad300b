"""The depth study: flat solutions of the Hadamard model x = v_1 ⊙ ... ⊙ v_k solve an l_p problem.

For b = A x and f(v) = (1/m)||A(v_1 ⊙ ... ⊙ v_k) - b||^2, tr grad^2 f = 2 sum_l ||D (⊙_{i != l} v_i)||^2
with D = diag(||a_j||)/sqrt(m); by AM-GM its minimum over factorizations of x is
2 k sum_j D_jj^2 |x_j|^p, p = 2 - 2/k, so the flat solutions solve

    min_x sum_j w_j |x_j|^p  s.t.  A x = b,    w_j = D_jj^2

(weighted l1 for k = 2, which recovers sparse vectors; 1 < p < 2 for k >= 3, whose solutions are
generically dense). ``weighted=False`` gives the unweighted problem (min ||x||_1 for the norm-minimal
analogue).

Solvers (torch, device-agnostic):

* p = 1: ADMM (exact projection onto {A x = b} by a Cholesky factor of A A^T, weighted soft
  thresholding), then a support polish: x_S = A_S^+ b and lambda = lambda0 + A_S (A_S^T A_S)^{-1}
  (w_S sign(x_S) - A_S^T lambda0). Certificate: ||A x - b||, max_j (|A^T lambda|_j / w_j - 1)_+, and the
  gap |sum w|x| - <lambda, b>|.
* 1 < p < 2: damped Newton on the smooth concave dual <lambda, b> - sum_j phi_j^*((A^T lambda)_j),
  phi_j^*(g) = (1 - 1/p) |g| (|g| / (p w_j))^{1/(p-1)}; the primal point x(lambda) =
  sign(g) (|g| / (p w))^{1/(p-1)} is exactly stationary, so the certificate is ||A x - b|| and the gap.

References:
    Ding, Drusvyatskiy, Fazel, Harchaoui (2024), Section 9 (effect of depth); Woodworth et al., Kernel
    and rich regimes in overparametrized models (COLT 2020).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from flatminima._checks import check_real
from flatminima.problems import Instance
from flatminima.solvers._deadline import Deadline
from flatminima.solvers.convex.certificate import make_certificate
from flatminima.solvers.result import Certificate, Status, check_ground_truth


@dataclasses.dataclass(frozen=True, eq=False)
class LpResult:
    """The solution of min sum_j w_j |x_j|^p s.t. A x = b (the flat solution of the depth-k Hadamard model).

    Attributes:
        depth: k; exponent: p = 2 - 2/k; weights: w (d,) (ones when unweighted).
        vector: the solution x (d,).
        multiplier: lambda (m,).
        status, certificate, iterations, wall_time, history, backend, method, message: as for
            :class:`~flatminima.solvers.result.ConvexResult`.
    """

    kind: str
    relaxation: str
    depth: int
    exponent: float
    weights: torch.Tensor
    vector: torch.Tensor
    multiplier: torch.Tensor | None
    status: Status
    certificate: Certificate
    iterations: int
    wall_time: float
    history: tuple[Mapping[str, float], ...]
    backend: str
    method: str
    message: str = ""
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """True iff the status is ``CONVERGED``."""
        return self.status is Status.CONVERGED

    @functools.cached_property
    def matrix(self) -> torch.Tensor:
        """The solution as a (d, 1) matrix (the instance's ground-truth layout)."""
        return self.vector.unsqueeze(-1)

    def support(self, tolerance: float = 1e-8) -> torch.Tensor:
        """Boolean mask of the entries with |x_j| > tolerance * max|x|."""
        scale = float(self.vector.abs().max()) if self.vector.numel() else 0.0
        return self.vector.abs() > tolerance * scale

    def recovery_error(self, ground_truth: torch.Tensor | None) -> float:
        """||x - x_true||_2 (ground truth as (d,) or (d, 1)).

        Raises:
            MissingGroundTruthError: ``ground_truth`` is None (an instance built from data has none).
            InputDataError: the ground truth has the wrong number of entries or non-finite entries.
        """
        truth = check_ground_truth(ground_truth, (self.vector.numel(), 1), allow_vector=True)
        return float(torch.linalg.vector_norm(self.vector - truth.reshape(-1).to(self.vector)))

    def recovered(self, ground_truth: torch.Tensor | None, tolerance: float = 1e-6) -> bool:
        """True iff the solve converged and the error is below ``tolerance``."""
        check_real("tolerance", tolerance, low=0.0, low_open=True)
        return self.recovery_error(ground_truth) < tolerance and self.converged

    def factors(self) -> tuple[torch.Tensor, ...]:
        """Balanced Hadamard factors (v_1, ..., v_k): |v_i| = |x|^{1/k}, the signs carried by v_1."""
        magnitude = self.vector.abs().pow(1.0 / self.depth)
        return (self.vector.sign() * magnitude, *(magnitude.clone() for _ in range(self.depth - 1)))


def depth_weights(instance: Instance, *, weighted: bool) -> torch.Tensor:
    """w_j = D_jj^2 = ||a_j||^2 / m (flat) or 1 (unweighted)."""
    A = instance.operator.matrix  # type: ignore[attr-defined]
    if not weighted:
        return torch.ones(A.shape[1], dtype=A.dtype, device=A.device)
    return A.square().sum(0) / A.shape[0]


def solve_lp(
    instance: Instance,
    *,
    depth: int,
    weighted: bool,
    backend: str,
    tolerance: float,
    max_iterations: int | None,
    time_limit: float | None,
    start_time: float,
) -> LpResult:
    """Solve the l_p depth problem of a sparse-recovery instance (see the module docstring).

    ``time_limit`` (seconds from ``start_time``) bounds the ADMM loop (p = 1) and the dual Newton
    iterations (p > 1); the CVXPY backend passes the remaining time to Clarabel.
    """
    deadline = Deadline(time_limit, start=start_time)
    A = instance.operator.matrix  # type: ignore[attr-defined]
    b = instance.observations
    w = depth_weights(instance, weighted=weighted)
    p = 2.0 - 2.0 / depth
    relaxation = "flat" if weighted else "nuclear_norm"
    if backend == "cvxpy":
        from flatminima.solvers.convex.lp_reference import solve_lp_cvxpy

        x, lam, status_text, iterations = solve_lp_cvxpy(A, b, w, depth, time_limit=_remaining(deadline))
        certificate = lp_certificate(A, b, w, p, x, lam, tolerance)
        status = (
            Status.CONVERGED
            if status_text == "optimal" and certificate.satisfied
            else (Status.INFEASIBLE if status_text == "infeasible" else Status.INACCURATE)
        )
        if status is not Status.CONVERGED and deadline.expired():
            status = Status.TIME_LIMIT
        return LpResult(
            instance.kind,
            relaxation,
            depth,
            p,
            w,
            x,
            lam,
            status,
            certificate,
            iterations,
            time.perf_counter() - start_time,
            (),
            "cvxpy",
            "clarabel",
            f"Clarabel status {status_text!r}",
        )
    limit = max_iterations if max_iterations is not None else (20_000 if p == 1.0 else 200)
    if p == 1.0:
        x, lam, status, iterations, history = _weighted_l1(A, b, w, tolerance, limit, deadline)
        method = "admm"
    else:
        x, lam, status, iterations, history = _dual_newton(A, b, w, p, tolerance, limit, deadline)
        method = "dual_newton"
    certificate = lp_certificate(A, b, w, p, x, lam, tolerance)
    if certificate.satisfied:
        status = Status.CONVERGED
    elif status is Status.CONVERGED:
        status = Status.INACCURATE
    return LpResult(
        instance.kind,
        relaxation,
        depth,
        p,
        w,
        x,
        lam,
        status,
        certificate,
        iterations,
        time.perf_counter() - start_time,
        tuple(history),
        "torch",
        method,
        f"{method} stopped with status {status.value}",
    )


def lp_certificate(
    A: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    p: float,
    x: torch.Tensor,
    lam: torch.Tensor | None,
    tolerance: float,
) -> Certificate:
    """KKT residuals of (x, lambda) for min sum w |x|^p s.t. A x = b."""
    primal = float(torch.linalg.vector_norm(A @ x - b))
    objective = float((w * x.abs().pow(p)).sum())
    if lam is None:
        return make_certificate(
            primal_residual=primal,
            scale=float(torch.linalg.vector_norm(b)),
            primal_objective=objective,
            dual_objective=math.nan,
            dual_norm=math.nan,
            dual_norm_exact=True,
            tangent=math.nan,
            tolerance=tolerance,
        )
    g = A.mT @ lam
    if p == 1.0:
        ratio = float((g.abs() / w).max())
        dual_value = float(lam @ b)
    else:
        ratio = 1.0  # every lambda is dual feasible for p > 1
        conjugate = (1.0 - 1.0 / p) * g.abs() * (g.abs() / (p * w)).pow(1.0 / (p - 1.0))
        dual_value = float(lam @ b) - float(conjugate.sum())
    return make_certificate(
        primal_residual=primal,
        scale=float(torch.linalg.vector_norm(b)),
        primal_objective=objective,
        dual_objective=dual_value,
        dual_norm=ratio,
        dual_norm_exact=True,
        tangent=math.nan,
        tolerance=tolerance,
    )


def _weighted_l1(
    A: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    tolerance: float,
    max_iterations: int,
    deadline: Deadline,
) -> tuple[torch.Tensor, torch.Tensor, Status, int, list[dict[str, float]]]:
    """ADMM for weighted basis pursuit with support polishing, until ``deadline``."""
    chol = torch.linalg.cholesky(A @ A.mT)

    def solve(y: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)

    def project(v: torch.Tensor) -> torch.Tensor:
        return v - A.mT @ solve(A @ v - b)

    x_ls = project(torch.zeros_like(w))
    rho = 1.0 / max(0.1 * float(x_ls.abs().max()), 1e-300) * float(w.mean())
    z = torch.zeros_like(w)
    u = torch.zeros_like(w)
    history: list[dict[str, float]] = []
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    supports: list[frozenset[int]] = []
    status = Status.MAX_ITERATIONS
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        x = project(z - u)
        v = x + u
        z_new = v.sign() * (v.abs() - w / rho).clamp_min(0.0)
        u = v - z_new
        primal = float(torch.linalg.vector_norm(x - z_new)) / max(float(torch.linalg.vector_norm(x)), 1e-300)
        dual = (
            rho
            * float(torch.linalg.vector_norm(z_new - z))
            / max(rho * float(torch.linalg.vector_norm(u)), 1e-300)
        )
        z = z_new
        history.append({"iteration": iteration, "primal": primal, "dual": dual, "rho": rho})
        lam = solve(A @ (rho * u))
        supports.append(frozenset(int(j) for j in (z != 0).nonzero().flatten()))
        candidates = [(z, lam)]
        if len(supports) >= 5 and len(set(supports[-5:])) == 1 and 0 < len(supports[-1]) <= A.shape[0]:
            polished = _support_polish(A, b, w, sorted(supports[-1]), lam)
            if polished is not None:
                candidates.append(polished)
        if iteration % 10 == 0 or len(candidates) > 1:
            for xc, lc in candidates:
                score = lp_certificate(A, b, w, 1.0, xc, lc, tolerance).max_relative_residual
                if best is None or score < best[0]:
                    best = (score, xc, lc)
            if best is not None and best[0] <= tolerance:
                status = Status.CONVERGED
                break
        if deadline.expired():
            status = Status.TIME_LIMIT
            break
        if iteration % 5 == 0:
            if primal > 10 * dual:
                rho, u = rho * 2, u / 2
            elif dual > 10 * primal:
                rho, u = rho / 2, u * 2
    if best is None:
        best = (math.inf, z, solve(A @ (rho * u)))
    return best[1], best[2], status, iteration, history


def _remaining(deadline: Deadline) -> float | None:
    """Seconds left for a sub-solver (None: no limit; at least a millisecond)."""
    return None if not deadline.bounded else max(deadline.remaining(), 1e-3)


def _support_polish(
    A: torch.Tensor, b: torch.Tensor, w: torch.Tensor, support: list[int], lam0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """x_S = A_S^+ b on the identified support and the corrected multiplier."""
    index = torch.tensor(support, device=A.device)
    A_S = A[:, index]
    gram = A_S.mT @ A_S
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        return None
    x_S = torch.cholesky_solve((A_S.mT @ b).unsqueeze(-1), chol).squeeze(-1)
    x = torch.zeros_like(w)
    x[index] = x_S
    target = w[index] * x_S.sign()
    correction = torch.cholesky_solve((target - A_S.mT @ lam0).unsqueeze(-1), chol).squeeze(-1)
    return x, lam0 + A_S @ correction


def _dual_newton(
    A: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    p: float,
    tolerance: float,
    max_iterations: int,
    deadline: Deadline,
) -> tuple[torch.Tensor, torch.Tensor, Status, int, list[dict[str, float]]]:
    """Damped Newton on the dual of min sum w |x|^p s.t. A x = b (1 < p < 2), until ``deadline``."""
    q = 1.0 / (p - 1.0)

    def primal_of(lam: torch.Tensor) -> torch.Tensor:
        g = A.mT @ lam
        return g.sign() * (g.abs() / (p * w)).pow(q)

    def dual_value(lam: torch.Tensor) -> float:
        g = (A.mT @ lam).abs()
        return float(lam @ b) - float(((1.0 - 1.0 / p) * g * (g / (p * w)).pow(q)).sum())

    # start from the weighted least-squares (p = 2) multiplier, which has every g_j != 0
    lam = torch.linalg.solve((A / w) @ A.mT, 2.0 * b)
    history: list[dict[str, float]] = []
    status = Status.MAX_ITERATIONS
    iteration = 0
    value = dual_value(lam)
    scale = float(torch.linalg.vector_norm(b))
    for iteration in range(1, max_iterations + 1):
        g = A.mT @ lam
        x = primal_of(lam)
        gradient = b - A @ x
        residual = float(torch.linalg.vector_norm(gradient))
        history.append({"iteration": iteration, "residual": residual / max(scale, 1e-300)})
        if residual <= 0.1 * tolerance * scale:
            status = Status.CONVERGED
            break
        if deadline.expired():
            status = Status.TIME_LIMIT
            break
        curvature = q * x.abs() / g.abs().clamp_min(1e-300)
        H = (A * curvature) @ A.mT
        H = H + 1e-14 * float(H.diagonal().max()) * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        step = torch.linalg.solve(H, gradient)
        t = 1.0
        increase = float(gradient @ step)
        for _ in range(60):
            candidate = lam + t * step
            new_value = dual_value(candidate)
            if new_value >= value + 1e-4 * t * increase:
                break
            t *= 0.5
        else:
            break
        lam, value = candidate, new_value
    return primal_of(lam), lam, status, iteration, history
