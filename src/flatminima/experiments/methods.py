"""Methods a sweep can run on an instance: a registry from names to functions returning metrics.

A method maps ``(instance, options, context) -> metrics`` (a flat dict of JSON values). It raises
:class:`TrialFailed` (with whatever metrics it has) when its solver stops without a certificate, and any
other exception for a crash; :func:`flatminima.experiments.run_trial` stores both as failed trials.

Built-in methods (``flatminima sweep`` and the reproductions name them):

| name | what it computes |
|---|---|
| ``flat`` | the flat relaxation P_flat: min ||Z||_* s.t. A(D1^{-1} Z D2^{-1}) = b (torch solver) |
| ``nuclear_norm`` | plain nuclear norm minimization min ||X||_* s.t. A(X) = b (torch solver) |
| ``flat_cvxpy``, ``nuclear_norm_cvxpy`` | the same programs through CVXPY + Clarabel (``reference`` extra) |
| ``flat_regularity`` | P_flat and NNM on one draw; norm gap and balancedness of the flat factors (k = d) |
| ``flat_hadamard`` | flat solution of sparse recovery under x = v_1 ⊙ ... ⊙ v_k (option ``depth``) |
| ``deep_flat`` | flattest deep factorization E = W_N ... W_1 of the measurements (option ``depth``) |
| ``least_norm`` | the minimum-Frobenius-norm interpolant A^*(A A^*)^{-1} b (baseline, conjugate gradients) |

A user method is named ``"package.module:function"``; the function has the signature above and must be
importable on every Dask worker.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Sections 3-9).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from flatminima.errors import ConfigurationError, FlatminimaError
from flatminima.problems import Instance
from flatminima.solvers.convex.polish import conjugate_gradient

Metrics = dict[str, Any]


class TrialFailed(FlatminimaError):
    """A method finished without a valid result (no certificate, divergence); carries partial metrics."""

    def __init__(self, message: str, metrics: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.metrics: Metrics = dict(metrics or {})


@dataclasses.dataclass(frozen=True)
class MethodContext:
    """What a method receives besides the instance.

    Attributes:
        generators: independent CPU generators ``"init"`` and ``"solver"`` (the instance has its own).
        tolerance: the success threshold on the Frobenius recovery error.
        label: the method's label in the sweep (for messages).
    """

    generators: Mapping[str, torch.Generator]
    tolerance: float
    label: str


MethodFunction = Callable[[Instance, Mapping[str, Any], MethodContext], Metrics]


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        name: the registry name.
        summary: one line for ``--help`` and error messages.
        function: ``(instance, options, context) -> metrics``.
        kinds: problem kinds it accepts (None: every kind).
        options: allowed option names with their expected type (int, float, bool, str or dict);
            the name ``"*"`` accepts any option.
        check_options: a further check of the options (raises ConfigurationError), e.g. against the
            solver's keyword arguments.
    """

    name: str
    summary: str
    function: MethodFunction
    kinds: tuple[str, ...] | None = None
    options: Mapping[str, type] = dataclasses.field(default_factory=dict)
    check_options: Callable[[Mapping[str, Any]], None] | None = None


#: the registry: name -> Method.
METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (replacing one of the same name) and return it."""
    METHODS[method.name] = method
    return method


def resolve_method(name: str) -> Method:
    """Return the registered method ``name`` or import ``"module:function"``.

    Raises:
        ConfigurationError: for an unknown name (listing the valid ones) or an unimportable reference.
    """
    if name in METHODS:
        return METHODS[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ConfigurationError(f"cannot import method {name!r}: {error}") from None
        if not callable(function):
            raise ConfigurationError(f"method {name!r} is not callable")
        return Method(name=name, summary=f"user method {name}", function=function, options={"*": object})
    valid = ", ".join(sorted(METHODS))
    raise ConfigurationError(f"unknown solver {name!r}; valid: {valid} (or 'module:function')")


# ---- helpers shared by the built-in methods -------------------------------------------------------
def finite_or_fail(metrics: Metrics, label: str, *names: str) -> Metrics:
    """Raise :class:`TrialFailed` if one of ``metrics[name]`` is NaN or infinite (divergence)."""
    for name in names:
        value = metrics.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            raise TrialFailed(f"{label}: {name} is {value} (diverged)", metrics)
    return metrics


def conjugate_gradient_least_norm(
    instance: Instance, *, tolerance: float = 1e-13
) -> tuple[torch.Tensor, float]:
    """The minimum-Frobenius-norm solution X = A^*(y), (A A^*) y = b, by conjugate gradients.

    Returns:
        (X, relative residual ||A(X) - b|| / ||b||).
    """
    A, b = instance.operator, instance.observations
    # the solvers' conjugate gradients: breakdown guard, best iterate kept once rounding stalls
    y = conjugate_gradient(
        lambda p: A.apply(A.adjoint(p)), b, tolerance=tolerance, max_iterations=4 * b.numel() + 10
    )
    X = A.adjoint(y)
    residual = float(torch.linalg.vector_norm(A.apply(X) - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))
    return X, residual


def _least_norm(instance: Instance, options: Mapping[str, Any], context: MethodContext) -> Metrics:
    """Minimum-Frobenius-norm interpolant (the kernel-regime baseline): it recovers only when m >= d1 d2."""
    X, residual = conjugate_gradient_least_norm(instance, tolerance=float(options.get("cg_tolerance", 1e-13)))
    metrics: Metrics = {"error": instance.recovery_error(X), "relative_residual": residual}
    finite_or_fail(metrics, context.label, "error", "relative_residual")
    if residual > 1e-8:
        raise TrialFailed(
            f"{context.label}: conjugate gradients stalled at relative residual {residual:.1e}", metrics
        )
    return metrics


register_method(
    Method(
        name="least_norm",
        summary="minimum-Frobenius-norm interpolant A^*(A A^*)^{-1} b (baseline)",
        function=_least_norm,
        kinds=(
            "matrix_sensing",
            "bilinear_sensing",
            "matrix_completion",
            "quadratic_network",
            "sparse_recovery",
        ),
        options={"cg_tolerance": float},
    )
)
