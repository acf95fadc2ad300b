"""The reference backend: the same relaxations written in CVXPY and solved by Clarabel (interior point).

Needs the optional ``reference`` extra (``pip install 'flatminima[reference]'``); cvxpy is imported lazily.
The nuclear norm becomes an SDP of size d1 + d2, so this backend suits d up to a few dozen; it is the
oracle the first-order solvers are tested against.

The returned certificate is recomputed by flatminima from the CVXPY primal and dual values (never
taken from the solver's word): for linear constraints G = B^*(lambda) with lambda = -nu (CVXPY's
equality dual nu, Lagrangian f + nu^T (B z - b)); for robust PCA and the noisy ball the dual matrix is
the multiplier of an explicit split Z = X. Clarabel's inaccurate statuses map to ``INACCURATE``, and an
``optimal`` answer whose certificate misses the tolerance is reported as ``INACCURATE`` too.

References:
    Diamond and Boyd. CVXPY: a Python-embedded modeling language for convex optimization (JMLR 2016).
    Goulart and Chen. Clarabel: an interior-point solver for conic programs with quadratic objectives
    (2024).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch

from flatminima.errors import SolverError
from flatminima.operators import EntryMask
from flatminima.solvers._deadline import Deadline
from flatminima.solvers.convex.certificate import dense_candidate
from flatminima.solvers.convex.constraints import AffineSet, BallSet, L1BallSet
from flatminima.solvers.convex.first_order import build_constraint, package_result
from flatminima.solvers.convex.formulation import Formulation
from flatminima.solvers.result import ConvexResult, Status

#: relative singular-value floor defining the numerical rank of an interior-point solution.
RANK_TOLERANCE = 1e-7

#: Clarabel settings for the accuracy the 1e-6 recovery criterion needs.
#: (Clarabel's static regularization makes these SDPs stall at ~1e-7 as "AlmostSolved"; without it they
#: reach "Solved".)
CLARABEL_SETTINGS: dict[str, Any] = {
    "tol_gap_abs": 1e-8,
    "tol_gap_rel": 1e-8,
    "tol_feas": 1e-8,
    "static_regularization_enable": False,
    "max_iter": 400,
}


def import_cvxpy() -> Any:
    """Import cvxpy lazily.

    Raises:
        SolverError: when the ``reference`` extra (cvxpy + clarabel) is not installed.
    """
    try:
        import cvxpy
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise SolverError(
            "the 'reference' extra is not installed; pip install 'flatminima[reference]'"
        ) from error
    if "CLARABEL" not in cvxpy.installed_solvers():  # pragma: no cover
        raise SolverError("the 'reference' extra is not installed; pip install 'flatminima[reference]'")
    return cvxpy


def _constraint_matrix(formulation: Formulation) -> Any:
    """B as an (m, d1 d2) matrix acting on the row-major vec of Z (scipy sparse for entry masks)."""
    bmap = formulation.bmap
    if bmap is None:  # pragma: no cover - robust PCA has no B
        raise SolverError("internal: robust PCA has no measurement map")
    if isinstance(bmap.operator, EntryMask):
        import scipy.sparse

        op = bmap.operator
        d2 = formulation.shape[1]
        weights = bmap._mask_weights(op).cpu().numpy()
        columns = (op.rows * d2 + op.cols).cpu().numpy()
        m = op.num_measurements
        return scipy.sparse.csr_matrix(
            (weights, (np.arange(m), columns)), shape=(m, formulation.shape[0] * d2)
        )
    return bmap.dense_rows().cpu().numpy()


def solve_cvxpy(
    formulation: Formulation,
    *,
    tolerance: float,
    time_limit: float | None,
    max_iterations: int | None,
    deadline: Deadline | None = None,
) -> ConvexResult:
    """Solve a matrix relaxation with CVXPY + Clarabel and certify the answer with flatminima's KKT check.

    ``deadline`` (default: ``time_limit`` from now) covers the whole solve: Clarabel gets the time left
    after CVXPY has built the model, and when none is left the solve is skipped (status TIME_LIMIT, the
    origin certified). CVXPY's compilation itself cannot be interrupted.
    """
    start = time.perf_counter()
    if deadline is None:
        deadline = Deadline(time_limit, start=start)
    cp = import_cvxpy()
    d1, d2 = formulation.shape
    dtype, device = formulation.b.dtype, formulation.b.device
    b = formulation.b.detach().cpu().double().numpy()
    Z = cp.Variable((d1, d2), symmetric=True) if formulation.symmetric else cp.Variable((d1, d2))
    constraints: list[Any] = []
    split = None
    if formulation.bmap is None:
        X = cp.Variable((d1, d2))
        Y = b.reshape(d1, d2)
        split = Z == X
        constraints = [split, cp.sum(cp.abs(Y - X)) <= float(formulation.radius or 0.0)]
    else:
        B = _constraint_matrix(formulation)
        z = cp.vec(Z, order="C")
        if formulation.eps is None:
            constraints = [B @ z == b]
        else:
            X = cp.Variable((d1, d2), symmetric=formulation.symmetric)
            split = Z == X
            constraints = [split, cp.norm(B @ cp.vec(X, order="C") - b, 2) <= formulation.eps]
    problem = cp.Problem(cp.Minimize(cp.normNuc(Z)), constraints)
    settings = dict(CLARABEL_SETTINGS)
    if max_iterations is not None:
        settings["max_iter"] = max_iterations
    message = ""
    if deadline.expired():
        raw_status = "user_limit"
        message = f"time limit {deadline.limit} s reached before Clarabel started"
    else:
        if deadline.bounded:
            settings["time_limit"] = max(deadline.remaining(), 1e-3)
        try:
            with warnings.catch_warnings():  # "solution may be inaccurate": the status says it, we map it
                warnings.simplefilter("ignore", UserWarning)
                problem.solve(solver=cp.CLARABEL, **settings)
            raw_status = str(problem.status)
        except cp.error.SolverError as error:
            raw_status = "solver_error"
            message = f"Clarabel failed: {error}"
    iterations = (
        int(getattr(problem.solver_stats, "num_iters", 0) or 0)
        if raw_status != "solver_error" and problem.solver_stats is not None
        else 0
    )
    constraint = build_constraint(formulation)
    if Z.value is None:
        zeros = torch.zeros(d1, d2, dtype=dtype, device=device)
        U, s, V = zeros.new_zeros(d1, 0), zeros.new_zeros(0), zeros.new_zeros(d2, 0)
        G = zeros
        lam = None
        dual_value = float("nan")
        Z_value = zeros
    else:
        Z_value = torch.as_tensor(np.asarray(Z.value), dtype=dtype, device=device)
        U, s, V = _truncated_factors(Z_value, symmetric=formulation.symmetric)
        Z_value = (U * s) @ V.mT
        lam, G, dual_value = _dual(formulation, constraint, constraints, split, dtype, device)
    candidate = dense_candidate(
        U=U,
        s=s,
        V=V,
        multiplier=lam,
        dual_matrix=G,
        dual_objective=dual_value,
        primal_residual=constraint.residual(Z_value),
        scale=constraint.scale,
        symmetric=formulation.symmetric,
        tolerance=tolerance,
        source="clarabel",
    )
    status = _map_status(raw_status, candidate.certificate.satisfied)
    if status in (Status.MAX_ITERATIONS, Status.INACCURATE) and deadline.expired():
        status = Status.TIME_LIMIT  # Clarabel stopped at (or never started before) the time limit
    if not message:
        message = (
            f"Clarabel status {raw_status!r}; flatminima certificate "
            + ("met" if candidate.certificate.satisfied else "missed")
            + f" the tolerance {tolerance:g}"
        )
    return package_result(
        formulation,
        candidate,
        status,
        iterations,
        time.perf_counter() - start,
        (),
        "clarabel",
        message,
        {"solver_status": raw_status},
        backend="cvxpy",
    )


def _truncated_factors(
    Z: torch.Tensor, *, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Factors of Z at its numerical rank (singular values > RANK_TOLERANCE * largest)."""
    if symmetric:
        eigenvalues, Q = torch.linalg.eigh((Z + Z.mT) / 2)
        order = eigenvalues.abs().argsort(descending=True)
        eigenvalues, Q = eigenvalues[order], Q[:, order]
        keep = eigenvalues.abs() > RANK_TOLERANCE * float(eigenvalues.abs().max().clamp_min(1e-300))
        Qk = Q[:, keep]
        return Qk, eigenvalues[keep].abs(), Qk * eigenvalues[keep].sign()
    U, s, Vh = torch.linalg.svd(Z, full_matrices=False)
    keep = s > RANK_TOLERANCE * float(s.max().clamp_min(1e-300)) if s.numel() else s > 0
    return U[:, keep], s[keep], Vh[keep].mT


