"""Problems (statistical models) and the instances they draw.

``Problem.sample(generator=g)`` draws one :class:`Instance` on CPU in float64 from an explicit generator,
so a seed means the same instance on every device; move it with ``instance.to(device, dtype)``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from flatminima._checks import check_generator
from flatminima.operators import MeasurementOperator


@dataclasses.dataclass(frozen=True)
class Instance:
    """One draw of a statistical model: b = A(M) + noise.

    Attributes:
        ground_truth: the matrix M (d1, d2) (for sparse recovery, the vector x as a (d, 1) matrix).
        operator: the measurement map A.
        observations: b, shape (m,).
        kind: the problem's registry name ("matrix_sensing", ...).
        extras: further tensors of the model (teacher factors, outliers, noise), moved by :meth:`to`.
        metadata: plain values (problem parameters, empty rows/columns, ...).
    """

    ground_truth: torch.Tensor
    operator: MeasurementOperator
    observations: torch.Tensor
    kind: str
    extras: Mapping[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(d1, d2) of the ground truth."""
        return self.operator.shape_in

    @property
    def num_measurements(self) -> int:
        """M."""
        return self.operator.num_measurements

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the instance's tensors."""
        return self.ground_truth.dtype

    @property
    def device(self) -> torch.device:
        """Device of the instance's tensors."""
        return self.ground_truth.device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Instance:
        """Return a copy with every tensor (and the operator) on ``device`` in ``dtype``."""
        return dataclasses.replace(
            self,
            ground_truth=self.ground_truth.to(device=device, dtype=dtype),
            operator=self.operator.to(device=device, dtype=dtype),
            observations=self.observations.to(device=device, dtype=dtype),
            extras={
                name: t.to(device=device, dtype=dtype if t.is_floating_point() else None)
                for name, t in self.extras.items()
            },
        )

    def recovery_error(self, X: torch.Tensor) -> float:
        """Frobenius distance ||X - M||_F to the ground truth."""
        return float(torch.linalg.matrix_norm(X - self.ground_truth.to(X)))


class Problem(abc.ABC):
    """A statistical model; subclasses are frozen dataclasses validated in ``__post_init__``."""

    #: registry name used by sweeps and the CLI.
    name: ClassVar[str]

    @abc.abstractmethod
    def _sample(self, generator: torch.Generator) -> Instance:
        """Draw an instance on CPU in float64."""

    def sample(self, *, generator: torch.Generator) -> Instance:
        """Draw one instance on CPU in float64 from ``generator`` (a CPU ``torch.Generator``).

        Raises:
            InputTypeError: if ``generator`` is not a ``torch.Generator``.
        """
        check_generator("generator", generator)
        return self._sample(generator)


def gaussian(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """i.i.d. N(0, 1) entries on CPU in float64."""
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def low_rank_ground_truth(
    d1: int, d2: int, rank: int, *, norm: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (F1, F2) of M = F1 F2^T, the normalized G1 G2^T with G1 (d1, r), G2 (d2, r) Gaussian.

    M has rank r and ||M||_F = norm; the factors let structured operators measure M in O(m (d1 + d2) r).
    """
    G1 = gaussian(d1, rank, generator=generator)
    G2 = gaussian(d2, rank, generator=generator)
    # ||G1 G2^T||_F^2 = tr((G1^T G1)(G2^T G2)) without forming the d1 x d2 product.
    scale = norm / ((G1.T @ G1) * (G2.T @ G2)).sum().sqrt()
    return G1 * scale, G2


def add_noise(
    clean: torch.Tensor, noise_std: float, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (clean + noise_std * e, noise_std * e) with e ~ N(0, I); the noise is drawn even at 0."""
    noise = noise_std * gaussian(*clean.shape, generator=generator)
    return clean + noise, noise
