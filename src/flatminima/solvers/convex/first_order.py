"""The torch solver of the matrix relaxations: ADMM + rank-identified polish, interior point, certificate.

Works in the rescaled coordinates Z = D1 X D2 of P_flat (Z = X for NNM) with full d1 x d2 iterates, so
it suits d up to a few hundred; the factor-space search (:mod:`flatminima.solvers.convex.factor_search`)
covers larger structured instances. Every candidate is certified by exact KKT residuals (dense SVD
of the dual matrix), and the status is ``CONVERGED`` only when they meet the tolerance.

* ADMM (:mod:`~flatminima.solvers.convex.admm`) converges in a few hundred iterations where the
  solution is strictly complementary, and the polish finishes it once its rank is stable: Gauss-Newton
  + multiplier correction and Newton-KKT for B(Z) = b, Newton-KKT with the ball's constraint row for
  ||B(Z) - b|| <= eps.
* Near a phase transition the solution has many tiny singular values, the rank is never identified
  and ADMM's linear rate collapses (10,000 iterations did not reach 1e-9 on 19 x 21 completion at
  p = 0.4-0.6). ADMM measures its own rate; when it predicts more than 2000 further iterations
  (``stagnated``), equality-constrained relaxations hand over to the interior-point method
  (:mod:`~flatminima.solvers.convex.interior_point`), whose Newton steps do not care, and whose
  iterates reveal the rank for the same polish.

``max_iterations`` bounds ADMM iterations and interior-point steps together; ``result.message`` says
how each stage ended (certified, stagnated with its rate, time limit, infeasible).

References:
    Ding, Drusvyatskiy, Fazel, Harchaoui (2024), eq. (19); Boyd et al. (2011); Cai, Candès, Shen (2010);
    Helmberg, Rendl, Vanderbei, Wolkowicz (1996).
"""

from __future__ import annotations

import dataclasses
import time
import typing

import torch

