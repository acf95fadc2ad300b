"""Robust PCA: a low-rank matrix plus sparse outliers, Y = M + S."""

from __future__ import annotations

import dataclasses
import typing

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import InputDataError
from flatminima.operators import IdentityOperator
from flatminima.problems.base import Instance, gaussian
from flatminima.problems.sensing import _LowRankModel


@typing.final
@dataclasses.dataclass(frozen=True, kw_only=True)
class RobustPCA(_LowRankModel):
    """Y = M + S with rank-r M (||M||_F = 1) and sparse S; the operator is the identity, b = vec(Y).

    Give exactly one sparsity pattern:

    * ``outliers_per_line = l``: S has at most l nonzeros in every row and every column (the union of
      l random partial matchings), the deterministic condition of Ding et al. Theorem 6.x;
    * ``outlier_fraction = q``: each entry is an outlier independently with probability q.

    Outlier values are ``outlier_scale * N(0, 1)``. ``extras["outliers"]`` holds S and
    ``metadata["outlier_l1_norm"]`` the l1-ball radius ||S||_{1,1} used by the relaxation
    min ||X||_* s.t. ||Y - X||_{1,1} <= ||S||_{1,1}.

    References:
        Ding et al. (2024), Section 6; Chen, Jalali, Sanghavi, Caramanis (2013).
    """

    name: typing.ClassVar[str] = "robust_pca"
    outliers_per_line: int | None = None
    outlier_fraction: float | None = None
    outlier_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.outliers_per_line is None) == (self.outlier_fraction is None):
            raise InputDataError(
                "give exactly one of outliers_per_line and outlier_fraction; got "
                f"outliers_per_line={self.outliers_per_line}, outlier_fraction={self.outlier_fraction}."
            )
        if self.outliers_per_line is not None:
            check_int_in_range(
                "outliers_per_line",
                self.outliers_per_line,
                low=0,
                high=min(self.shape),
                high_name="min(d1, d2)",
            )
        if self.outlier_fraction is not None:
            check_real("outlier_fraction", self.outlier_fraction, low=0.0, high=1.0)
        check_real("outlier_scale", self.outlier_scale, low=0.0, low_open=True)

    def _support(self, generator: torch.Generator) -> torch.Tensor:
        d1, d2 = self.shape
        if self.outlier_fraction is not None:
            return torch.rand(d1, d2, generator=generator, dtype=torch.float64) < self.outlier_fraction
        support = torch.zeros(d1, d2, dtype=torch.bool)
        n = min(d1, d2)
        for _ in range(typing.cast(int, self.outliers_per_line)):
            rows = torch.randperm(d1, generator=generator)[:n]
            cols = torch.randperm(d2, generator=generator)[:n]
            support[rows, cols] = True
        return support

    def _sample(self, generator: torch.Generator) -> Instance:
        M = self._truth(generator)
        support = self._support(generator)
        S = torch.where(support, self.outlier_scale * gaussian(*self.shape, generator=generator), 0.0)
        Y = M + S
        operator = IdentityOperator(self.shape)
        noise = self.noise_std * gaussian(*self.shape, generator=generator)
        b = operator.apply(Y + noise)
        metadata = {
            **self._metadata(),
            "outlier_l1_norm": float(S.abs().sum()),
            "num_outliers": int(support.sum()),
        }
        extras = {"outliers": S, "noise": operator.apply(noise)}
        return Instance(M, operator, b, self.name, extras, metadata)
