"""Sweep methods built on the convex solvers: flat relaxation, nuclear norm, regularity, Hadamard depth.

Each wraps ``flatminima.solvers.solve_flat`` / ``solve_nuclear_norm`` (imported lazily, so a sweep
spec can be validated before the solvers are imported) and turns the result into metrics:

* ``error`` = ||X - M||_F with X the recovered matrix (for P_flat X = D1^{-1} Z D2^{-1});
* ``solver_status``, ``iterations``, ``solve_time``, ``max_relative_residual`` (the largest relative KKT
  residual of the certificate), ``solution_rank`` and ``kappa`` = kappa(D1, D2).

A solve whose status is not ``converged`` (no certificate within tolerance) raises :class:`TrialFailed`:
the trial is stored as failed with the solver's message and the sweep goes on.

Figure 4 of Ding et al. (``flat_regularity``) solves both programs on one draw and measures the flat
factors from the full SVD (k = d), L_f = D1^{-1} U S^{1/2}, R_f = D2^{-1} V S^{1/2}:

* norm gap (||L_f||_F^2 + ||R_f||_F^2) - 2 ||X_nuc||_* (>= 0 up to solver error; X_nuc the NNM solution);
* balancedness ||L_f^T L_f - R_f^T R_f||_F and ||.||_*, next to the Theorem 3.3 bounds
  2 kappa^2 ||M||_* and 2 kappa^2 (1 - kappa^{-2}) ||M||_*.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (eq. 19, Theorems 3.2-3.3, Sections 8-9).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from flatminima.errors import ConfigurationError
from flatminima.experiments.methods import (
    Method,
    MethodContext,
    Metrics,
    TrialFailed,
    finite_or_fail,
    register_method,
)
from flatminima.problems import Instance

_MATRIX_KINDS = ("matrix_sensing", "bilinear_sensing", "matrix_completion", "quadratic_network", "robust_pca")
_REGULARITY_KINDS = ("matrix_sensing", "bilinear_sensing", "matrix_completion")


def _solver(relaxation: str) -> Any:
    """The solver function for ``"flat"`` or ``"nuclear_norm"`` (lazy import)."""
    from flatminima import solvers

    return solvers.solve_flat if relaxation == "flat" else solvers.solve_nuclear_norm


def _check_solver_options(relaxation: str, reserved: tuple[str, ...] = ()) -> Any:
    """Return a checker that accepts only keyword arguments of the solver function."""

    def check(options: Mapping[str, Any]) -> None:
        try:
            parameters = inspect.signature(_solver(relaxation)).parameters
        except (ImportError, AttributeError):  # solvers not installed yet: checked at run time
            return
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        names = sorted(n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
        for key in options:
            if key == "generator":
                raise ConfigurationError("generator: set by the trial's solver stream, not an option")
            if key in reserved or accepts_any:
                continue
            if key not in names:
                raise ConfigurationError(f"{key}: unknown solver option; valid: {', '.join(names)}")

    return check


def _solve(
    instance: Instance, relaxation: str, options: Mapping[str, Any], context: MethodContext, label: str
) -> tuple[Any, Metrics]:
    """Solve one relaxation; return (result, metrics); raise TrialFailed without a certificate."""
    result = _solver(relaxation)(instance, generator=context.generators["solver"], **options)
    certificate = result.certificate
    metrics: Metrics = {
        "error": instance.recovery_error(result.matrix),
        "solver_status": result.status.value,
        "iterations": int(result.iterations),
        "solve_time": float(result.wall_time),
        "max_relative_residual": float(certificate.max_relative_residual),
        "solution_rank": int(getattr(result, "rank", -1)),
        "kappa": float(getattr(result, "rescaling_condition_number", float("nan"))),
    }
    finite_or_fail(metrics, label, "error")
    if result.status.value != "converged":
        message = getattr(result, "message", "") or ""
        raise TrialFailed(
            f"{label}: solver stopped with status {result.status.value} (largest relative KKT residual "
            f"{certificate.max_relative_residual:.1e}, tolerance {certificate.tolerance:.0e})"
            + (f": {message}" if message else ""),
            metrics,
        )
    return result, metrics


def _convex(relaxation: str, backend: str | None) -> Any:
    def run(instance: Instance, options: Mapping[str, Any], context: MethodContext) -> Metrics:
        kwargs = dict(options)
        if backend is not None:
            kwargs["backend"] = backend
        _, metrics = _solve(instance, relaxation, kwargs, context, context.label)
        return metrics

    run.__doc__ = f"Solve the {relaxation} relaxation ({backend or 'torch'} backend) and report its error."
    return run


for _relaxation, _summary in (
    ("flat", "flat relaxation P_flat: min ||Z||_* s.t. A(D1^-1 Z D2^-1) = b"),
    ("nuclear_norm", "nuclear norm minimization: min ||X||_* s.t. A(X) = b"),
):
    register_method(
        Method(
            name=_relaxation,
            summary=_summary,
            function=_convex(_relaxation, None),
            kinds=_MATRIX_KINDS,
            options={"*": object},
            check_options=_check_solver_options(_relaxation, ("backend",)),
        )
    )
    register_method(
        Method(
            name=f"{_relaxation}_cvxpy",
            summary=_summary + " (CVXPY + Clarabel)",
            function=_convex(_relaxation, "cvxpy"),
            kinds=_MATRIX_KINDS,
            options={"*": object},
            check_options=_check_solver_options(_relaxation, ()),
        )
    )


def _flat_regularity(instance: Instance, options: Mapping[str, Any], context: MethodContext) -> Metrics:
    """P_flat and NNM on one draw; norm gap and balancedness of the flat factors with k = d (Figure 4)."""
    from flatminima.objectives import balancedness, regularity_bounds

    flat, flat_metrics = _solve(instance, "flat", options, context, f"{context.label} (flat)")
    nuclear, nuclear_metrics = _solve(
        instance, "nuclear_norm", options, context, f"{context.label} (nuclear norm)"
    )
    d1, d2 = instance.shape
    L, R = flat.factors(max(d1, d2))
    X_nuc = nuclear.matrix
    nuclear_norm_nuc = float(torch.linalg.matrix_norm(X_nuc, ord="nuc"))
    norm_gap = float(L.square().sum() + R.square().sum()) - 2.0 * nuclear_norm_nuc
    kappa = flat_metrics["kappa"]
    truth_nuclear = float(
        torch.linalg.matrix_norm(instance.require_ground_truth("the regularity method"), ord="nuc")
    )
    bound_norm, bound_balance = regularity_bounds(kappa, truth_nuclear)
    metrics: Metrics = {
        **flat_metrics,
        "error_nuclear_norm": nuclear_metrics["error"],
        "norm_gap": norm_gap,
        "balancedness": float(balancedness(L, R, norm="fro")),
        "balancedness_nuclear": float(balancedness(L, R, norm="nuc")),
        "factor_norm": float(L.square().sum() + R.square().sum()),
        "bound_factor_norm": bound_norm,
        "bound_balancedness": bound_balance,
        "recovered_flat": flat_metrics["error"] < context.tolerance,
        "recovered_nuclear_norm": nuclear_metrics["error"] < context.tolerance,
    }
    return finite_or_fail(metrics, context.label, "norm_gap", "balancedness")


register_method(
    Method(
        name="flat_regularity",
        summary="P_flat and NNM on one draw: norm gap and balancedness of the flat factors (k = d)",
        function=_flat_regularity,
        kinds=_REGULARITY_KINDS,
        options={"*": object},
        check_options=_check_solver_options("flat"),
    )
)


def _flat_hadamard(instance: Instance, options: Mapping[str, Any], context: MethodContext) -> Metrics:
    """Flat solution of x = v_1 ⊙ ... ⊙ v_k: min sum_j D_jj^2 |x_j|^(2 - 2/k) s.t. A x = b."""
    kwargs = dict(options)
    depth = int(kwargs.pop("depth", 2))
    result = _solver("flat")(instance, depth=depth, generator=context.generators["solver"], **kwargs)
    x = result.matrix.reshape(-1)
    truth = instance.require_ground_truth("the sparse recovery method").reshape(-1).to(x)
    magnitude = float(x.abs().max()) if x.numel() else 0.0
    metrics: Metrics = {
        "error": float(torch.linalg.vector_norm(x - truth)),
        "depth": depth,
        "exponent": 2.0 - 2.0 / depth,
        "nonzeros": int((x.abs() > 1e-6 * max(magnitude, 1e-300)).sum()),
        "true_nonzeros": int((truth != 0).sum()),
        "solver_status": result.status.value,
        "iterations": int(result.iterations),
        "solve_time": float(result.wall_time),
    }
    finite_or_fail(metrics, context.label, "error")
    if result.status.value != "converged":
        raise TrialFailed(f"{context.label}: solver stopped with status {result.status.value}", metrics)
    return metrics


register_method(
    Method(
        name="flat_hadamard",
        summary="flat solution of sparse recovery under x = v_1 ⊙ ... ⊙ v_k (option depth = k)",
        function=_flat_hadamard,
        kinds=("sparse_recovery",),
        options={"*": object},
        check_options=_check_solver_options("flat", ("depth",)),
    )
)
