"""Limited-memory BFGS with a strong-Wolfe line search on flat torch vectors (device-agnostic, no autograd).

:func:`minimize_lbfgs` takes ``fun: x -> (f(x), grad f(x))`` and runs the two-loop recursion (Nocedal
1980) with the initial scaling s^T y / y^T y and a memory of the last ``memory`` pairs. Guarantees:

* steps satisfy the strong Wolfe conditions (:func:`strong_wolfe`, Nocedal and Wright Algorithms 3.5
  and 3.6 with safeguarded cubic interpolation): sufficient decrease f(x + t d) <= f(x) + c1 t g^T d
  and |grad f(x + t d)^T d| <= c2 |g^T d|, which make y^T s > 0 and keep the inverse-Hessian model
  positive definite; where the line search cannot meet them within its budget a step with sufficient
  decrease alone is taken, and when not even that exists the memory is dropped and steepest descent
  is tried once before the run stops;
* breakdown guards: a pair with y^T s <= 1e-12 ||s|| ||y|| is skipped (the curvature condition), a
  non-descent direction resets the memory, and non-finite trial values shrink the step;
* deadline: an object with ``expired() -> bool`` (:class:`flatminima.solvers._deadline.Deadline`) is
  tested before each iteration after the first, so every call makes progress and stops within one
  iteration of the limit.

This is the one L-BFGS of the package (the convex factor search and the deep-factorization search of
the experiments use it). ``torch.optim.LBFGS`` was not used for them because it cannot stop at a
deadline mid-run, tests its curvature pairs against an absolute 1e-10 (skipping every pair once the
gradients are small, where the factor search works at 1e-14) and works on parameters rather than flat
vectors. The box-constrained epsilon-sharpness of :mod:`flatminima.curvature.epsilon` uses SciPy's
L-BFGS-B, a different algorithm (projected gradients with a Cauchy point on the box, Byrd, Lu, Nocedal,
Zhu 1995) that this unconstrained kernel does not replace.

References:
    J. Nocedal. Updating quasi-Newton matrices with limited storage. Math. Comp. 35, 1980.
    J. Nocedal, S. J. Wright. Numerical Optimization, 2nd ed. (2006), Algorithms 3.5, 3.6 and 7.4.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Protocol

import torch

from flatminima.errors import InputDataError

FunctionAndGradient = Callable[[torch.Tensor], tuple[float, torch.Tensor]]


class Expiring(Protocol):
    """A deadline: ``expired()`` is True once the time is up."""

    def expired(self) -> bool:
        """True once the time is up."""
        ...  # pragma: no cover - protocol


@dataclasses.dataclass(frozen=True)
class LbfgsOutcome:
    """The final point, value and gradient, the counts of iterations and evaluations, and why it stopped.

    ``reason`` is one of "gradient" (||grad|| <= tolerance: ``converged``), "change" (the value or the
    step fell below ``change_tolerance``), "max_iterations", "max_evaluations", "deadline" and
    "line_search" (no step with sufficient decrease along steepest descent either).
    """

    x: torch.Tensor
    value: float
    gradient: torch.Tensor
    iterations: int
    evaluations: int
    converged: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class LineSearchResult:
    """A step t along d: the new value and gradient, the evaluations spent and what it satisfies.

    ``wolfe``: both strong Wolfe conditions hold; ``success``: at least sufficient decrease holds (when
    False, ``step`` is 0 and the value and gradient are those at the start).
    """

    step: float
    value: float
    gradient: torch.Tensor
    evaluations: int
    wolfe: bool
    success: bool


def minimize_lbfgs(
    fun: FunctionAndGradient,
    x0: torch.Tensor,
    *,
    gradient_tolerance: float,
    max_iterations: int,
    memory: int = 12,
    change_tolerance: float = 0.0,
    max_evaluations: int | None = None,
    c1: float = 1e-4,
    c2: float = 0.9,
    relative_noise: float | None = None,
    deadline: Expiring | None = None,
) -> LbfgsOutcome:
    """Minimize ``fun`` from ``x0`` by L-BFGS with a strong-Wolfe line search; see the module.

    Args:
        fun: x -> (f(x), grad f(x)) on flat vectors (the gradient in x's dtype and device).
        x0: the start (n,).
        gradient_tolerance: stop when ||grad f||_2 <= this (``converged``).
        max_iterations: iterations (accepted steps) at most.
        memory: curvature pairs kept.
        change_tolerance: also stop when |f_new - f| < this or max_i |x_new - x|_i <= this (0: never).
        max_evaluations: evaluations of ``fun`` at most (None: no limit beyond the line search's 25
            per iteration).
        c1: sufficient-decrease constant (0 < c1 < c2).
        c2: curvature constant (c1 < c2 < 1).
        relative_noise: the relative accuracy of the values of ``fun`` (default 1000 times the unit
            round-off of x's dtype): the line search's value tests allow this much times |f(x)|.
        deadline: tested before each iteration after the first (None: none).

    Returns:
        The :class:`LbfgsOutcome`.

    Raises:
        InputDataError: if not 0 < c1 < c2 < 1 or ``memory`` < 1.

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64))
        >>> outcome = minimize_lbfgs(lambda x: (float(x @ A @ x) / 2, A @ x), torch.ones(3, dtype=A.dtype),
        ...                          gradient_tolerance=1e-12, max_iterations=100)
        >>> outcome.converged, float(outcome.x.abs().max()) < 1e-12
        (True, True)
    """
    if not 0.0 < c1 < c2 < 1.0:
        raise InputDataError(f"need 0 < c1 < c2 < 1; got c1={c1}, c2={c2}.")
    if memory < 1:
        raise InputDataError(f"memory must be >= 1; got memory={memory}.")
    x = x0
    noise_factor = 1e3 * torch.finfo(x0.dtype).eps if relative_noise is None else relative_noise
    value, gradient = fun(x)
    evaluations = 1
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    iterations = 0
    reason = "max_iterations"
    while True:
        grad_norm = float(torch.linalg.vector_norm(gradient))
        if grad_norm <= gradient_tolerance:
            reason = "gradient"
            break
        if iterations >= max_iterations:
            break
        if max_evaluations is not None and evaluations >= max_evaluations:
            reason = "max_evaluations"
            break
        if iterations > 0 and deadline is not None and deadline.expired():
            reason = "deadline"
            break
        budget = 25 if max_evaluations is None else max(1, min(25, max_evaluations - evaluations))
        direction = _two_loop(gradient, pairs)
        if not float(direction @ gradient) < 0:
            pairs.clear()
            direction = -gradient
        # the first step along steepest descent has length at most 1
        step = 1.0 if pairs else min(1.0, 1.0 / max(grad_norm, 1e-300))
        line = functools.partial(
            strong_wolfe,
            fun,
            x,
            value,
            gradient,
            c1=c1,
            c2=c2,
            max_evaluations=budget,
            noise=noise_factor * abs(value),
        )
        search = line(direction, step=step)
        evaluations += search.evaluations
        if not search.success and pairs:  # the quasi-Newton model misled: drop it, try steepest descent
            pairs.clear()
            direction = -gradient
            search = line(direction, step=min(1.0, 1.0 / max(grad_norm, 1e-300)))
            evaluations += search.evaluations
        if not search.success:
            reason = "line_search"
            break
        s = search.step * direction
        y = search.gradient - gradient
        sy = float(s @ y)
        if sy > 1e-12 * float(torch.linalg.vector_norm(s)) * float(torch.linalg.vector_norm(y)):
            pairs.append((s, y, 1.0 / sy))
            if len(pairs) > memory:
                pairs.pop(0)
        change = abs(search.value - value)
        x, value, gradient = x + s, search.value, search.gradient
        iterations += 1
        if change_tolerance > 0 and (change < change_tolerance or float(s.abs().max()) <= change_tolerance):
            reason = "change"
            break
    converged = reason == "gradient"
    return LbfgsOutcome(x, value, gradient, iterations, evaluations, converged, reason)


def _two_loop(gradient: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """-H g by the L-BFGS two-loop recursion (Nocedal and Wright, Algorithm 7.4)."""
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


def strong_wolfe(
    fun: FunctionAndGradient,
    x: torch.Tensor,
    value: float,
    gradient: torch.Tensor,
    direction: torch.Tensor,
    *,
    step: float = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evaluations: int = 25,
    noise: float = 0.0,
) -> LineSearchResult:
    """A step along the descent direction ``direction`` that satisfies the strong Wolfe conditions.

    Bracketing then zoom (Nocedal and Wright, Algorithms 3.5 and 3.6): from ``step``, extrapolate by
    cubic interpolation until a bracket of an acceptable step is found, then shrink it by safeguarded
    cubic interpolation (bisection when the interpolant leaves the middle 80% of the bracket or a value
    is not finite). Within ``max_evaluations`` evaluations it returns the first step with
    f(x + t d) <= f(x) + c1 t g^T d and |grad f(x + t d)^T d| <= c2 |g^T d| (``wolfe=True``); failing
    that, the evaluated step of least value that has sufficient decrease (``wolfe=False``); failing
    that, ``success=False``.

    ``noise`` >= 0 is the absolute accuracy of the values: every value test (sufficient decrease, and
    the comparisons that place a step in the bracket) allows that much. Once the decrease along d is
    below the round-off of f (near a minimizer, where f changes by about ||g||^2 / L), the values carry
    no information and the search is steered by the derivatives, which stay accurate: the idea of the
    approximate Wolfe conditions of Hager and Zhang (SIAM J. Optim. 16, 2005).

    Example:
        >>> f = lambda x: (float((x - 3) @ (x - 3)), 2 * (x - 3))
        >>> x = torch.zeros(1, dtype=torch.float64)
        >>> result = strong_wolfe(f, x, *f(x), torch.ones(1, dtype=torch.float64), c2=0.1)
        >>> result.wolfe, round(result.step, 6)
        (True, 3.0)
    """
    slope0 = float(gradient @ direction)
    evaluations = 0
    best: tuple[float, float, torch.Tensor] | None = None  # (t, f, g) with sufficient decrease

    def evaluate(t: float) -> tuple[float, torch.Tensor, float]:
        nonlocal evaluations, best
        f, g = fun(x + t * direction)
        evaluations += 1
        d = float(g @ direction)
        if not (math.isfinite(f) and math.isfinite(d)):
            return math.inf, g, math.nan
        if f <= value + c1 * t * slope0 + noise and (best is None or f < best[1]):
            best = (t, f, g)
        return f, g, d

    def wolfe(t: float, f: float, d: float) -> bool:
        return f <= value + c1 * t * slope0 + noise and abs(d) <= -c2 * slope0

    # bracketing: lo is the last step with sufficient decrease and lower value, hi beyond an acceptable step
    lo = (0.0, value, slope0)
    hi: tuple[float, float, float] | None = None
    t = step
    while evaluations < max_evaluations:
        f, g, d = evaluate(t)
        if wolfe(t, f, d):
            return LineSearchResult(t, f, g, evaluations, True, True)
        if (
            not math.isfinite(f)
            or f > value + c1 * t * slope0 + noise
            or (evaluations > 1 and f > lo[1] + noise)
        ):
            hi = (t, f, d)
            break
        if d >= 0:
            hi, lo = lo, (t, f, d)
            break
        previous, lo = lo, (t, f, d)
        width = t - previous[0]
        t = _cubic_minimizer(previous, lo, t + 1.1 * width, t + 4.0 * width)
    # zoom: shrink [lo, hi] (in either order) around an acceptable step
    while hi is not None and evaluations < max_evaluations:
        a, b = min(lo[0], hi[0]), max(lo[0], hi[0])
        if b - a <= 1e-16 * max(b, 1e-300):
            break
        margin = 0.1 * (b - a)
        t = _cubic_minimizer(lo, hi, a + margin, b - margin) if math.isfinite(hi[1]) else (a + b) / 2
        f, g, d = evaluate(t)
        if wolfe(t, f, d):
            return LineSearchResult(t, f, g, evaluations, True, True)
        if not math.isfinite(f) or f > value + c1 * t * slope0 + noise or f > lo[1] + noise:
            hi = (t, f, d)
        else:
            if d * (hi[0] - lo[0]) >= 0:
                hi = lo
            lo = (t, f, d)
    if best is not None:
        return LineSearchResult(best[0], best[1], best[2], evaluations, False, True)
    return LineSearchResult(0.0, value, gradient, evaluations, False, False)


def _cubic_minimizer(
    p: tuple[float, float, float], q: tuple[float, float, float], low: float, high: float
) -> float:
    """The minimizer of the cubic through (t, f, f') at p and q, clipped to [low, high] (midpoint if none).

    Nocedal and Wright, formula (3.59).
    """
    (t1, f1, d1), (t2, f2, d2) = p, q
    lo, hi = min(low, high), max(low, high)
    if t1 == t2 or not all(map(math.isfinite, (f1, d1, f2, d2))):
        return (lo + hi) / 2
    e1 = d1 + d2 - 3 * (f1 - f2) / (t1 - t2)
    radicand = e1 * e1 - d1 * d2
    if radicand < 0:
        return (lo + hi) / 2
    e2 = math.copysign(math.sqrt(radicand), t2 - t1)
    denominator = d2 - d1 + 2 * e2
    if denominator == 0:
        return (lo + hi) / 2
    t = t2 - (t2 - t1) * (d2 + e2 - e1) / denominator
    return min(max(t, lo), hi) if math.isfinite(t) else (lo + hi) / 2
