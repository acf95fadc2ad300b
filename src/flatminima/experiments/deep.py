"""The flattest deep matrix factorization, by numerical minimization of the exact Hessian trace.

For f(W_1, ..., W_N) = (1/m) ||A(W_N ... W_1) - b||^2 (:class:`~flatminima.objectives.DeepFactorization`)
the method ``deep_flat`` solves

    min_W tr grad^2 f(W)   s.t.   A(W_N ... W_1) = b

by an augmented Lagrangian: minimize T(W) + <lambda, r(W)> + (mu/2) ||r(W)||^2 over W with L-BFGS (autograd
through the closed-form trace; the package's one L-BFGS, :func:`flatminima.numerics.minimize_lbfgs`, with
its strong-Wolfe line search), then lambda <- lambda + mu r(W), and mu <- 10 mu when ||r|| did not drop
fourfold. The start is random (the trial's ``init`` stream), so the answer is a numerical local search,
not a certified optimum.

What it shows (Gatmiry et al. 2023): with full observation (matrix completion at p = 1, the population
loss), tr grad^2 f = (2/m) sum_l ||W_N..W_{l+1}||_F^2 ||W_{l-1}..W_1||_F^2, whose minimum over the
factorizations of E is (2/m) N (d_0 d_N)^{1/N} ||E||_*^{2(N-1)/N} (``trace_ratio`` = found / closed form,
>= 1 up to rounding, and ``trace_excess`` = trace_ratio - 1); the minimizing factors are not balanced
for N >= 3 (``balanced_trace`` is the trace of the balanced SVD factorization). With Gaussian sensing the
flattest end-to-end matrix is compared with the nuclear-norm solution (``distance_to_nuclear_norm``) at
every depth.

References:
    K. Gatmiry, Z. Li, C.-Y. Chuang, S. Reddi, T. Ma, S. Jegelka. The inductive bias of flatness
    regularization for deep matrix factorization. NeurIPS 2023 (arXiv:2306.13239).
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Section 9).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from flatminima.experiments.methods import Method, MethodContext, Metrics, TrialFailed, register_method
from flatminima.numerics import minimize_lbfgs
from flatminima.problems import Instance
from flatminima.solvers._deadline import Deadline


def balanced_factors(E: torch.Tensor, depth: int) -> tuple[torch.Tensor, ...]:
    """W_1 = S^{1/N} V^T, W_l = S^{1/N} (1 < l < N), W_N = U S^{1/N}: the balanced SVD factorization of E."""
    U, s, Vh = torch.linalg.svd(E, full_matrices=False)
    root = s.pow(1.0 / depth)
    if depth == 1:
        return (E.clone(),)
    inner = [torch.diag(root) for _ in range(depth - 2)]
    return (root.unsqueeze(-1) * Vh, *inner, U * root)


def minimize_deep_trace(
    instance: Instance,
    *,
    depth: int,
    generator: torch.Generator,
    max_outer: int = 30,
    inner_iterations: int = 1000,
    feasibility: float = 1e-11,
    time_limit: float | None = None,
) -> tuple[tuple[torch.Tensor, ...], Metrics]:
    """Minimize the exact Hessian trace of the depth-N factorization over its zero-loss set.

    Args:
        instance: a matrix instance.
        depth: N >= 1 (inner widths = max(d1, d2)).
        generator: the random start.
        max_outer: augmented-Lagrangian updates.
        inner_iterations: L-BFGS iterations per update (and 1.25 times as many evaluations at most).
        feasibility: stop when ||A(E) - b|| / ||b|| is below this.
        time_limit: seconds (None: none; a limit makes the result depend on the machine's speed), tested
            inside L-BFGS and after each update.

    Returns:
        (W_1, ..., W_N) detached, and metrics: ``trace``, ``relative_residual``, ``outer_iterations``.
    """
    from flatminima.objectives import DeepFactorization

    d1, d2 = instance.shape
    objective = DeepFactorization(instance, depth=depth, widths=max(d1, d2) if depth > 1 else None)
    shapes = objective.shapes
    x = torch.cat(
        [
            (torch.randn(*shape, generator=generator, dtype=instance.dtype) / shape[1] ** 0.5).reshape(-1)
            for shape in shapes
        ]
    )
    b_norm = float(torch.linalg.vector_norm(instance.observations).clamp_min(1e-300))
    multiplier = torch.zeros_like(instance.observations)
    penalty, previous, relative = 10.0, float("inf"), float("inf")
    start = time.perf_counter()
    deadline = Deadline(time_limit, start=start)
    outer = 0
    while outer < max_outer:
        outer += 1

        def lagrangian(
            W: tuple[torch.Tensor, ...], multiplier: torch.Tensor = multiplier, mu: float = penalty
        ) -> torch.Tensor:
            r = objective.residual(W)
            return objective.hessian_trace(W) + multiplier @ r + 0.5 * mu * (r @ r)

        outcome = minimize_lbfgs(
            _flat_autograd(lagrangian, shapes),
            x,
            gradient_tolerance=1e-13,
            max_iterations=inner_iterations,
            max_evaluations=int(1.25 * inner_iterations),
            memory=30,
            change_tolerance=1e-15,
            deadline=deadline,
        )
        x = outcome.x
        with torch.no_grad():
            r = objective.residual(_split(x, shapes))
            relative = float(torch.linalg.vector_norm(r)) / b_norm
            multiplier = multiplier + penalty * r
            if relative > 0.25 * previous:
                penalty *= 10.0
            previous = relative
        if relative < feasibility or deadline.expired():
            break
    W = _split(x, shapes)
    params = tuple(w.clone() for w in W)
    with torch.no_grad():
        trace = float(objective.hessian_trace(params))
    return params, {
        "trace": trace,
        "relative_residual": relative,
        "outer_iterations": outer,
        "search_time": time.perf_counter() - start,
    }


def _split(x: torch.Tensor, shapes: Sequence[tuple[int, ...]]) -> tuple[torch.Tensor, ...]:
    """The flat vector x as tensors of the given shapes (views)."""
    sizes = [int(torch.Size(shape).numel()) for shape in shapes]
    return tuple(piece.view(shape) for piece, shape in zip(x.split(sizes), shapes, strict=True))


def _flat_autograd(
    loss: Callable[[tuple[torch.Tensor, ...]], torch.Tensor], shapes: Sequence[tuple[int, ...]]
) -> Callable[[torch.Tensor], tuple[float, torch.Tensor]]:
    """The function x -> (loss(W), d loss / dx) that L-BFGS takes, W the tensors of x (autograd)."""

    def fun(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_()
            value = loss(_split(leaf, shapes))
            (gradient,) = torch.autograd.grad(value, leaf)
        return float(value.detach()), gradient

    return fun


def _deep_flat(instance: Instance, options: Mapping[str, Any], context: MethodContext) -> Metrics:
    """The ``deep_flat`` method: flattest depth-N factorization; compare with the closed form and NNM."""
    from flatminima.objectives import DeepFactorization, deep_trace_lower_bound

    depth = int(options.get("depth", 2))
    feasibility = float(options.get("feasibility", 1e-11))
    params, metrics = minimize_deep_trace(
        instance,
        depth=depth,
        generator=context.generators["init"],
        max_outer=int(options.get("max_outer", 30)),
        inner_iterations=int(options.get("inner_iterations", 1000)),
        feasibility=feasibility,
        time_limit=float(options["time_limit"]) if "time_limit" in options else None,
    )
    d1, d2 = instance.shape
    objective = DeepFactorization(instance, depth=depth, widths=max(d1, d2) if depth > 1 else None)
    E = objective.end_to_end(params)
    m = instance.num_measurements
    metrics.update(
        depth=depth,
        error=instance.recovery_error(E),
        nuclear_norm=float(torch.linalg.matrix_norm(E, ord="nuc")),
        balanced_trace=float(objective.hessian_trace(balanced_factors(E, depth))),
    )
    full_observation = instance.kind == "matrix_completion" and m == d1 * d2
    if full_observation:
        closed_form = 2.0 / m * float(deep_trace_lower_bound(E, depth))
        metrics.update(
            closed_form_trace=closed_form,
            trace_ratio=metrics["trace"] / closed_form,
            trace_excess=metrics["trace"] / closed_form - 1.0,
        )
    if options.get("compare_nuclear_norm", not full_observation):
        from flatminima.solvers import solve_nuclear_norm

        nuclear = solve_nuclear_norm(instance)
        if nuclear.status.value == "converged":
            metrics.update(
                distance_to_nuclear_norm=float(torch.linalg.matrix_norm(E - nuclear.matrix)),
                error_nuclear_norm=instance.recovery_error(nuclear.matrix),
            )
    if not metrics["relative_residual"] < 1e3 * feasibility:
        raise TrialFailed(
            f"{context.label}: the augmented Lagrangian stopped at relative residual "
            f"{metrics['relative_residual']:.1e} after {metrics['outer_iterations']} updates "
            f"({metrics['search_time']:.0f} s)",
            metrics,
        )
    return metrics


register_method(
    Method(
        name="deep_flat",
        summary="flattest depth-N factorization E = W_N ... W_1 of the measurements (option depth = N)",
        function=_deep_flat,
        kinds=("matrix_sensing", "bilinear_sensing", "matrix_completion"),
        options={
            "depth": int,
            "max_outer": int,
            "inner_iterations": int,
            "feasibility": float,
            "time_limit": float,
            "compare_nuclear_norm": bool,
        },
    )
)
