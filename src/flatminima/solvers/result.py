"""Solver outcomes shared by every solver family: the status enum, KKT certificates, convex results.

A convex solve of ``min ||Z||_* s.t. Z in C`` returns a :class:`ConvexResult`. Its solution is kept in
factored form Z = U diag(s) V^T (exact rank for the first-order solvers); the recovered matrix is
X = D1^{-1} Z D2^{-1}, and :meth:`ConvexResult.factors` maps Z back to factors by Theorem 3.2 of Ding et al.:
L = D1^{-1} U diag(s)^{1/2}, R = D2^{-1} V diag(s)^{1/2}, zero-padded to the requested width.

The :class:`Certificate` carries the KKT residuals of the returned primal-dual pair (Z, G = B^*(lambda)):
primal residual (distance to the constraint set, e.g. ||B(Z) - b||), dual residual
max(0, ||G||_op - 1), and duality gap |p - d|; a status is ``CONVERGED`` only when all three relative
residuals are within the tolerance.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Theorem 3.2).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from collections.abc import Mapping
from typing import Any

import torch

from flatminima._checks import check_finite_entries, check_real, check_tensor
from flatminima.errors import InputDataError, InputTypeError, MissingGroundTruthError


class Status(enum.Enum):
    """How a solver stopped. Only ``CONVERGED`` means that the certificate met its tolerance."""

    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    TIME_LIMIT = "time_limit"
    INACCURATE = "inaccurate"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    DIVERGED = "diverged"


@dataclasses.dataclass(frozen=True)
class Certificate:
    """KKT residuals of a primal-dual pair for min ||Z||_* s.t. Z in C (or the l_p depth problem).

    Attributes:
        primal_residual: distance-type infeasibility of Z (||B(Z) - b||, or its excess over eps or over
            the l1 radius).
        dual_residual: max(0, ||G||_op - 1) for the dual matrix G = B^*(lambda) (for the l_p problem the
            dual infeasibility of A^T lambda). It is relative by construction (the bound is 1).
        duality_gap: |primal objective - dual objective|.
        primal_objective: ||Z||_* (or the l_p objective).
        dual_objective: the dual function at lambda (e.g. <lambda, b>).
        relative_primal_residual: primal_residual / max(||b||, tiny).
        relative_duality_gap: duality_gap / max(|primal|, |dual|, tiny).
        dual_norm: ||G||_op (exact from an SVD, or a Lanczos estimate; see ``dual_norm_exact``).
        dual_norm_exact: whether ``dual_norm`` comes from a full SVD / eigendecomposition.
        tangent_residual: ||P_T(G) - U V^T||_F, the subgradient condition on the tangent space of Z
            (nan when not computed).
        tolerance: the relative tolerance the status was judged by.
    """

    primal_residual: float
    dual_residual: float
    duality_gap: float
    primal_objective: float
    dual_objective: float
    relative_primal_residual: float
    relative_duality_gap: float
    dual_norm: float
    dual_norm_exact: bool
    tangent_residual: float
    tolerance: float

    @property
    def relative_dual_residual(self) -> float:
        """The dual residual, already relative (the dual constraint is ||G||_op <= 1)."""
        return self.dual_residual

    @property
    def max_relative_residual(self) -> float:
        """The largest of the three relative KKT residuals (nan-safe: nan counts as inf)."""
        values = (self.relative_primal_residual, self.dual_residual, self.relative_duality_gap)
        return max(math.inf if math.isnan(v) else v for v in values)

    @property
    def satisfied(self) -> bool:
        """True when every relative KKT residual is <= ``tolerance``."""
        return self.max_relative_residual <= self.tolerance

    def as_dict(self) -> dict[str, float | bool]:
        """The fields and the relative residuals as a plain dict (for stores and logs)."""
        out: dict[str, float | bool] = dict(dataclasses.asdict(self))
        out["max_relative_residual"] = self.max_relative_residual
        out["satisfied"] = self.satisfied
        return out


def _mul_left(inverse: torch.Tensor | None, P: torch.Tensor) -> torch.Tensor:
    """D^{-1} P for D^{-1} given as None (identity), a diagonal vector, or a matrix."""
    if inverse is None:
        return P
    if inverse.ndim == 1:
        return inverse.unsqueeze(-1) * P
    return inverse @ P


@dataclasses.dataclass(frozen=True, eq=False)
class ConvexResult:
    """The solution of a flat (P_flat) or norm-minimal (NNM) convex relaxation.

    The solution Z of min ||Z||_* s.t. B(Z) = b (B = A(D1^{-1} . D2^{-1}); D = I for NNM) is stored as
    Z = U diag(s) V^T. For the symmetric relaxation of quadratic networks V = U diag(sign) so that
    Z = U diag(sign * s) U^T.

    Attributes:
        kind: the problem kind of the instance (e.g. ``"matrix_sensing"``).
        relaxation: ``"flat"`` or ``"nuclear_norm"``.
        status: how the solver stopped (see :class:`Status`).
        certificate: KKT residuals of the returned pair.
        iterations: iterations of the main loop (ADMM, augmented Lagrangian inner steps, or IPM).
        wall_time: seconds spent in the solver (including the rescaling build).
        history: per-iteration records (residuals, penalty, rank, ...).
        backend: ``"torch"`` or ``"cvxpy"``.
        method: the algorithm (``"admm"``, ``"factor_search"``, ``"clarabel"``).
        left_singular_vectors, singular_values, right_singular_vectors: U (d1, r), s (r,), V (d2, r).
        left_rescaling_inverse, right_rescaling_inverse: D1^{-1}, D2^{-1} as a matrix, a diagonal
            vector, or None (identity).
        multiplier: the dual vector lambda (m,) when the constraint is linear, else None.
        dual_matrix: G = B^*(lambda) when it was formed densely, else None.
        symmetric: True for the symmetric relaxation (quadratic networks).
        rescaling_condition_number: kappa(D1, D2) (1 for NNM).
        message: a one-line account of how the solve ended.
        info: further solver-specific values.
    """

    kind: str
    relaxation: str
    status: Status
    certificate: Certificate
    iterations: int
    wall_time: float
    history: tuple[Mapping[str, float], ...]
    backend: str
    method: str
    left_singular_vectors: torch.Tensor
    singular_values: torch.Tensor
    right_singular_vectors: torch.Tensor
    left_rescaling_inverse: torch.Tensor | None
    right_rescaling_inverse: torch.Tensor | None
    multiplier: torch.Tensor | None
    dual_matrix: torch.Tensor | None
    symmetric: bool
    rescaling_condition_number: float
    message: str = ""
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    # ---- status --------------------------------------------------------------------------------
    @property
    def converged(self) -> bool:
        """True iff the status is ``CONVERGED`` (the certificate met its tolerance)."""
        return self.status is Status.CONVERGED

    @property
    def rank(self) -> int:
        """The rank r of the returned solution (number of stored singular values)."""
        return int(self.singular_values.numel())

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the solution (that of the instance)."""
        return self.singular_values.dtype

    @property
    def device(self) -> torch.device:
        """Device of the solution (that of the instance)."""
        return self.singular_values.device

    # ---- the solution --------------------------------------------------------------------------
    @functools.cached_property
    def solution(self) -> torch.Tensor:
        """Z = U diag(s) V^T, the solution of the relaxation in its own (rescaled) coordinates."""
        U, s, V = self.left_singular_vectors, self.singular_values, self.right_singular_vectors
        return (U * s) @ V.mT

    @functools.cached_property
    def matrix(self) -> torch.Tensor:
        """The recovered matrix X = D1^{-1} Z D2^{-1} (d1, d2)."""
        U, s, V = self.left_singular_vectors, self.singular_values, self.right_singular_vectors
        left = _mul_left(self.left_rescaling_inverse, U * s)
        right = _mul_left(self.right_rescaling_inverse, V)
        return left @ right.mT

    def recovery_error(self, ground_truth: torch.Tensor | None) -> float:
        """||X - M||_F for the ground truth M (a (d1, d2) tensor).

        Raises:
            MissingGroundTruthError: ``ground_truth`` is None (an instance built from data has none).
            InputDataError: M has the wrong shape or non-finite entries.
        """
        truth = check_ground_truth(ground_truth, tuple(self.matrix.shape))  # type: ignore[arg-type]
        return float(torch.linalg.matrix_norm(self.matrix - truth.to(self.matrix)))

    def recovered(self, ground_truth: torch.Tensor | None, tolerance: float = 1e-6) -> bool:
        """True iff the solve converged and ||X - M||_F < tolerance (the paper's success criterion).

        Raises:
            MissingGroundTruthError: ``ground_truth`` is None.
            InputDataError: a bad ground truth or a tolerance that is not a positive finite number.
        """
        check_real("tolerance", tolerance, low=0.0, low_open=True)
        return self.recovery_error(ground_truth) < tolerance and self.converged

    def factors(self, width: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors of the solution by Theorem 3.2, zero-padded to ``width`` columns.

        Non-symmetric problems: L = D1^{-1} U S^{1/2}, R = D2^{-1} V S^{1/2}, so L R^T = X and
        (1/2)(||D1 L||_F^2 + ||D2 R||_F^2) = ||Z||_*: the scaled Hessian trace 2(||D1 L||^2 + ||D2 R||^2)
        is 4 ||Z||_*, the smallest over all zero-loss factorizations. Symmetric (quadratic network)
        problems: the eigenvalues of Z = D X D are split by sign, U1 = D^{-1} Q_+ Lambda_+^{1/2},
        U2 = D^{-1} Q_- |Lambda_-|^{1/2}, so U1 U1^T - U2 U2^T = X; ``width`` is then an int (both) or
        a pair (k1, k2).

        Args:
            width: the number of columns k (>= rank), or (k1, k2) for the symmetric problem.

        Returns:
            (L, R) of shapes (d1, k), (d2, k); or (U1, U2) of shapes (d, k1), (d, k2).

        Raises:
            InputDataError: if a width is < 1 or smaller than the rank it must hold.

        Example:
            >>> # L, R = solve_flat(instance).factors(4); L @ R.T is the recovered matrix
        """
        if self.symmetric:
            return self._symmetric_factors(width)
        if not isinstance(width, int) or isinstance(width, bool):
            raise InputTypeError(f"width must be an integer; got width={width!r}.")
        if width < 1:
            raise InputDataError(f"width must be >= 1; got width={width}.")
        if width < self.rank:
            raise InputDataError(
                f"width must be >= the rank of the solution ({self.rank}); got width={width}. "
                "Theorem 3.2 needs k >= rank(X) for the factors to reproduce X."
            )
        root = self.singular_values.sqrt()
        L = _mul_left(self.left_rescaling_inverse, self.left_singular_vectors * root)
        R = _mul_left(self.right_rescaling_inverse, self.right_singular_vectors * root)
        return _pad(L, width), _pad(R, width)

    def _symmetric_factors(self, width: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(width, tuple):
            if len(width) != 2:
                raise InputDataError(f"width must be an int or a pair (k1, k2); got width={width!r}.")
            k1, k2 = width
        else:
            k1 = k2 = width
        for name, value in (("k1", k1), ("k2", k2)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputTypeError(f"width ({name}) must be an integer; got {value!r}.")
            if value < 1:
                raise InputDataError(f"width must be >= 1; got {name}={value}.")
        U, s, V = self.left_singular_vectors, self.singular_values, self.right_singular_vectors
        signs = (U * V).sum(0).sign()
        positive, negative = signs > 0, signs <= 0
        n_pos, n_neg = int(positive.sum()), int(negative.sum())
        if k1 < n_pos or k2 < n_neg:
            raise InputDataError(
                f"width must hold the {n_pos} positive and {n_neg} negative eigenvalues of D X D; "
                f"got (k1, k2)=({k1}, {k2})."
            )
        root = s.sqrt()
        U1 = _mul_left(self.left_rescaling_inverse, U[:, positive] * root[positive])
        U2 = _mul_left(self.left_rescaling_inverse, U[:, negative] * root[negative])
        return _pad(U1, k1), _pad(U2, k2)


def _pad(F: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the columns of F to ``width``."""
    extra = width - F.shape[-1]
    if extra == 0:
        return F
    return torch.cat([F, F.new_zeros(F.shape[0], extra)], dim=-1)


def check_ground_truth(
    ground_truth: object, shape: tuple[int, int], *, allow_vector: bool = False
) -> torch.Tensor:
    """Return the ground truth for a recovery metric, or raise a clear one-line error.

    Raises:
        MissingGroundTruthError: ``ground_truth`` is None.
        InputTypeError, InputDataError: not a floating tensor of ``shape`` (or, with ``allow_vector``,
            of shape (shape[0],)), or non-finite entries (the first one is named).
    """
    if ground_truth is None:
        raise MissingGroundTruthError(
            "recovery_error needs the ground truth M; got ground_truth=None (an Instance built from data "
            "has none). Compare against a known M, or use the certificate to judge the solve."
        )
    truth = check_tensor("ground_truth", ground_truth, finite=False)
    shapes = [shape, (shape[0],)] if allow_vector else [shape]
    if tuple(truth.shape) not in shapes:
        wanted = " or ".join(str(s) for s in shapes)
        raise InputDataError(
            f"ground_truth must have shape {wanted}; got ground_truth.shape={tuple(truth.shape)}."
        )
    return check_finite_entries("ground_truth", truth)
