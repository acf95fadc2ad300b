"""Operators with diagonal rescaling: the entry mask of matrix completion and the identity map."""

from __future__ import annotations

from typing import Self

import torch

from flatminima._checks import check_shape_pair
from flatminima.errors import InputDataError, InputTypeError
from flatminima.operators.base import MeasurementOperator


class EntryMask(MeasurementOperator):
    """A(X) = (X_{i_l j_l})_{l <= m}: the observed entries of X (matrix completion).

    A_l = e_{i_l} e_{j_l}^T, so D1^2 = diag(n_row) / (m d2) and D2^2 = diag(n_col) / (m d1) with n_row,
    n_col the numbers of observations per row and column (m = number of observed entries). D1, D2 are
    invertible iff no row and no column is empty; :meth:`empty_rows` and :meth:`empty_columns` say which.

    Args:
        shape: (d1, d2).
        rows, cols: int64 index tensors of the observed entries, shape (m,), without repetition.
        dtype: floating dtype of the values the operator maps.

    References:
        Ding et al. (2024), Section 5; Srebro and Salakhutdinov, Collaborative filtering in a non-uniform
        world: learning with the weighted trace norm (2010).
    """

    diagonal_rescaling = True

    def __init__(
        self,
        shape: tuple[int, int],
        rows: torch.Tensor,
        cols: torch.Tensor,
        *,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self._shape = check_shape_pair("shape", shape)
        for name, index in (("rows", rows), ("cols", cols)):
            if not isinstance(index, torch.Tensor) or index.dtype != torch.int64 or index.ndim != 1:
                raise InputTypeError(f"{name} must be a 1-D int64 tensor of indices; got {index!r:.60}.")
        if rows.shape != cols.shape or rows.device != cols.device:
            raise InputDataError(
                f"rows and cols must have one shape and device; got {tuple(rows.shape)} on {rows.device} "
                f"and {tuple(cols.shape)} on {cols.device}."
            )
        d1, d2 = self._shape
        if rows.numel() == 0:
            raise InputDataError("an EntryMask needs at least one observed entry; got none.")
        for name, index, bound in (("rows", rows, d1), ("cols", cols, d2)):
            if int(index.min()) < 0 or int(index.max()) >= bound:
                raise InputDataError(
                    f"{name} must lie in [0, {bound}); "
                    f"got values in [{int(index.min())}, {int(index.max())}]."
                )
        self.rows, self.cols = rows, cols
        self._flat_index = rows * d2 + cols
        if torch.unique(self._flat_index).numel() != rows.numel():
            raise InputDataError("the observed entries (rows[l], cols[l]) must be distinct; got repeats.")
        self._dtype = dtype

    @classmethod
    def from_mask(cls, mask: torch.Tensor, *, dtype: torch.dtype = torch.float64) -> EntryMask:
        """Build from a boolean (d1, d2) mask of observed entries (row-major order of the measurements)."""
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.ndim != 2:
            raise InputTypeError(f"mask must be a 2-D boolean tensor; got {mask!r:.60}.")
        rows, cols = mask.nonzero(as_tuple=True)
        return cls((int(mask.shape[0]), int(mask.shape[1])), rows, cols, dtype=dtype)

    @property
    def shape_in(self) -> tuple[int, int]:
        """(d1, d2)."""
        return self._shape

    @property
    def num_measurements(self) -> int:
        """M = number of observed entries."""
        return int(self.rows.numel())

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the values."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The device of the index tensors."""
        return self.rows.device

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"rows": self.rows, "cols": self.cols}

    def _replace(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Self:
        return type(self)(self._shape, tensors["rows"], tensors["cols"], dtype=dtype)

    def mask(self) -> torch.Tensor:
        """The boolean (d1, d2) mask of observed entries."""
        mask = torch.zeros(self._shape, dtype=torch.bool, device=self.device)
        mask[self.rows, self.cols] = True
        return mask

    def row_counts(self) -> torch.Tensor:
        """Observations per row, shape (d1,)."""
        return torch.bincount(self.rows, minlength=self._shape[0])

    def column_counts(self) -> torch.Tensor:
        """Observations per column, shape (d2,)."""
        return torch.bincount(self.cols, minlength=self._shape[1])

    def empty_rows(self) -> list[int]:
        """Indices of rows with no observation (D1 singular there)."""
        return [int(i) for i in (self.row_counts() == 0).nonzero().flatten()]

    def empty_columns(self) -> list[int]:
        """Indices of columns with no observation (D2 singular there)."""
        return [int(j) for j in (self.column_counts() == 0).nonzero().flatten()]

    def _apply(self, X: torch.Tensor) -> torch.Tensor:
        return X.reshape(*X.shape[:-2], -1)[..., self._flat_index]

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        d1, d2 = self._shape
        out = y.new_zeros(*y.shape[:-1], d1 * d2)
        out[..., self._flat_index] = y
        return out.reshape(*y.shape[:-1], d1, d2)

    def apply_factored(self, L: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """(L R^T)_{i_l j_l} = <L[i_l], R[j_l]> in O(m k)."""
        return (L[..., self.rows, :] * R[..., self.cols, :]).sum(-1)

    def adjoint_matmul(self, y: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """A^*(y) V by scatter-add in O(m k) (no dense d1 x d2 matrix)."""
        if y.ndim > 1 or V.ndim > 2:
            return super().adjoint_matmul(y, V)
        out = V.new_zeros(self._shape[0], V.shape[-1])
        return out.index_add_(0, self.rows, y.unsqueeze(-1) * V[self.cols])

    def adjoint_t_matmul(self, y: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """A^*(y)^T U by scatter-add in O(m k)."""
        if y.ndim > 1 or U.ndim > 2:
            return super().adjoint_t_matmul(y, U)
        out = U.new_zeros(self._shape[1], U.shape[-1])
        return out.index_add_(0, self.cols, y.unsqueeze(-1) * U[self.rows])

    def sandwich_norms(self, P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        """sum_l ||P[i_l]||^2 ||Q[:, j_l]||^2."""
        return (P.square().sum(-1)[self.rows] * Q.square().sum(0)[self.cols]).sum()

    def _rescaling_squares(self) -> tuple[torch.Tensor, torch.Tensor]:
        m, (d1, d2) = self.num_measurements, self._shape
        rows = self.row_counts().to(self._dtype) / (m * d2)
        cols = self.column_counts().to(self._dtype) / (m * d1)
        return torch.diag(rows), torch.diag(cols)

    def rescaling_diagonals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The diagonals of (D1, D2) from the observation counts, without forming d x d matrices."""
        m, (d1, d2) = self.num_measurements, self._shape
        rows = (self.row_counts().to(self._dtype) / (m * d2)).sqrt()
        cols = (self.column_counts().to(self._dtype) / (m * d1)).sqrt()
        return rows, cols


class IdentityOperator(MeasurementOperator):
    """A(X) = vec(X) (row-major), m = d1 d2; the population loss of Gaussian sensing.

    D1^2 = D2^2 = I / (d1 d2), so str grad^2 f = 2 (||L||^2 + ||R||^2) / (d1 d2) for f = (1/m)||LR^T - M||^2:
    flat, norm-minimal and balanced coincide (Ding et al. 2024, Lemma 2.2).
    """

    diagonal_rescaling = True

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self._shape = check_shape_pair("shape", shape)
        self._anchor = torch.zeros((), dtype=dtype, device=device)

    @property
    def shape_in(self) -> tuple[int, int]:
        """(d1, d2)."""
        return self._shape

    @property
    def num_measurements(self) -> int:
        """M = d1 d2."""
        return self._shape[0] * self._shape[1]

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"anchor": self._anchor}

    def _replace(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Self:
        anchor = tensors["anchor"]
        return type(self)(self._shape, dtype=anchor.dtype, device=anchor.device)

    def _apply(self, X: torch.Tensor) -> torch.Tensor:
        return X.reshape(*X.shape[:-2], -1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(*y.shape[:-1], *self._shape)

    def apply_factored(self, L: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """vec(L R^T)."""
        return self._apply(L @ R.mT)

    def sandwich_norms(self, P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        """Sum over all entries: ||P||_F^2 ||Q||_F^2."""
        return P.square().sum() * Q.square().sum()

    def _rescaling_squares(self) -> tuple[torch.Tensor, torch.Tensor]:
        d1, d2 = self._shape
        eye1 = torch.eye(d1, dtype=self.dtype, device=self.device)
        eye2 = torch.eye(d2, dtype=self.dtype, device=self.device)
        return eye1 / (d1 * d2), eye2 / (d1 * d2)
