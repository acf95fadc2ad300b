"""Rank-one sensing operators: bilinear A_l = a_l b_l^T and symmetric A_l = x_l x_l^T.

Only the factors are stored; no (m, d1, d2) tensor is ever formed. On factored inputs the map costs
O(m (d1 + d2) k) and the rescaling build O(m (d1^2 + d2^2)).
"""

from __future__ import annotations

import typing
from typing import Self

import torch

from flatminima._checks import check_tensor
from flatminima.errors import InputDataError
from flatminima.operators.base import MeasurementOperator

#: measurements processed at once by the dense-input paths, bounding temporaries to _CHUNK x max(d1, d2).
_CHUNK = 1024


class BilinearOperator(MeasurementOperator):
    """A(X)_l = a_l^T X b_l, i.e. A_l = a_l b_l^T (Gaussian bilinear ensemble, Ding et al. Def. 4.1).

    D1^2 = (1/(m d2)) sum_l ||b_l||^2 a_l a_l^T and D2^2 = (1/(m d1)) sum_l ||a_l||^2 b_l b_l^T.

    Args:
        left: the vectors a_l, shape (m, d1).
        right: the vectors b_l, shape (m, d2).

    References:
        Ding et al. (2024), Section 4; Cai and Zhang, ROP: matrix recovery via rank-one projections (2015).
    """

    def __init__(self, left: torch.Tensor, right: torch.Tensor) -> None:
        super().__init__()
        self.left = check_tensor("left", left, shape=(None, None))
        self.right = check_tensor("right", right, shape=(left.shape[0], None))
        if left.dtype != right.dtype or left.device != right.device:
            raise InputDataError(
                f"left and right must share dtype and device; got left {left.dtype} on {left.device}, "
                f"right {right.dtype} on {right.device}."
            )

    @property
    def shape_in(self) -> tuple[int, int]:
        """(d1, d2)."""
        return int(self.left.shape[1]), int(self.right.shape[1])

    @property
    def num_measurements(self) -> int:
        """M."""
        return int(self.left.shape[0])

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"left": self.left, "right": self.right}

    def _replace(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Self:
        return type(self)(tensors["left"], tensors["right"])

    def _apply(self, X: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                ((a @ X) * b).sum(-1)
                for a, b in zip(self.left.split(_CHUNK), self.right.split(_CHUNK), strict=True)
            ],
            dim=-1,
        )

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = None
        for start in range(0, self.num_measurements, _CHUNK):
            a, b = self.left[start : start + _CHUNK], self.right[start : start + _CHUNK]
            term = (a * y[..., start : start + _CHUNK].unsqueeze(-1)).mT @ b
            out = term if out is None else out + term
        return typing.cast(torch.Tensor, out)

    def apply_factored(self, L: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """A(L R^T)_l = (a_l^T L)(R^T b_l) in O(m (d1 + d2) k)."""
        return ((self.left @ L) * (self.right @ R)).sum(-1)

    def adjoint_matmul(self, y: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """A^*(y) V = sum_l y_l a_l (b_l^T V) in O(m (d1 + d2) k)."""
        return self.left.mT @ (y.unsqueeze(-1) * (self.right @ V))

    def adjoint_t_matmul(self, y: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """A^*(y)^T U = sum_l y_l b_l (a_l^T U) in O(m (d1 + d2) k)."""
        return self.right.mT @ (y.unsqueeze(-1) * (self.left @ U))

    def sandwich_norms(self, P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        """sum_l ||P^T a_l||^2 ||Q b_l||^2."""
        return ((self.left @ P).square().sum(-1) * (self.right @ Q.mT).square().sum(-1)).sum()

    def _rescaling_squares(self) -> tuple[torch.Tensor, torch.Tensor]:
        m, (d1, d2) = self.num_measurements, self.shape_in
        D1_sq = self.left.new_zeros(d1, d1)
        D2_sq = self.left.new_zeros(d2, d2)
        for a, b in zip(self.left.split(_CHUNK), self.right.split(_CHUNK), strict=True):
            D1_sq.addmm_((a * b.square().sum(-1, keepdim=True)).T, a)
            D2_sq.addmm_((b * a.square().sum(-1, keepdim=True)).T, b)
        return D1_sq / (m * d2), D2_sq / (m * d1)


class SymmetricRankOneOperator(MeasurementOperator):
    """A(X)_l = x_l^T X x_l, i.e. A_l = x_l x_l^T (quadratic networks, covariance, phase retrieval).

    D1 = D2 = D with D^2 = (1/(m d)) sum_l ||x_l||^2 x_l x_l^T (about (d + 2)/d I for Gaussian x).

    Args:
        vectors: the inputs x_l, shape (m, d).

    References:
        Ding et al. (2024), Section 7; Chen, Chi, Goldsmith, Exact and stable covariance estimation from
        quadratic sampling via convex programming (2015).
    """

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.vectors = check_tensor("vectors", vectors, shape=(None, None))

    @property
    def shape_in(self) -> tuple[int, int]:
        """(d, d)."""
        d = int(self.vectors.shape[1])
        return d, d

    @property
    def num_measurements(self) -> int:
        """M."""
        return int(self.vectors.shape[0])

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"vectors": self.vectors}

    def _replace(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Self:
        return type(self)(tensors["vectors"])

    def _apply(self, X: torch.Tensor) -> torch.Tensor:
        return ((self.vectors @ X) * self.vectors).sum(-1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (self.vectors * y.unsqueeze(-1)).mT @ self.vectors

    def apply_factored(self, L: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """A(L R^T)_l = (x_l^T L)(R^T x_l) in O(m d k)."""
        return ((self.vectors @ L) * (self.vectors @ R)).sum(-1)

    def adjoint_matmul(self, y: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """A^*(y) V = sum_l y_l x_l (x_l^T V) in O(m d k)."""
        return self.vectors.mT @ (y.unsqueeze(-1) * (self.vectors @ V))

    def adjoint_t_matmul(self, y: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """A^*(y)^T U = A^*(y) U (the A_l are symmetric)."""
        return self.adjoint_matmul(y, U)

    def sandwich_norms(self, P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        """sum_l ||P^T x_l||^2 ||Q x_l||^2."""
        x = self.vectors
        return ((x @ P).square().sum(-1) * (x @ Q.mT).square().sum(-1)).sum()

    def _rescaling_squares(self) -> tuple[torch.Tensor, torch.Tensor]:
        m, (d, _) = self.num_measurements, self.shape_in
        x = self.vectors
        D_sq = (x * x.square().sum(-1, keepdim=True)).T @ x / (m * d)
        return D_sq, D_sq
