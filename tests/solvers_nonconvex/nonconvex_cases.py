"""Shared helpers of the nonconvex-solver tests: tiny objectives and generators."""

from __future__ import annotations

import torch

from flatminima.objectives import BilinearFactorization, Objective, SymmetricFactorization
from flatminima.problems import MatrixSensing, QuadraticNetwork


def sensing_objective(
    *,
    d: int = 4,
    rank: int = 1,
    m: int = 40,
    width: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> BilinearFactorization:
    """A tiny Gaussian sensing objective (drawn in float64, then cast)."""
    g = torch.Generator().manual_seed(seed)
    instance = MatrixSensing(shape=(d, d), rank=rank, num_measurements=m).sample(generator=g)
    return BilinearFactorization(instance.to(dtype=dtype), width=width)


def quadratic_objective(*, d: int = 4, m: int = 40, seed: int = 0) -> SymmetricFactorization:
    """A tiny quadratic network (one positive and one negative teacher unit), widths (2, 2)."""
    g = torch.Generator().manual_seed(seed)
    instance = QuadraticNetwork(dim=d, num_positive=1, num_negative=1, num_measurements=m).sample(generator=g)
    return SymmetricFactorization(instance, widths=(2, 2))


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class QuadraticObjective(Objective):
    """f(w) = 1/2 w^T A w - b^T w over two blocks w = (w1 (2,), w2 (3,)) with closed-form derivatives."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__(
            names=("w1", "w2"), shapes=((2,), (3,)), block_weights=(1.0, 1.0), dtype=A.dtype, device=A.device
        )
        self.A, self.b = A, b

    @staticmethod
    def split(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return w[:2], w[2:]

    def _value(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        w = torch.cat(params)
        return 0.5 * w @ self.A @ w - self.b @ w

    def _grad(self, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return self.split(self.A @ torch.cat(params) - self.b)

    def _hvp(
        self, params: tuple[torch.Tensor, ...], direction: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...]:
        return self.split(self.A @ torch.cat(direction))

    def _block_traces(self, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        diagonal = torch.diagonal(self.A)
        return diagonal[:2].sum(), diagonal[2:].sum()


def quadratic(seed: int = 0) -> tuple[QuadraticObjective, torch.Tensor, torch.Tensor]:
    """A QuadraticObjective with a random SPD A (5 x 5) and b, in float64."""
    g = make_generator(seed)
    B = torch.randn(5, 5, generator=g, dtype=torch.float64)
    A = B @ B.T + 0.5 * torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    return QuadraticObjective(A, b), A, b