from flatminima.errors import ConfigurationError
from flatminima.solvers._deadline import NO_DEADLINE, Deadline
from flatminima.solvers.convex.admm import AdmmSettings, admm
from flatminima.solvers.convex.certificate import BoundLedger, Candidate, better, dense_candidate
from flatminima.solvers.convex.constraints import AffineSet, BallSet, ConstraintSet, L1BallSet
from flatminima.solvers.convex.dual_face import observe_face_pairs
from flatminima.solvers.convex.formulation import Formulation
from flatminima.solvers.convex.interior_point import interior_point_fits
from flatminima.solvers.convex.interior_point_stage import interior_point_stage
from flatminima.solvers.convex.rank_polish import make_polish
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
    method: str = "auto",
    deadline: Deadline | None = None,
) -> ConvexResult:
    """Solve a matrix relaxation with ADMM + polish (+ interior point); see the module docstring.

    ``method``: ``"admm"`` (ADMM + polish only), ``"interior_point"`` (the SDP interior-point method with
    the polish, equality constraints only) or ``"auto"`` (ADMM, handing over to the interior-point
    method when ADMM stagnates or reaches ``max_iterations`` on an equality-constrained relaxation).
    ``deadline`` (default: ``time_limit`` from ``start_time``) is shared by every stage: ADMM, the polish
    (Gauss-Newton, conjugate gradients, Newton-KKT), the interior-point method and the ADMM restart.
    """
    if deadline is None:
        deadline = Deadline(time_limit, start=start_time)
    constraint = build_constraint(formulation)
    symmetric = formulation.symmetric
    shape = formulation.shape
    scale = constraint.scale
    # weak duality pairs the best feasible point with the best dual bound of the whole run
    ledger = BoundLedger(tolerance, scale) if isinstance(constraint, AffineSet | BallSet) else None
    observe = ledger.observe if ledger is not None else None

    def evaluate(U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, G: torch.Tensor) -> Candidate:
        lam, G_dual, dual_value = constraint.dual(G)
        Z = (U * s) @ V.mT
        candidate = dense_candidate(
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
        if observe is not None:
            observe(candidate)
        return candidate

    polish = make_polish(
        constraint, symmetric=symmetric, scale=scale, tolerance=tolerance, deadline=deadline, observe=observe
    )

    if isinstance(constraint, AffineSet | BallSet) and constraint.infeasibility > tolerance * max(
        scale, 1e-300
    ):
        return _infeasible_result(formulation, constraint, evaluate, tolerance, start_time)

    ipm_ready = (
        isinstance(constraint, AffineSet) and polish is not None and interior_point_fits(constraint.bmap)
    )
    fallback = method != "admm" and ipm_ready

    def run_interior_point(max_iterations: int) -> _Outcome:
        assert isinstance(constraint, AffineSet) and polish is not None  # implied by ipm_ready
        outcome = interior_point_stage(
            constraint,
            polish,
            symmetric,
            scale,
            tolerance,
            time_limit,
            start_time,
            max_iterations=max_iterations,
            deadline=deadline,
            ledger=ledger,
        )
        info: dict[str, object] = {}
        return _Outcome(
            outcome.candidate, outcome.status, outcome.iterations, outcome.history, outcome.message, info
        )

    if method == "interior_point":
        if not (isinstance(constraint, AffineSet) and polish is not None and ipm_ready):
            raise ConfigurationError(
                "method='interior_point' needs an equality-constrained linear relaxation whose Schur "
                f"complement fits in memory (m <= 4000); got kind={formulation.kind!r}"
                f"{' with eps' if formulation.eps is not None else ''}."
            )
        direct = run_interior_point(max_iterations=max_iterations)
        if direct.candidate is None:  # the deadline passed during the setup: certify the origin
            origin = evaluate(*_empty_factors(formulation), formulation.b.new_zeros(shape))
            direct = dataclasses.replace(direct, candidate=origin)
        return _package(formulation, direct, "interior_point", start_time, ledger, constraint, deadline)
    settings = AdmmSettings(
        tolerance=tolerance,
        max_iterations=max_iterations,
        time_limit=time_limit,
        stop_on_stall=fallback,
    )
    penalty = _initial_penalty(constraint, formulation.b.new_zeros(shape))
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
        initial_penalty=penalty,
        deadline=deadline,
    )
    admm_outcome = _Outcome(
        outcome.candidate,
        outcome.status,
        outcome.iterations,
        outcome.history,
        outcome.message,
        {"polish_attempts": outcome.polish_attempts},
    )
    out_of_time = deadline.expired()
    remaining = max_iterations - outcome.iterations  # max_iterations bounds both methods together
    if outcome.status in (Status.CONVERGED, Status.DIVERGED) or not fallback or out_of_time or remaining < 1:
        return _package(formulation, admm_outcome, "admm", start_time, ledger, constraint, deadline)
    # ADMM stagnated (near a phase transition the solution is not strictly complementary and its rate
    # degrades): the interior-point method converges regardless.
    second = run_interior_point(max_iterations=remaining)
    candidate = better(admm_outcome.candidate, second.candidate)
    assert candidate is not None
    pair = _certified_pair(ledger, constraint, candidate, symmetric, deadline)
    if pair is not None:  # certified before the ADMM restart
        candidate = pair
        message = second.message + _PAIR_MESSAGE.format(source=pair.source)
        second = dataclasses.replace(second, message=message)
    stages = [admm_outcome, second]
    remaining -= second.iterations
    if (
        not candidate.certificate.satisfied
        and remaining > 0
        and second.candidate is not None
        and not deadline.expired()
    ):
        # rounding stalls path following within a few multiples of 1e-9; ADMM restarted from its
        # (Z, B^*(y)) gains the last digits at its linear rate (a factor of a few per 200 iterations)
        start = second.candidate
        restarted = admm(
            constraint,
            shape,
            symmetric=symmetric,
            settings=dataclasses.replace(
                settings, max_iterations=min(remaining, RESTART_ITERATIONS), stop_on_stall=False
            ),
            evaluate=evaluate,
            polish=polish,
            start_time=start_time,
            dtype=formulation.b.dtype,
            device=formulation.b.device,
            initial_penalty=penalty,
            warm_start=((start.U * start.s) @ start.V.mT, typing.cast(torch.Tensor, start.dual_matrix)),
            deadline=deadline,
        )
        candidate = better(candidate, restarted.candidate)
        stages.append(
            _Outcome(
                restarted.candidate,
                restarted.status,
                restarted.iterations,
                restarted.history,
                f"ADMM restarted from the interior point: {restarted.message}",
                {},
            )
        )
    assert candidate is not None
    status = Status.CONVERGED if candidate.certificate.satisfied else stages[-1].status
    total = sum(stage.iterations for stage in stages)
    if status is Status.MAX_ITERATIONS and total < max_iterations:
        # the restart's own budget ran out, not the caller's: the answer is at the rounding floor
        status = Status.INACCURATE
    combined = _Outcome(
        candidate,
        status,
        total,
        tuple(record for stage in stages for record in stage.history),
        "; then ".join(stage.message for stage in stages),
        {
            **admm_outcome.info,
            "admm_iterations": admm_outcome.iterations + sum(stage.iterations for stage in stages[2:]),
            "ipm_iterations": second.iterations,
        },
    )
    return _package(formulation, combined, "admm+interior_point", start_time, ledger, constraint, deadline)


