"""The torch first-order solver of the matrix relaxations: ADMM + rank-identified polish + certificate.

Works in the rescaled coordinates Z = D1 X D2 of P_flat (Z = X for NNM) with full d1 x d2 iterates, so
it suits d up to a few hundred; the factor-space search (:mod:`flatminima.solvers.convex.factor_search`)
covers larger structured instances. Every candidate is certified by exact KKT residuals (dense SVD
of the dual matrix), and the status is ``CONVERGED`` only when they meet the tolerance.

References:
    Ding, Drusvyatskiy, Fazel, Harchaoui (2024), eq. (19); Boyd et al. (2011); Cai, Candès, Shen (2010).
"""

from __future__ import annotations

import time

import torch

from flatminima.solvers.convex.admm import AdmmSettings, admm
from flatminima.solvers.convex.certificate import Candidate, better, dense_candidate
from flatminima.solvers.convex.constraints import AffineSet, BallSet, ConstraintSet, L1BallSet
from flatminima.solvers.convex.formulation import Formulation
from flatminima.solvers.convex.newton import kkt_newton
from flatminima.solvers.convex.polish import corrected_multiplier, gauss_newton
from flatminima.solvers.result import ConvexResult, Status


def build_constraint(formulation: Formulation) -> ConstraintSet:
    """The constraint set C of a formulation."""
    if formulation.bmap is None:
        return L1BallSet(formulation.observations_matrix, float(formulation.radius or 0.0))
    if formulation.eps is not None and formulation.eps > 0:
        return BallSet(formulation.bmap, formulation.b, formulation.eps)
    return AffineSet(formulation.bmap, formulation.b)


def _initial_penalty(constraint: ConstraintSet, reference: torch.Tensor) -> float:
    """rho_0 = 1 / (0.1 ||X_0||_op) for X_0 the projection of 0 onto C (a scale-aware start)."""
    X0 = constraint.project(torch.zeros_like(reference))
    size = float(torch.linalg.matrix_norm(X0, ord=2))
    return 1.0 / (0.1 * size) if size > 0 else 1.0


def solve_first_order(
    formulation: Formulation,
    *,
    tolerance: float,
    max_iterations: int,
    time_limit: float | None,
    start_time: float,
) -> ConvexResult:
    """Solve a matrix relaxation with ADMM + polish; see the module docstring."""
    constraint = build_constraint(formulation)
    symmetric = formulation.symmetric
    shape = formulation.shape
    scale = constraint.scale

    def evaluate(U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, G: torch.Tensor) -> Candidate:
        lam, G_dual, dual_value = constraint.dual(G)
        Z = (U * s) @ V.mT
        return dense_candidate(
            U=U,
            s=s,
            V=V,
            multiplier=lam,
            dual_matrix=G_dual,
            dual_objective=dual_value,
            primal_residual=constraint.residual(Z),
            scale=scale,
            symmetric=symmetric,
            tolerance=tolerance,
            source="admm",
        )

    polish = None
    if isinstance(constraint, AffineSet):
        affine = constraint

        def polish(U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, G: torch.Tensor) -> Candidate | None:
            bmap, b = affine.bmap, affine.b
            lam_admm = affine.dual(G)[0]

            def certify(
                U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, lam: torch.Tensor, source: str
            ) -> Candidate:
                primal = float(torch.linalg.vector_norm(bmap.apply_factored(U * s, V) - b))
                return dense_candidate(
                    U=U,
                    s=s,
                    V=V,
                    multiplier=lam,
                    dual_matrix=bmap.adjoint(lam),
                    dual_objective=float(lam @ b),
                    primal_residual=primal,
                    scale=scale,
                    symmetric=symmetric,
                    tolerance=tolerance,
                    source=source,
                )

            # 1. feasibility by Gauss-Newton on the rank-r manifold, then the multiplier; only where the
            #    rank-r feasible set can be locally unique (dim T <= m)
            best: Candidate | None = None
            d1, d2 = bmap.shape
            r = int(s.numel())
            if (d1 + d2 - r) * r <= bmap.num_measurements or symmetric:
                outcome = gauss_newton(bmap, b, U, s, V, symmetric=symmetric)
                for start, source in ((lam_admm, "polish-gauss-newton"), (None, "polish-least-squares")):
                    lam = corrected_multiplier(outcome.system, start)
                    best = better(best, certify(outcome.U, outcome.s, outcome.V, lam, source))
                    if best is not None and best.certificate.satisfied:
                        return best
            # 2. Newton on the KKT system of the factored problem (uses the objective as well).
            if not symmetric and lam_admm is not None:
                newton = kkt_newton(bmap, b, U, s, V, lam_admm)
                if newton is not None:
                    best = better(
                        best, certify(newton.U, newton.s, newton.V, newton.multiplier, "polish-newton")
                    )
            return best

    if isinstance(constraint, AffineSet) and constraint.infeasibility > tolerance * max(scale, 1e-300):
        return _infeasible_result(formulation, constraint, evaluate, tolerance, start_time)

    settings = AdmmSettings(tolerance=tolerance, max_iterations=max_iterations, time_limit=time_limit)
    outcome = admm(
        constraint,
        shape,
        symmetric=symmetric,
        settings=settings,
        evaluate=evaluate,
        polish=polish,
        start_time=start_time,
        dtype=formulation.b.dtype,
        device=formulation.b.device,
        initial_penalty=_initial_penalty(constraint, formulation.b.new_zeros(shape)),
    )
    candidate = outcome.candidate
    status = outcome.status
    if status is Status.CONVERGED and not candidate.certificate.satisfied:
        status = Status.INACCURATE
    return package_result(
        formulation,
        candidate,
        status,
        outcome.iterations,
        time.perf_counter() - start_time,
        outcome.history,
        "admm",
        outcome.message,
        {"polish_attempts": outcome.polish_attempts, "candidate_source": candidate.source},
    )


