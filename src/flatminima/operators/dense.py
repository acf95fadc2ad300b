"""Dense sensing operators: arbitrary (e.g. Gaussian) matrices A_l stored as an (m, d1, d2) tensor."""

from __future__ import annotations

from typing import Self

import torch

from flatminima._checks import check_tensor
from flatminima.operators.base import MeasurementOperator


class DenseOperator(MeasurementOperator):
    """A(X)_l = <A_l, X> with the sensing matrices stored densely.

    The Gaussian ensemble of Ding et al. (Definition 4.1) has i.i.d. N(0, 1) entries, for which
    D1 ~ D2 ~ I. Applying A or A^* is one (m, d1 d2) matmul: O(m d1 d2).

    Args:
        matrices: the sensing matrices, shape (m, d1, d2).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> A = DenseOperator(torch.randn(30, 4, 5, generator=g, dtype=torch.float64))
        >>> A.apply(torch.ones(4, 5, dtype=torch.float64)).shape
        torch.Size([30])

    References:
        Ding, Drusvyatskiy, Fazel, Harchaoui. Flat minima generalize for low-rank matrix recovery (2024).
    """

    def __init__(self, matrices: torch.Tensor) -> None:
        super().__init__()
        self.matrices = check_tensor("matrices", matrices, shape=(None, None, None))
        self._flat = matrices.reshape(matrices.shape[0], -1)

    @property
    def shape_in(self) -> tuple[int, int]:
        """(d1, d2)."""
        return int(self.matrices.shape[1]), int(self.matrices.shape[2])

    @property
    def num_measurements(self) -> int:
        """M."""
        return int(self.matrices.shape[0])

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"matrices": self.matrices}

    def _replace(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Self:
        return type(self)(tensors["matrices"])

    def _apply(self, X: torch.Tensor) -> torch.Tensor:
        return X.reshape(*X.shape[:-2], -1) @ self._flat.T

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        d1, d2 = self.shape_in
        return (y @ self._flat).reshape(*y.shape[:-1], d1, d2)

    def _rescaling_squares(self) -> tuple[torch.Tensor, torch.Tensor]:
        m, (d1, d2) = self.num_measurements, self.shape_in
        rows = self.matrices.permute(1, 0, 2).reshape(d1, m * d2)
        cols = self.matrices.permute(2, 0, 1).reshape(d2, m * d1)
        return rows @ rows.T / (m * d2), cols @ cols.T / (m * d1)

    def _dense_chunks(self, chunk_size: int = 256) -> list[torch.Tensor]:
        return list(self.matrices.split(chunk_size))
