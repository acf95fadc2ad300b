"""Linear measurements of vectors, b = A x, for sparse recovery and the depth (Hadamard) study."""

from __future__ import annotations

from typing import Self

import torch

from flatminima._checks import check_tensor
from flatminima.operators.base import MeasurementOperator


class VectorOperator(MeasurementOperator):
    """b = A x with A an (m, d) matrix; x is treated as a (d, 1) matrix so the protocol applies unchanged.

    In the protocol's terms A_l = a_l (a d x 1 matrix, a_l the l-th row of A). For the Hadamard
    parameterization x = v_1 ⊙ ... ⊙ v_k the relevant rescaling is diagonal:
    :meth:`column_scales` returns D = diag(||A e_j||) / sqrt(m) (Ding et al. 2024, Section 9), with
    tr grad^2 f = 2 sum_l ||D (⊙_{i != l} v_i)||^2 for f = (1/m)||A x - b||^2.

    Args:
        matrix: the (m, d) sensing matrix.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = check_tensor("matrix", matrix, shape=(None, None))

    @property
    def shape_in(self) -> tuple[int, int]:
        """(d, 1)."""
        return int(self.matrix.shape[1]), 1

    @property
    def num_measurements(self) -> int:
        """M."""
        return int(self.matrix.shape[0])

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"matrix": self.matrix}

    def _replace(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Self:
        return type(self)(tensors["matrix"])

    def _apply(self, X: torch.Tensor) -> torch.Tensor:
        return X.squeeze(-1) @ self.matrix.T

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self.matrix).unsqueeze(-1)

    def apply_vector(self, x: torch.Tensor) -> torch.Tensor:
        """A x for x of shape (..., d)."""
        return self.apply(x.unsqueeze(-1))

    def adjoint_vector(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y of shape (..., d)."""
        return self.adjoint(y).squeeze(-1)

    def column_scales(self) -> torch.Tensor:
        """The diagonal of D = diag(||a_j||) / sqrt(m), shape (d,)."""
        return self.matrix.square().sum(0).div(self.num_measurements).sqrt()

    def _rescaling_squares(self) -> tuple[torch.Tensor, torch.Tensor]:
        m, (d, _) = self.num_measurements, self.shape_in
        A = self.matrix
        return A.T @ A / m, A.square().sum().reshape(1, 1) / (m * d)