def _infeasible_result(
    formulation: Formulation,
    constraint: AffineSet,
    evaluate: object,
    tolerance: float,
    start_time: float,
) -> ConvexResult:
    """B(Z) = b has no solution: return the least-norm least-squares point with status INFEASIBLE."""
    X = constraint.least_norm()
    U, s, Vh = torch.linalg.svd(X, full_matrices=False)
    keep = s > 1e-12 * float(s.max()) if s.numel() else s > 0
    candidate = evaluate(U[:, keep], s[keep], Vh[keep].mT, torch.zeros_like(X))  # type: ignore[operator]
    message = (
        f"b is not in the range of B: least-squares residual {constraint.infeasibility:.3g} "
        f"(relative {constraint.infeasibility / max(constraint.scale, 1e-300):.3g}); the equality "
        "constraint is infeasible (noisy data? pass eps)"
    )
    return package_result(
        formulation,
        candidate,
        Status.INFEASIBLE,
        0,
        time.perf_counter() - start_time,
        (),
        "admm",
        message,
        {},
    )


def package_result(
    formulation: Formulation,
    candidate: Candidate,
    status: Status,
    iterations: int,
    wall_time: float,
    history: tuple[dict[str, float], ...] | tuple[()],
    method: str,
    message: str,
    info: dict[str, object],
    *,
    backend: str = "torch",
) -> ConvexResult:
    """Package a candidate as a :class:`ConvexResult`."""
    return ConvexResult(
        kind=formulation.kind,
        relaxation=formulation.relaxation,
        status=status,
        certificate=candidate.certificate,
        iterations=iterations,
        wall_time=wall_time,
        history=tuple(history),
        backend=backend,
        method=method,
        left_singular_vectors=candidate.U,
        singular_values=candidate.s,
        right_singular_vectors=candidate.V,
        left_rescaling_inverse=formulation.left_inverse,
        right_rescaling_inverse=formulation.right_inverse,
        multiplier=candidate.multiplier,
        dual_matrix=candidate.dual_matrix,
        symmetric=formulation.symmetric,
        rescaling_condition_number=formulation.kappa,
        message=message,
        info=info,
    )
