"""Measures of the flat-algorithms study: distances to the flat and norm-minimal solutions, str ratio."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from flatminima.errors import SolverError
from flatminima.objectives import BilinearFactorization, Objective, balancedness
from flatminima.problems import Instance
from flatminima.solvers.result import ConvexResult

Params = tuple[torch.Tensor, ...]
Row = dict[str, Any]


def procrustes_distance(params: Params, reference: Params, *, joint: bool) -> float:
    """Return min over orthogonal Q of the distance between the factor tuples, relative to ||reference||.

    ``joint``: one Q for all blocks (L -> L Q, R -> R Q); otherwise one Q per block. For F, G of the same
    shape, min_Q ||F - G Q||_F^2 = ||F||^2 + ||G||^2 - 2 ||G^T F||_*.
    """
    pairs = (
        [(torch.cat(params, dim=0), torch.cat(reference, dim=0))]
        if joint
        else list(zip(params, reference, strict=True))
    )
    total = 0.0
    for F, G in pairs:
        if F.numel() == 0:
            continue
        cross = torch.linalg.matrix_norm(G.mT @ F, ord="nuc")
        total += float(F.square().sum() + G.square().sum() - 2.0 * cross)
    scale = math.sqrt(sum(float(G.square().sum()) for G in reference))
    return math.sqrt(max(total, 0.0)) / max(scale, 1e-300)


def _relative(X: torch.Tensor, Y: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(X - Y) / torch.linalg.matrix_norm(Y).clamp_min(1e-300))


@dataclasses.dataclass(frozen=True)
class References:
    """The flat and norm-minimal solutions of one instance, as matrices and width-k factors."""

    flat_matrix: torch.Tensor
    nnm_matrix: torch.Tensor
    flat_factors: Params
    nnm_factors: Params
    flat_scaled_trace: float
    flat_status: str
    nnm_status: str


def solution_metrics(objective: Objective, params: Params, instance: Instance, refs: References) -> Row:
    """The study's measures of one parameter tuple (see the module docstring).

    ``recovery_error`` is nan for an instance without a ground truth (``ground_truth=None``).
    """
    joint = isinstance(objective, BilinearFactorization)
    X = objective.end_to_end(params)  # type: ignore[attr-defined]
    M = instance.ground_truth
    row: Row = {
        "final_loss": float(objective.value(params)),
        "scaled_trace": float(objective.scaled_trace(params)),
        "recovery_error": math.nan if M is None else _relative(X, M),  # nan: no ground truth known
        "balancedness": float(balancedness(*params)) if joint else math.nan,
        "dist_flat": _relative(X, refs.flat_matrix),
        "dist_nnm": _relative(X, refs.nnm_matrix),
        "factor_dist_flat": procrustes_distance(params, refs.flat_factors, joint=joint),
        "factor_dist_nnm": procrustes_distance(params, refs.nnm_factors, joint=joint),
    }
    row["str_ratio"] = row["scaled_trace"] / refs.flat_scaled_trace
    return row


def compute_references(objective: Objective, instance: Instance, width: Any) -> References:
    """Solve P_flat and NNM for ``instance`` (certified convex solvers) and factor both at ``width``."""
    from flatminima.solvers import solve_flat, solve_nuclear_norm

    flat = solve_flat(instance)
    nnm = solve_nuclear_norm(instance)
    if not isinstance(flat, ConvexResult) or not isinstance(nnm, ConvexResult):
        raise SolverError(f"the study needs a matrix problem; got kind {instance.kind!r}.")
    flat_factors = flat.factors(width)
    nnm_factors = nnm.factors(width)
    return References(
        flat_matrix=flat.matrix,
        nnm_matrix=nnm.matrix,
        flat_factors=flat_factors,
        nnm_factors=nnm_factors,
        flat_scaled_trace=float(objective.scaled_trace(flat_factors)),
        flat_status=flat.status.value,
        nnm_status=nnm.status.value,
    )