def _dual(
    formulation: Formulation,
    constraint: Any,
    constraints: list[Any],
    split: Any,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor, float]:
    """(lambda, G, dual value) from CVXPY's dual variables."""

    def tensor(value: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=device)

    if isinstance(constraint, AffineSet):
        nu = constraints[0].dual_value
        if nu is None:
            return None, torch.zeros(formulation.shape, dtype=dtype, device=device), float("nan")
        lam = -tensor(nu).reshape(-1)
        return lam, constraint.bmap.adjoint(lam), float(lam @ constraint.b)
    nu = split.dual_value if split is not None else None
    if nu is None:
        return None, torch.zeros(formulation.shape, dtype=dtype, device=device), float("nan")
    G = -tensor(nu)
    if formulation.symmetric:
        G = (G + G.mT) / 2
    if isinstance(constraint, BallSet):
        return constraint.dual(G)
    if isinstance(constraint, L1BallSet):
        return constraint.dual(G)
    return None, G, float("nan")  # pragma: no cover


def _map_status(raw: str, certified: bool) -> Status:
    """CVXPY/Clarabel status -> :class:`Status`; optimal counts only when the certificate holds."""
    if raw == "optimal":
        return Status.CONVERGED if certified else Status.INACCURATE
    if raw == "infeasible":
        return Status.INFEASIBLE
    if raw == "unbounded":
        return Status.UNBOUNDED
    if raw == "user_limit":
        return Status.MAX_ITERATIONS
    return Status.INACCURATE  # optimal_inaccurate, infeasible_inaccurate, solver_error, ...
