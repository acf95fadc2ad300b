"""The measurement-operator protocol shared by every kind of linear map A: R^{d1 x d2} -> R^m.

A(X)_l = <A_l, X> for sensing matrices A_l; the adjoint is A^*(y) = sum_l y_l A_l. The rescaling matrices
of Ding et al. (2024, Section 3) are the symmetric PSD square roots of

    D1^2 = (1 / (m d2)) sum_l A_l A_l^T,        D2^2 = (1 / (m d1)) sum_l A_l^T A_l.

For f(L, R) = (1/m) ||A(L R^T) - b||^2 they give the exact identity (at every point)
tr grad^2 f = 2 (d2 ||D1 L||_F^2 + d1 ||D2 R||_F^2). Subclasses compute D1^2, D2^2 from their structure
(never from a dense (m, d1, d2) tensor unless that is what they store) and may override the factored
products, which the factor-space solvers and objectives use to stay at O(m (d1 + d2) k) per step.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024. arXiv:2203.03756.
"""

from __future__ import annotations

import abc
from typing import Self

import torch

from flatminima._checks import check_tensor
from flatminima.errors import InputDataError


def symmetric_sqrt(S: torch.Tensor) -> torch.Tensor:
    """Return the symmetric PSD square root of a symmetric PSD matrix (tiny negative eigenvalues clipped)."""
    eigenvalues, Q = torch.linalg.eigh(S)
    return (Q * eigenvalues.clamp_min(0).sqrt()) @ Q.mT


