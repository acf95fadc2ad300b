"""KKT certificates for min ||Z||_* s.t. Z in C from a primal point and a dual matrix.

For a primal Z = U diag(s) V^T and a dual matrix G (= B^*(lambda) for linear constraints):

* primal residual: the infeasibility of Z (||B(Z) - b||, or its excess over a ball radius);
* dual residual: max(0, ||G||_op - 1), because the dual of ||.||_* is ||.||_op <= 1;
* duality gap: | ||Z||_* - d(lambda) | with d the dual function of C (e.g. <lambda, b>);
* tangent residual: ||P_T(G) - U V^T||_F, the subgradient condition G = U V^T + W, W on the complement
  of the tangent space T of Z (implied by the three above; reported as a diagnostic).

Weak duality pairs **any** feasible Z with **any** dual point: ||Z||_* >= p* >= d(lambda / max(1,
||B^*(lambda)||_op)) = d(lambda) / max(1, ||B^*(lambda)||_op), the dual function d being positively
homogeneous for the equality and ball constraints (<lambda, b> and <lambda, b> - eps ||lambda||). A
:class:`BoundLedger` keeps the smallest feasible primal value and the largest dual bound seen during a
solve, from whichever iterates they come: near the end of an interior-point path the primal and the dual
lose their last digits to rounding at different iterations, and their best pair certifies where no
single iterate does.

References:
    Recht, Fazel, Parrilo. Guaranteed minimum-rank solutions of linear matrix equations via nuclear
    norm minimization (SIAM Review 2010), Section 3 (optimality conditions).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from flatminima.solvers.result import Certificate

_TINY = 1e-300


@dataclasses.dataclass(frozen=True, eq=False)
class Candidate:
    """A primal-dual pair with its certificate (internal currency of the convex solvers)."""

    U: torch.Tensor
    s: torch.Tensor
    V: torch.Tensor
    multiplier: torch.Tensor | None
    dual_matrix: torch.Tensor | None
    certificate: Certificate
    source: str


def tangent_residual(U: torch.Tensor, V: torch.Tensor, G: torch.Tensor) -> float:
    """||P_T(G) - U V^T||_F = sqrt(||U^T G - V^T||_F^2 + ||(I - U U^T) G V||_F^2)."""
    if U.shape[-1] == 0:
        return 0.0
    UtG = U.mT @ G
    GV = G @ V
    first = (UtG - V.mT).square().sum()
    second = (GV - U @ (U.mT @ GV)).square().sum()
    return float((first + second).sqrt())


def operator_norm(G: torch.Tensor, *, symmetric: bool) -> float:
    """||G||_op by a full eigen/singular-value computation."""
    if symmetric:
        return float(torch.linalg.eigvalsh((G + G.mT) / 2).abs().max())
    return float(torch.linalg.matrix_norm(G, ord=2))


def make_certificate(
    *,
    primal_residual: float,
    scale: float,
    primal_objective: float,
    dual_objective: float,
    dual_norm: float,
    dual_norm_exact: bool,
    tangent: float,
    tolerance: float,
) -> Certificate:
    """Assemble a :class:`Certificate` with its relative residuals."""
    gap = abs(primal_objective - dual_objective)
    denominator = max(abs(primal_objective), abs(dual_objective))
    relative_gap = gap / denominator if denominator > _TINY else (0.0 if gap == 0.0 else math.inf)
    if not math.isfinite(gap):
        relative_gap = math.nan
    return Certificate(
        primal_residual=primal_residual,
        dual_residual=max(0.0, dual_norm - 1.0) if math.isfinite(dual_norm) else math.nan,
        duality_gap=gap,
        primal_objective=primal_objective,
        dual_objective=dual_objective,
        relative_primal_residual=primal_residual / max(scale, _TINY),
        relative_duality_gap=relative_gap,
        dual_norm=dual_norm,
        dual_norm_exact=dual_norm_exact,
        tangent_residual=tangent,
        tolerance=tolerance,
    )


def dense_candidate(
    *,
    U: torch.Tensor,
    s: torch.Tensor,
    V: torch.Tensor,
    multiplier: torch.Tensor | None,
    dual_matrix: torch.Tensor,
    dual_objective: float,
    primal_residual: float,
    scale: float,
    symmetric: bool,
    tolerance: float,
    source: str,
) -> Candidate:
    """A candidate whose dual norm is computed exactly from the dense dual matrix."""
    certificate = make_certificate(
        primal_residual=primal_residual,
        scale=scale,
        primal_objective=float(s.sum()),
        dual_objective=dual_objective,
        dual_norm=operator_norm(dual_matrix, symmetric=symmetric),
        dual_norm_exact=True,
        tangent=tangent_residual(U, V, dual_matrix),
        tolerance=tolerance,
    )
    return Candidate(U, s, V, multiplier, dual_matrix, certificate, source)


def better(first: Candidate | None, second: Candidate | None) -> Candidate | None:
    """The candidate with the smaller largest relative residual (None loses)."""
    if first is None:
        return second
    if second is None:
        return first
    a = first.certificate.max_relative_residual
    b = second.certificate.max_relative_residual
    return second if b < a else first


@dataclasses.dataclass
class BoundLedger:
    """The best primal candidate (feasible, smallest objective) and dual bound seen during one solve.

    Only for constraint sets whose dual function is positively homogeneous (B(Z) = b and the ball
    ||B(Z) - b|| <= eps), so that a multiplier scaled by 1 / max(1, ||B^*(lambda)||_op) stays a valid bound.
    """

    tolerance: float
    scale: float
    primal: Candidate | None = None
    dual: Candidate | None = None
    dual_bound: float = -math.inf

    def observe(self, candidate: Candidate | None) -> None:
        """Record a candidate's primal point (if feasible to the tolerance) and its dual bound."""
        if candidate is None:
            return
        certificate = candidate.certificate
        feasible = certificate.relative_primal_residual <= self.tolerance
        value = certificate.primal_objective
        if (
            feasible
            and math.isfinite(value)
            and (self.primal is None or value < self.primal.certificate.primal_objective)
        ):
            self.primal = candidate
        norm = certificate.dual_norm
        if candidate.dual_matrix is None or not certificate.dual_norm_exact or not math.isfinite(norm):
            return
        bound = certificate.dual_objective / max(1.0, norm)
        if math.isfinite(bound) and bound > self.dual_bound:
            self.dual, self.dual_bound = candidate, bound

    def combined(self, *, symmetric: bool) -> Candidate | None:
        """The best primal point with the best scaled dual point, certified as one candidate (or None)."""
        primal, dual = self.primal, self.dual
        if primal is None or dual is None or dual.dual_matrix is None:
            return None
        factor = max(1.0, dual.certificate.dual_norm)
        G = dual.dual_matrix / factor
        multiplier = None if dual.multiplier is None else dual.multiplier / factor
        certificate = make_certificate(
            primal_residual=primal.certificate.primal_residual,
            scale=self.scale,
            primal_objective=primal.certificate.primal_objective,
            dual_objective=self.dual_bound,
            dual_norm=operator_norm(G, symmetric=symmetric),
            dual_norm_exact=True,
            tangent=tangent_residual(primal.U, primal.V, G),
            tolerance=self.tolerance,
        )
        source = primal.source if primal is dual else f"{primal.source} + dual of {dual.source}"
        return Candidate(primal.U, primal.s, primal.V, multiplier, G, certificate, source)
