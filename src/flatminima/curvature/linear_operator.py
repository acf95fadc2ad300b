"""Symmetric linear operators on flat vectors: the interface every curvature estimator consumes.

An estimator only needs ``size``, ``dtype``, ``device`` and ``matmat(V)`` for V of shape (size, b);
:class:`HessianOperator <flatminima.curvature.hessian.HessianOperator>` is the main implementation,
:class:`MatrixOperator` wraps an explicit symmetric matrix (tests, Gauss-Newton matrices) and
:class:`ScaledOperator` gives S H S for a diagonal S (the block-weighted trace of Ding et al.).
"""

from __future__ import annotations

import abc

import numpy as np
import scipy.sparse.linalg
import torch

from flatminima._checks import check_int_in_range, check_tensor
from flatminima.errors import InputDataError


class LinearOperator(abc.ABC):
    """A symmetric linear map H: R^n -> R^n applied to blocks of vectors.

    Subclasses implement :meth:`_matmat` for an already validated (n, b) tensor and the properties
    ``size``, ``dtype`` and ``device``.
    """

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """The dimension n."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        """The floating dtype of vectors the operator acts on."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """The device of vectors the operator acts on."""

    @property
    def shape(self) -> tuple[int, int]:
        """(n, n)."""
        return self.size, self.size

    @abc.abstractmethod
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H V for a validated V of shape (n, b)."""

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return H V for V of shape (n, b) (b vectors at once; Hessians vectorize them)."""
        self._check_vectors("V", V, ndim=2)
        return self._matmat(V)

    def quadratic_forms(self, V: torch.Tensor) -> torch.Tensor:
        """Return (v_j^T H v_j)_j for the columns of V (n, b), shape (b,): all Hutchinson needs.

        By default sum(V * (H V), dim=0); operators that know a cheaper exact form (e.g. the Hessian of a
        least-squares objective, one data pass instead of two) override :meth:`_quadratic_forms`.
        """
        self._check_vectors("V", V, ndim=2)
        return self._quadratic_forms(V)

    def _quadratic_forms(self, V: torch.Tensor) -> torch.Tensor:
        return (V * self._matmat(V)).sum(dim=0)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Return H v for v of shape (n,)."""
        self._check_vectors("v", v, ndim=1)
        return self._matmat(v[:, None])[:, 0]

    def to_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """Return a float64 ``scipy.sparse.linalg.LinearOperator`` (for eigsh, cg, ...).

        NumPy inputs are converted to this operator's dtype and device; results come back as float64.
        """

        def matmat(X: np.ndarray) -> np.ndarray:
            V = torch.as_tensor(np.asarray(X, dtype=np.float64).reshape(self.size, -1))
            HV = self._matmat(V.to(device=self.device, dtype=self.dtype))
            return HV.detach().to(device="cpu", dtype=torch.float64).numpy()

        def matvec(x: np.ndarray) -> np.ndarray:
            return matmat(np.asarray(x).reshape(-1, 1))[:, 0]

        return scipy.sparse.linalg.LinearOperator(
            shape=self.shape, matvec=matvec, rmatvec=matvec, matmat=matmat, dtype=np.float64
        )

    def dense(self, *, max_size: int = 4096, batch_size: int = 64) -> torch.Tensor:
        """Return H as a dense (n, n) tensor by batched basis products (small problems only).

        Raises:
            InputDataError: if n > ``max_size`` (use the stochastic estimators instead).
        """
        check_int_in_range("batch_size", batch_size, low=1)
        if self.size > max_size:
            raise InputDataError(
                f"dense() builds an n x n matrix; n = {self.size} exceeds max_size = {max_size}. "
                "Use the matrix-free estimators, or pass a larger max_size."
            )
        columns = [self._matmat(E) for E in basis_blocks(self, batch_size)]
        return torch.cat(columns, dim=1)

    def _check_vectors(self, name: str, value: torch.Tensor, *, ndim: int) -> None:
        check_tensor(name, value, finite=False)
        if value.ndim != ndim or value.shape[0] != self.size:
            want = f"({self.size},)" if ndim == 1 else f"({self.size}, b)"
            raise InputDataError(
                f"{name} must have shape {want} for this operator of size {self.size}; "
                f"got {name}.shape={tuple(value.shape)}."
            )
        if value.dtype != self.dtype or value.device != self.device:
            raise InputDataError(
                f"expected {name} on the operator's device and dtype ({self.device}, {self.dtype}); "
                f"got {name} on {value.device} with dtype {value.dtype}."
            )


def basis_blocks(operator: LinearOperator, batch_size: int) -> list[torch.Tensor]:
    """The identity matrix of size n as (n, b) column blocks of at most ``batch_size`` columns."""
    n = operator.size
    blocks = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        E = torch.zeros(n, stop - start, dtype=operator.dtype, device=operator.device)
        E[torch.arange(start, stop), torch.arange(stop - start)] = 1.0
        blocks.append(E)
    return blocks


class MatrixOperator(LinearOperator):
    """An explicit symmetric matrix as a :class:`LinearOperator`.

    Args:
        matrix: a symmetric (n, n) floating tensor.

    Raises:
        InputDataError: if ``matrix`` is not square or not symmetric.

    Example:
        >>> H = MatrixOperator(torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)))
        >>> H.matvec(torch.ones(2, dtype=torch.float64))
        tensor([3., 1.], dtype=torch.float64)
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        check_tensor("matrix", matrix, shape=(None, None))
        if matrix.shape[0] != matrix.shape[1]:
            raise InputDataError(f"matrix must be square; got matrix.shape={tuple(matrix.shape)}.")
        scale = float(matrix.abs().max()) if matrix.numel() else 0.0
        tol = 100 * torch.finfo(matrix.dtype).eps * max(scale, 1e-300)
        if float((matrix - matrix.mT).abs().max()) > tol:
            raise InputDataError("matrix must be symmetric; got max |matrix - matrix.T| above tolerance.")
        self.matrix = matrix

    @property
    def size(self) -> int:
        """The dimension n."""
        return int(self.matrix.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        """The matrix's dtype."""
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        """The matrix's device."""
        return self.matrix.device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.matrix @ V


class ScaledOperator(LinearOperator):
    """S H S for a diagonal S = diag(scale): its trace is sum_i scale_i^2 H_ii.

    With scale_i = 1 / sqrt(rows of the block holding i) this is the scaled trace of Ding et al.

    Args:
        operator: the operator H.
        scale: the diagonal of S, shape (n,), on H's device and dtype.
    """

    def __init__(self, operator: LinearOperator, scale: torch.Tensor) -> None:
        operator._check_vectors("scale", scale, ndim=1)
        self.operator = operator
        self.scale = scale

    @property
    def size(self) -> int:
        """The dimension n."""
        return self.operator.size

    @property
    def dtype(self) -> torch.dtype:
        """The underlying operator's dtype."""
        return self.operator.dtype

    @property
    def device(self) -> torch.device:
        """The underlying operator's device."""
        return self.operator.device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.scale[:, None] * self.operator._matmat(self.scale[:, None] * V)

    def _quadratic_forms(self, V: torch.Tensor) -> torch.Tensor:
        return self.operator._quadratic_forms(self.scale[:, None] * V)