class MeasurementOperator(abc.ABC):
    """A linear map A: R^{d1 x d2} -> R^m with adjoint and rescaling matrices.

    ``apply`` and ``adjoint`` accept leading batch dimensions: X of shape (..., d1, d2) maps to (..., m).
    Subclasses store their data in tensors listed by :meth:`_tensors` and rebuild themselves in
    :meth:`_replace`, which gives ``to``, ``dtype`` and ``device`` for free.
    """

    #: True when D1 and D2 are diagonal (entry masks, identity): solvers may then use ``rescaling_diagonals``.
    diagonal_rescaling: bool = False

    def __init__(self) -> None:
        self._squares: tuple[torch.Tensor, torch.Tensor] | None = None
        self._roots: tuple[torch.Tensor, torch.Tensor] | None = None

    # ---- structure -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def shape_in(self) -> tuple[int, int]:
        """The shape (d1, d2) of the matrices the operator measures."""

    @property
    @abc.abstractmethod
    def num_measurements(self) -> int:
        """The number m of measurements."""

    @abc.abstractmethod
    def _tensors(self) -> dict[str, torch.Tensor]:
        """The tensors that define the operator, by constructor argument name."""

    @abc.abstractmethod
    def _replace(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Self:
        """A new operator of the same kind built from ``tensors`` (same keys as :meth:`_tensors`)."""

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the operator's data."""
        return next(t for t in self._tensors().values() if t.is_floating_point()).dtype

    @property
    def device(self) -> torch.device:
        """The device of the operator's data."""
        return next(iter(self._tensors().values())).device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Self:
        """Return a copy on ``device`` with floating data in ``dtype`` (index tensors keep their dtype)."""
        if dtype is not None and not dtype.is_floating_point:
            raise InputDataError(f"dtype must be a floating dtype; got dtype={dtype}.")
        moved = {
            name: t.to(device=device, dtype=dtype if t.is_floating_point() else None)
            for name, t in self._tensors().items()
        }
        return self._replace(moved, dtype if dtype is not None else self.dtype)

    # ---- the map ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def _apply(self, X: torch.Tensor) -> torch.Tensor:
        """A(X) for X of shape (..., d1, d2), inputs already validated."""

    @abc.abstractmethod
    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^*(y) for y of shape (..., m), inputs already validated."""

    def apply(self, X: torch.Tensor) -> torch.Tensor:
        """Return A(X) = (<A_1, X>, ..., <A_m, X>) for X of shape (..., d1, d2)."""
        self._check_input("X", X, trailing=self.shape_in)
        return self._apply(X)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Return A^*(y) = sum_l y_l A_l for y of shape (..., m)."""
        self._check_input("y", y, trailing=(self.num_measurements,))
        return self._adjoint(y)

    def apply_factored(self, L: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """Return A(L R^T) for L (..., d1, k), R (..., d2, k); structured operators avoid forming L R^T."""
        return self._apply(L @ R.mT)

    def adjoint_matmul(self, y: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """Return A^*(y) V for V of shape (..., d2, k)."""
        return self._adjoint(y) @ V

    def adjoint_t_matmul(self, y: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """Return A^*(y)^T U for U of shape (..., d1, k)."""
        return self._adjoint(y).mT @ U

    def sandwich_norms(self, P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        """Return sum_l ||P^T A_l Q^T||_F^2 for P (d1, a) and Q (b, d2).

        This is the curvature of any loss (1/m)||A(P W Q) - b||^2 along the coordinates of W:
        sum_{ij} ||A(P e_i e_j^T Q)||^2. The default loops over measurements in chunks; subclasses use
        their structure.
        """
        total = P.new_zeros(())
        for chunk in self._dense_chunks():
            total = total + (P.mT @ chunk @ Q.mT).square().sum()
        return total

    def _dense_chunks(self, chunk_size: int = 256) -> list[torch.Tensor]:
        """The sensing matrices A_l as dense (c, d1, d2) chunks (used only by generic fallbacks)."""
        m = self.num_measurements
        eye = torch.eye(m, dtype=self.dtype, device=self.device)
        return [self._adjoint(eye[start : start + chunk_size]) for start in range(0, m, chunk_size)]

    # ---- rescaling -------------------------------------------------------------------------------
    @abc.abstractmethod
    def _rescaling_squares(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(D1^2, D2^2) from the operator's structure."""

    def rescaling_squares(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (D1^2, D2^2), (d1, d1) and (d2, d2); computed once and cached."""
        if self._squares is None:
            self._squares = self._rescaling_squares()
        return self._squares

    def rescaling(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the rescaling matrices (D1, D2): symmetric PSD square roots of D1^2, D2^2. Cached."""
        if self._roots is None:
            D1_sq, D2_sq = self.rescaling_squares()
            if self.diagonal_rescaling:
                self._roots = (
                    torch.diag(D1_sq.diagonal().clamp_min(0).sqrt()),
                    torch.diag(D2_sq.diagonal().clamp_min(0).sqrt()),
                )
            else:
                self._roots = (symmetric_sqrt(D1_sq), symmetric_sqrt(D2_sq))
        return self._roots

    def rescaling_diagonals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the diagonals of (D1, D2) as vectors; only for operators with ``diagonal_rescaling``."""
        if not self.diagonal_rescaling:
            raise InputDataError(
                f"rescaling_diagonals needs an operator with diagonal D1, D2; {type(self).__name__} "
                "has dense rescaling matrices. Use rescaling() instead."
            )
        D1_sq, D2_sq = self.rescaling_squares()
        return D1_sq.diagonal().clamp_min(0).sqrt(), D2_sq.diagonal().clamp_min(0).sqrt()

    def rescaling_condition_number(self) -> float:
        """Return kappa = alpha2 / alpha1, tightest with alpha1 I <= D1, D2 <= alpha2 I (inf if singular)."""
        D1_sq, D2_sq = self.rescaling_squares()
        eigenvalues = torch.cat([torch.linalg.eigvalsh(D1_sq), torch.linalg.eigvalsh(D2_sq)])
        low, high = float(eigenvalues.min()), float(eigenvalues.max())
        if low <= 0.0:
            return float("inf")
        return (high / low) ** 0.5

    # ---- validation ------------------------------------------------------------------------------
    def _check_input(self, name: str, value: torch.Tensor, *, trailing: tuple[int, ...]) -> None:
        check_tensor(name, value, finite=False)
        if tuple(value.shape[value.ndim - len(trailing) :]) != trailing or value.ndim < len(trailing):
            want = ", ".join(str(s) for s in trailing)
            raise InputDataError(
                f"{name} must have shape (..., {want}) for this {type(self).__name__}; "
                f"got {name}.shape={tuple(value.shape)}."
            )
        if value.dtype != self.dtype:
            raise InputDataError(
                f"expected {name} and the operator to share one dtype; got {name} {value.dtype}, "
                f"operator {self.dtype}. Use operator.to(dtype={value.dtype}) or convert {name}."
            )
        if value.device != self.device:
            raise InputDataError(
                f"expected {name} and the operator on the same device; got {name} on {value.device}, "
                f"operator on {self.device}."
            )

    def __repr__(self) -> str:
        d1, d2 = self.shape_in
        return (
            f"{type(self).__name__}(shape_in=({d1}, {d2}), num_measurements={self.num_measurements}, "
            f"dtype={self.dtype}, device={self.device})"
        )
