"""A small limited-memory BFGS minimizer on flat torch vectors (device-agnostic, no autograd).

Two-loop recursion (Nocedal 1980) with an Armijo backtracking line search, the initial scaling
s^T y / y^T y, and curvature-guarded updates (pairs with s^T y <= 0 are skipped).

References:
    Nocedal and Wright. Numerical Optimization (2006), Algorithm 7.4.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from flatminima.solvers._deadline import NO_DEADLINE, Deadline

FunctionAndGradient = Callable[[torch.Tensor], tuple[float, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class LbfgsOutcome:
    """The final point, value and gradient, and the counts of iterations and evaluations."""

    x: torch.Tensor
    value: float
    gradient: torch.Tensor
    iterations: int
    evaluations: int
    converged: bool


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
    """Minimize ``fun`` from ``x0`` until ||grad|| <= tolerance, ``max_iterations`` steps or ``deadline``.

    The deadline is tested before each iteration (after the first, so that every call makes progress).
    """
    x = x0
    value, gradient = fun(x)
    evaluations = 1
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    iteration = 0
    converged = False
    for iteration in range(1, max_iterations + 1):
        grad_norm = float(torch.linalg.vector_norm(gradient))
        if grad_norm <= gradient_tolerance:
            converged = True
            iteration -= 1
            break
        if iteration > 1 and deadline.expired():
            iteration -= 1
            break
        direction = _two_loop(gradient, pairs)
        slope = float(direction @ gradient)
        if not slope < 0:
            pairs.clear()
            direction = -gradient
            slope = -(grad_norm**2)
        step = 1.0 if pairs else min(1.0, 1.0 / max(grad_norm, 1e-300))
        accepted = False
        for _ in range(40):
            candidate = x + step * direction
            new_value, new_gradient = fun(candidate)
            evaluations += 1
            if math.isfinite(new_value) and new_value <= value + armijo * step * slope:
                accepted = True
                break
            step *= 0.5
        if not accepted:
            break
        s = candidate - x
        y = new_gradient - gradient
        sy = float(s @ y)
        if sy > 1e-12 * float(torch.linalg.vector_norm(s)) * float(torch.linalg.vector_norm(y)):
            pairs.append((s, y, 1.0 / sy))
            if len(pairs) > memory:
                pairs.pop(0)
        x, value, gradient = candidate, new_value, new_gradient
    else:
        converged = float(torch.linalg.vector_norm(gradient)) <= gradient_tolerance
    return LbfgsOutcome(x, value, gradient, iteration, evaluations, converged)


def _two_loop(gradient: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """-H g by the L-BFGS two-loop recursion."""
    q = gradient.clone()
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * float(s @ q)
        alphas.append(alpha)
        q = q - alpha * y
    if pairs:
        s, y, _ = pairs[-1]
        q = q * (float(s @ y) / float(y @ y))
    for (s, y, rho), alpha in zip(pairs, reversed(alphas), strict=True):
        beta = rho * float(y @ q)
        q = q + (alpha - beta) * s
    return -q
