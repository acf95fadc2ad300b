"""Results of stochastic estimators and the random probes they draw.

Every stochastic estimator in :mod:`flatminima.curvature` returns an :class:`Estimate` (a scalar mean
with its standard error and the number of operator applications it cost) or a :class:`VectorEstimate`
(entrywise, e.g. a Hessian diagonal). Probes come from an explicit ``torch.Generator``; library code
never touches the global RNG. Probes are drawn on the generator's device and then moved to the
operator's device and dtype, so a CPU generator gives the same probes on every device.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.curvature.linear_operator import LinearOperator
from flatminima.errors import ConfigurationError

#: the probe distributions every estimator accepts.
Distribution = Literal["rademacher", "gaussian"]
DISTRIBUTIONS: tuple[str, ...] = ("rademacher", "gaussian")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate: mean, standard error of the mean and cost.

    Attributes:
        value: the estimate (sample mean of the per-probe values).
        stderr: the standard error of ``value`` (sample standard deviation / sqrt(num_samples));
            0.0 when the estimator became exact (e.g. Hutch++ with a full-rank sketch).
        num_matvecs: the number of operator-vector products (Hessian-vector products) spent.
        num_samples: the number of Monte Carlo samples behind ``value`` and ``stderr``.
        converged: False only when a target relative error ``rtol`` was asked for and the probe budget
            ran out before reaching it.
    """

    value: float
    stderr: float
    num_matvecs: int
    num_samples: int = 0
    converged: bool = True

    @property
    def relative_error(self) -> float:
        """The relative standard error stderr / |value| (inf when value is 0 and stderr is not)."""
        if self.value == 0.0:
            return 0.0 if self.stderr == 0.0 else math.inf
        return self.stderr / abs(self.value)


@dataclasses.dataclass(frozen=True)
class VectorEstimate:
    """An entrywise Monte Carlo estimate (e.g. a Hessian diagonal) with entrywise standard errors."""

    value: torch.Tensor
    stderr: torch.Tensor
    num_matvecs: int
    num_samples: int


def check_distribution(distribution: str) -> str:
    """Return ``distribution`` if it names a probe distribution; raise ConfigurationError otherwise."""
    if distribution not in DISTRIBUTIONS:
        raise ConfigurationError(
            f"distribution must be one of {', '.join(map(repr, DISTRIBUTIONS))}; "
            f"got distribution={distribution!r}."
        )
    return distribution


def check_probe_counts(num_probes: int, min_probes: int) -> None:
    """Check ``2 <= min_probes <= num_probes`` (a standard error needs two probes).

    Raises:
        InputDataError: when ``num_probes`` or ``min_probes`` is below 2, or ``num_probes < min_probes``.
    """
    check_int_in_range("min_probes", min_probes, low=2)
    check_int_in_range("num_probes", num_probes, low=2)
    if num_probes < min_probes:
        check_int_in_range("num_probes", num_probes, low=min_probes)


def check_rtol(rtol: float | None) -> float | None:
    """Return ``rtol`` (None or a positive real)."""
    if rtol is None:
        return None
    return check_real("rtol", rtol, low=0.0, low_open=True)


def draw_probes(
    size: int,
    num_probes: int,
    *,
    distribution: str,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """Return ``num_probes`` probes as the columns of a (size, num_probes) matrix with E[z z^T] = I.

    Rademacher probes have i.i.d. +-1 entries, Gaussian probes i.i.d. N(0, 1) entries. They are drawn on
    ``generator.device`` (so the same seed gives the same probes on every device) and moved to
    ``device`` in ``dtype``.
    """
    check_generator("generator", generator)
    check_distribution(distribution)
    shape = (size, num_probes)
    if distribution == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=generator.device)
        # +-1 exactly, with one copy in the target dtype (no int64 and float64 temporaries)
        return bits.to(device=device, dtype=dtype).mul_(2).sub_(1)
    else:
        Z = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float64)
    return Z.to(device=device, dtype=dtype)


class RunningMean:
    """Sample mean and standard error of a stream of scalar samples (kept as a tensor on the device)."""

    def __init__(self) -> None:
        self._chunks: list[torch.Tensor] = []
        self.count = 0

    def extend(self, samples: torch.Tensor) -> None:
        """Append a 1-D tensor of samples."""
        self._chunks.append(samples.detach().reshape(-1))
        self.count += int(samples.numel())

    def mean_and_stderr(self) -> tuple[float, float]:
        """Return (mean, stderr) with the unbiased sample variance; stderr is nan for one sample."""
        samples = torch.cat(self._chunks).to(torch.float64)
        mean = float(samples.mean())
        if self.count < 2:
            return mean, math.nan
        return mean, float(samples.std(correction=1)) / math.sqrt(self.count)


def check_sampling(
    num_probes: int,
    min_probes: int,
    rtol: float | None,
    batch_size: int,
    distribution: str,
    generator: torch.Generator | None,
) -> torch.Generator:
    """Validate the arguments shared by the probe-based estimators; return the generator."""
    checked = check_generator("generator", generator)
    check_probe_counts(num_probes, min_probes)
    check_rtol(rtol)
    check_int_in_range("batch_size", batch_size, low=1)
    check_distribution(distribution)
    return checked


def sample_until(
    sample: Callable[[torch.Tensor], torch.Tensor],
    operator: LinearOperator,
    *,
    num_probes: int,
    min_probes: int,
    rtol: float | None,
    batch_size: int,
    distribution: str,
    generator: torch.Generator,
    offset: float = 0.0,
) -> tuple[RunningMean, bool]:
    """Feed probe blocks (operator.size, b) in the operator's dtype/device to ``sample`` (-> b samples).

    Stops once ``rtol`` is given, at least ``min_probes`` samples were drawn and
    stderr <= rtol |offset + mean|; otherwise after ``num_probes``. Returns (stats, converged).
    """
    stats = RunningMean()

    def reached() -> bool:
        if rtol is None or stats.count < min_probes:
            return False
        mean, stderr = stats.mean_and_stderr()
        return stderr <= rtol * abs(offset + mean)

    blocks = probe_blocks(
        operator, num_probes, batch_size=batch_size, distribution=distribution, generator=generator
    )
    for Z in blocks:
        stats.extend(sample(Z))
        if reached():
            break
    return stats, rtol is None or reached()


def probe_blocks(
    operator: LinearOperator,
    num_probes: int,
    *,
    batch_size: int,
    distribution: str,
    generator: torch.Generator,
) -> Iterator[torch.Tensor]:
    """Blocks (operator.size, b) of ``num_probes`` probes in all, b <= ``batch_size``, drawn lazily.

    In the operator's dtype and device; a consumer that stops early draws no further probes.
    """
    drawn = 0
    while drawn < num_probes:
        width = min(batch_size, num_probes - drawn)
        yield draw_probes(
            operator.size,
            width,
            distribution=distribution,
            generator=generator,
            dtype=operator.dtype,
            device=operator.device,
        )
        drawn += width
