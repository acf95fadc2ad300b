"""Quadratic-activation networks, covariance estimation and phase retrieval: y = x^T M x."""

from __future__ import annotations

import dataclasses
import typing

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import InputDataError
from flatminima.operators import SymmetricRankOneOperator
from flatminima.problems.base import Instance, Problem, add_noise, gaussian


@typing.final
@dataclasses.dataclass(frozen=True, kw_only=True)
class QuadraticNetwork(Problem):
    """Teacher y(x) = sum_j v_j (u_j^T x)^2 = x^T M x, M = U1 U1^T - U2 U2^T, inputs x_i ~ N(0, I_d).

    ``num_positive = r1`` units with output weight +1 and ``num_negative = r2`` with -1; r2 = 0 is
    covariance estimation and (r1, r2) = (1, 0) phase retrieval. M is scaled to ||M||_F = 1 (the teacher
    factors are scaled by the same factor's square root and kept in ``extras``). The operator is
    :class:`SymmetricRankOneOperator`, A_i = x_i x_i^T.

    References:
        Ding et al. (2024), Section 7; Chen, Chi, Goldsmith (2015); Candès, Strohmer, Voroninski (2013).
    """

    name: typing.ClassVar[str] = "quadratic_network"
    dim: int
    num_positive: int
    num_negative: int = 0
    num_measurements: int
    noise_std: float = 0.0
    ground_truth_norm: float = 1.0

    def __post_init__(self) -> None:
        check_int_in_range("dim", self.dim, low=1)
        check_int_in_range("num_positive", self.num_positive, low=0, high=self.dim, high_name="dim")
        check_int_in_range("num_negative", self.num_negative, low=0, high=self.dim, high_name="dim")
        if not 1 <= self.num_positive + self.num_negative <= self.dim:
            raise InputDataError(
                "num_positive + num_negative must satisfy 1 <= r1 + r2 <= dim = "
                f"{self.dim}; got {self.num_positive} + {self.num_negative}."
            )
        check_int_in_range("num_measurements", self.num_measurements, low=1)
        check_real("noise_std", self.noise_std, low=0.0)
        check_real("ground_truth_norm", self.ground_truth_norm, low=0.0, low_open=True)

    @property
    def rank(self) -> int:
        """R = r1 + r2."""
        return self.num_positive + self.num_negative

    def _sample(self, generator: torch.Generator) -> Instance:
        d = self.dim
        U1 = gaussian(d, self.num_positive, generator=generator)
        U2 = gaussian(d, self.num_negative, generator=generator)
        M = U1 @ U1.T - U2 @ U2.T
        scale = self.ground_truth_norm / torch.linalg.matrix_norm(M)
        M, U1, U2 = M * scale, U1 * scale.sqrt(), U2 * scale.sqrt()
        x = gaussian(self.num_measurements, d, generator=generator)
        operator = SymmetricRankOneOperator(x)
        b, noise = add_noise(operator.apply(M), self.noise_std, generator=generator)
        extras = {"teacher_positive": U1, "teacher_negative": U2, "noise": noise}
        metadata = {"problem": self.name, **dataclasses.asdict(self)}
        return Instance(M, operator, b, self.name, extras, metadata)