#: ADMM iterations at most after a restart from the interior point's answer.
RESTART_ITERATIONS = 2000


@dataclasses.dataclass(frozen=True)
class _Outcome:
    candidate: Candidate | None
    status: Status
    iterations: int
    history: tuple[dict[str, float], ...]
    message: str
    info: dict[str, object]


_PAIR_MESSAGE = (
    "; certified by the best feasible point and the best dual bound of the run ({source}; weak duality)"
)


def _certified_pair(
    ledger: BoundLedger | None,
    constraint: ConstraintSet | None,
    candidate: Candidate,
    symmetric: bool,
    deadline: Deadline,
) -> Candidate | None:
    """The ledger's best primal-dual pair if it certifies where ``candidate`` does not (else None).

    For B(Z) = b the face pairs of :mod:`~flatminima.solvers.convex.dual_face` are observed first: the
    dual's top singular values sit within rounding of 1 on either side, and the best feasible point
    carries the O(mu) tail of an interior-point iterate.
    """
    if ledger is None or candidate.certificate.satisfied:
        return None
    if isinstance(constraint, AffineSet):
        duals = [candidate.multiplier, None if ledger.dual is None else ledger.dual.multiplier]
        observe_face_pairs(ledger, constraint, duals, symmetric=symmetric, deadline=deadline)
    pair = ledger.combined(symmetric=symmetric)
    return pair if pair is not None and pair.certificate.satisfied else None


def _package(
    formulation: Formulation,
    outcome: _Outcome,
    method: str,
    start_time: float,
    ledger: BoundLedger | None = None,
    constraint: ConstraintSet | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> ConvexResult:
    candidate = outcome.candidate
    assert candidate is not None
    status, message = outcome.status, outcome.message
    pair = _certified_pair(ledger, constraint, candidate, formulation.symmetric, deadline)
    if pair is not None:
        candidate, status = pair, Status.CONVERGED
        message += _PAIR_MESSAGE.format(source=pair.source)
    if status is Status.CONVERGED and not candidate.certificate.satisfied:
        status = Status.INACCURATE
    return package_result(
        formulation,
        candidate,
        status,
        outcome.iterations,
        time.perf_counter() - start_time,
        outcome.history,
        method,
        message,
        {**outcome.info, "candidate_source": candidate.source},
    )


def _empty_factors(formulation: Formulation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-0 factors (Z = 0) of a formulation's shape."""
    d1, d2 = formulation.shape
    b = formulation.b
    return b.new_zeros(d1, 0), b.new_zeros(0), b.new_zeros(d2, 0)


def _infeasible_result(
    formulation: Formulation,
    constraint: AffineSet | BallSet,
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
        f"b is not in the range of B: infeasibility {constraint.infeasibility:.3g} "
        f"(relative {constraint.infeasibility / max(constraint.scale, 1e-300):.3g}); "
        + (
            f"the ball ||B(Z) - b|| <= eps = {constraint.eps:.3g} does not reach range(B) (increase eps)"
            if isinstance(constraint, BallSet)
            else "the equality constraint is infeasible (noisy data? pass eps)"
        )
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
