"""Diagnostics of factorized solutions: recovery error, balancedness, norm gap, kappa of D1, D2.

Theorem 3.3 of Ding et al. (2024): if alpha1 I <= D1, D2 <= alpha2 I and kappa = alpha2 / alpha1, every
flat solution (L_f, R_f) satisfies

* near norm-minimal: ||L_f||_F^2 + ||R_f||_F^2 <= kappa^2 min_S (||L||_F^2 + ||R||_F^2) <= 2 kappa^2 ||M||_*;
* near balanced: ||L_f^T L_f - R_f^T R_f||_* <= 2 kappa^2 (1 - kappa^{-2}) ||M||_*.

The functions below measure each side; :func:`regularity_bounds` evaluates the right-hand sides.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024, Theorem 3.3 (arXiv:2203.03756).
"""

from __future__ import annotations

import torch

from flatminima._checks import check_real, check_same_dtype_device, check_tensor
from flatminima.errors import InputDataError, InputTypeError
from flatminima.operators import MeasurementOperator
from flatminima.problems import Instance

_NORMS = ("fro", "nuc")


def _check_factors(L: torch.Tensor, R: torch.Tensor) -> None:
    check_tensor("L", L, shape=(None, None))
    check_tensor("R", R, shape=(None, L.shape[1]))
    check_same_dtype_device(L=L, R=R)


def recovery_error(
    estimate: torch.Tensor, ground_truth: torch.Tensor, *, relative: bool = False
) -> torch.Tensor:
    """Return ||estimate - ground_truth||_F (divided by ||ground_truth||_F when ``relative``).

    Args:
        estimate: the recovered matrix (e.g. ``objective.end_to_end(params)``).
        ground_truth: the true matrix, same shape.
        relative: divide by ||ground_truth||_F.

    Returns:
        A 0-dim tensor.

    Raises:
        InputDataError: on different shapes, dtypes or devices, or non-finite entries.

    Example:
        >>> M = torch.eye(2, dtype=torch.float64)
        >>> float(recovery_error(2 * M, M, relative=True))
        1.0
    """
    check_tensor("estimate", estimate)
    check_tensor("ground_truth", ground_truth, shape=tuple(estimate.shape))
    check_same_dtype_device(estimate=estimate, ground_truth=ground_truth)
    error = torch.linalg.vector_norm(estimate - ground_truth)
    if relative:
        error = error / torch.linalg.vector_norm(ground_truth)
    return error


def balancedness(L: torch.Tensor, R: torch.Tensor, *, norm: str = "fro") -> torch.Tensor:
    """Return ||L^T L - R^T R|| in the Frobenius (``"fro"``) or nuclear (``"nuc"``) norm.

    Zero iff (L, R) is balanced (same singular values and right singular vectors). With A = identity
    every norm-minimal (= flat) factorization is balanced (Ding et al. 2024, Lemma 2.2).

    Args:
        L: (d1, k).
        R: (d2, k).
        norm: ``"fro"`` or ``"nuc"``.

    Returns:
        A 0-dim tensor.

    Raises:
        InputDataError: on mismatched widths, dtypes or devices, non-finite entries, or an unknown norm.

    Example:
        >>> L = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> float(balancedness(L, L.flip(0), norm="nuc"))
        0.0
    """
    _check_factors(L, R)
    if norm not in _NORMS:
        raise InputDataError(f"norm must be one of {_NORMS}; got norm={norm!r}.")
    return torch.linalg.matrix_norm(L.mT @ L - R.mT @ R, ord=norm)


def norm_gap(L: torch.Tensor, R: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Return ||L||_F^2 + ||R||_F^2 - 2 ||X||_*, the excess over a norm-minimal factorization.

    By the variational formula ||X||_* = min_{L R^T = X} (||L||^2 + ||R||^2) / 2, the gap with the
    default reference X = L R^T is >= 0 and vanishes iff (L, R) is a norm-minimal factorization of its
    own product. Pass ``reference`` = the nuclear-norm-minimal interpolant (NNM solution) to measure the
    distance to norm-minimality over the whole solution set S (Theorem 3.3).

    Args:
        L: (d1, k).
        R: (d2, k).
        reference: the matrix X (d1, d2); defaults to L R^T.

    Returns:
        A 0-dim tensor.

    Raises:
        InputDataError: on mismatched shapes, dtypes or devices, or non-finite entries.

    Example:
        >>> L = torch.tensor([[2.0], [0.0]], dtype=torch.float64)
        >>> float(norm_gap(L, L / 2))  # 4 + 1 - 2 * 2
        1.0
    """
    _check_factors(L, R)
    if reference is None:
        reference = L @ R.mT
    else:
        check_tensor("reference", reference, shape=(L.shape[0], R.shape[0]))
        check_same_dtype_device(L=L, reference=reference)
    nuclear = torch.linalg.matrix_norm(reference, ord="nuc")
    return L.square().sum() + R.square().sum() - 2.0 * nuclear


def kappa(source: Instance | MeasurementOperator) -> float:
    """Return the condition number kappa = alpha2 / alpha1 of the rescaling matrices D1, D2.

    alpha1, alpha2 are the tightest constants with alpha1 I <= D1, D2 <= alpha2 I (the square roots of
    the extreme eigenvalues of D1^2 and D2^2 together); ``inf`` when D1 or D2 is singular (e.g. an
    unobserved row in matrix completion).

    Args:
        source: an Instance or a MeasurementOperator.

    Raises:
        InputTypeError: if ``source`` is neither.

    Example:
        >>> from flatminima.operators import IdentityOperator
        >>> kappa(IdentityOperator((3, 4)))
        1.0
    """
    if isinstance(source, Instance):
        source = source.operator
    if not isinstance(source, MeasurementOperator):
        raise InputTypeError(
            f"source must be an Instance or a MeasurementOperator; got {type(source).__name__}."
        )
    return source.rescaling_condition_number()


def regularity_bounds(kappa_value: float, nuclear_norm: float) -> tuple[float, float]:
    """Return the Theorem 3.3 bounds (2 kappa^2 ||M||_*, 2 kappa^2 (1 - kappa^{-2}) ||M||_*).

    The first bounds ||L_f||^2 + ||R_f||^2 of any flat solution, the second its nuclear balancedness
    ||L_f^T L_f - R_f^T R_f||_* (the constant 1 - kappa^{-2} of Lemma 3.4 with alpha = alpha2).

    Args:
        kappa_value: kappa >= 1 (``inf`` gives ``inf`` bounds).
        nuclear_norm: ||M||_* >= 0 of the ground truth.

    Example:
        >>> regularity_bounds(1.0, 3.0)
        (6.0, 0.0)
    """
    if kappa_value == float("inf"):
        return float("inf"), float("inf")
    k = check_real("kappa_value", kappa_value, low=1.0)
    nuc = check_real("nuclear_norm", nuclear_norm, low=0.0)
    return 2.0 * k**2 * nuc, 2.0 * (k**2 - 1.0) * nuc
