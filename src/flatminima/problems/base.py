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
        """m."""
        return self.operator.num_measurements

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the instance's tensors."""
        return self.ground_truth.dtype

    @property
    def device(self) -> torch.device:
        """device of the instance's tensors."""
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
) -> torch.Tensor:
    """M = G1 G2^T / ||G1 G2^T||_F * norm with G1 (d1, r), G2 (d2, r) Gaussian: rank r, ||M||_F = norm."""
    M = gaussian(d1, rank, generator=generator) @ gaussian(d2, rank, generator=generator).T
    return M * (norm / torch.linalg.matrix_norm(M))


def add_noise(
    clean: torch.Tensor, noise_std: float, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (clean + noise_std * e, noise_std * e) with e ~ N(0, I); the noise is drawn even at 0."""
    noise = noise_std * gaussian(*clean.shape, generator=generator)
    return clean + noise, noise
