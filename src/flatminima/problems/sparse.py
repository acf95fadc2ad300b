"""Sparse recovery b = A x with a sparse x: the depth (Hadamard parameterization) study."""

from __future__ import annotations

import dataclasses
import typing

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.operators import VectorOperator
from flatminima.problems.base import Instance, Problem, add_noise, gaussian


@typing.final
@dataclasses.dataclass(frozen=True, kw_only=True)
class SparseRecovery(Problem):
    """b = A x + noise with Gaussian A (m, d) and x with ``sparsity`` nonzeros, ||x||_2 = 1.

    The ground truth is stored as a (d, 1) matrix so that ``instance.operator.apply(ground_truth)``
    works as for the matrix models; ``extras["support"]`` is the boolean support.

    References:
        Ding et al. (2024), Section 9 (depth); Woodworth et al., Kernel and rich regimes (2020).
    """

    name: typing.ClassVar[str] = "sparse_recovery"
    dim: int
    sparsity: int
    num_measurements: int
    noise_std: float = 0.0
    ground_truth_norm: float = 1.0

    def __post_init__(self) -> None:
        check_int_in_range("dim", self.dim, low=1)
        check_int_in_range("sparsity", self.sparsity, low=1, high=self.dim, high_name="dim")
        check_int_in_range("num_measurements", self.num_measurements, low=1)
        check_real("noise_std", self.noise_std, low=0.0)
        check_real("ground_truth_norm", self.ground_truth_norm, low=0.0, low_open=True)

    @property
    def shape(self) -> tuple[int, int]:
        """(d, 1)."""
        return self.dim, 1

    def _sample(self, generator: torch.Generator) -> Instance:
        support_index = torch.randperm(self.dim, generator=generator)[: self.sparsity]
        x = torch.zeros(self.dim, 1, dtype=torch.float64)
        x[support_index, 0] = gaussian(self.sparsity, generator=generator)
        x = x * (self.ground_truth_norm / torch.linalg.vector_norm(x))
        operator = VectorOperator(gaussian(self.num_measurements, self.dim, generator=generator))
        b, noise = add_noise(operator.apply(x), self.noise_std, generator=generator)
        support = torch.zeros(self.dim, dtype=torch.bool)
        support[support_index] = True
        metadata = {"problem": self.name, **dataclasses.asdict(self)}
        return Instance(x, operator, b, self.name, {"support": support, "noise": noise}, metadata)
