"""Deprecated home of the convex solvers' L-BFGS: use :func:`flatminima.numerics.minimize_lbfgs`.

The hand-written L-BFGS that lived here (Armijo backtracking only) is replaced by the package's one
L-BFGS kernel, :mod:`flatminima.numerics.lbfgs` (strong-Wolfe line search, the same curvature-pair guard
and deadline rule). :func:`lbfgs` and :class:`LbfgsOutcome` stay importable from here and call it.
"""

from __future__ import annotations

import torch

from flatminima.numerics.lbfgs import FunctionAndGradient, LbfgsOutcome, minimize_lbfgs
from flatminima.solvers._deadline import NO_DEADLINE, Deadline

__all__ = ["FunctionAndGradient", "LbfgsOutcome", "lbfgs"]


def lbfgs(
    fun: FunctionAndGradient,
    x0: torch.Tensor,
    *,
    gradient_tolerance: float,
    max_iterations: int,
    memory: int = 12,
    armijo: float = 1e-4,
    deadline: Deadline = NO_DEADLINE,
) -> LbfgsOutcome:
    """Deprecated alias of :func:`flatminima.numerics.minimize_lbfgs` (``armijo`` is its ``c1``).

    Minimizes ``fun`` from ``x0`` until ||grad|| <= tolerance, ``max_iterations`` steps or ``deadline``
    (tested before each iteration after the first, so that every call makes progress).
    """
    return minimize_lbfgs(
        fun,
        x0,
        gradient_tolerance=gradient_tolerance,
        max_iterations=max_iterations,
        memory=memory,
        c1=armijo,
        deadline=deadline,
    )
