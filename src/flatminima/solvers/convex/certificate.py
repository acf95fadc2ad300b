"""KKT certificates for min ||Z||_* s.t. Z in C from a primal point and a dual matrix.

For a primal Z = U diag(s) V^T and a dual matrix G (= B^*(lambda) for linear constraints):

* primal residual: the infeasibility of Z (||B(Z) - b||, or its excess over a ball radius);
* dual residual: max(0, ||G||_op - 1), because the dual of ||.||_* is ||.||_op <= 1;
* duality gap: | ||Z||_* - d(lambda) | with d the dual function of C (e.g. <lambda, b>);
* tangent residual: ||P_T(G) - U V^T||_F, the subgradient condition G = U V^T + W, W on the complement
  of the tangent space T of Z (implied by the three above; reported as a diagnostic).

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
