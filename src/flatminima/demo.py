"""The quick demonstration behind ``flatminima demo``: exact Hessian traces of matrix sensing.

Samples a Gaussian matrix sensing instance, builds the rescaling matrices D1, D2 once, and evaluates the
closed-form Hessian trace tr grad^2 f = 2 (d2 ||D1 L||^2 + d1 ||D2 R||^2) and the scaled trace
str = 2 (||D1 L||^2 + ||D2 R||^2) (Ding et al. 2024, Lemma 3.1) at the balanced ground-truth
factorization and at a random point, with kappa(D1, D2).
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from flatminima.errors import ConfigurationError
from flatminima.objectives import BilinearFactorization
from flatminima.problems import MatrixSensing
from flatminima.random import child_generators


@dataclasses.dataclass(frozen=True)
class DemoReport:
    """Numbers printed by the demo."""

    dim: int
    rank: int
    num_measurements: int
    width: int
    kappa: float
    trace_at_truth: float
    scaled_trace_at_truth: float
    loss_at_truth: float
    trace_at_random: float
    scaled_trace_at_random: float
    loss_at_random: float
    seconds_per_trace: float


def balanced_factors(M: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """L = U S^{1/2}, R = V S^{1/2} from the SVD of M, truncated or zero-padded to ``width`` columns."""
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    root = S.sqrt()
    L, R = U * root, Vh.mT * root
    keep = min(width, L.shape[1])
    pad = width - keep
    return (
        torch.nn.functional.pad(L[:, :keep], (0, pad)),
        torch.nn.functional.pad(R[:, :keep], (0, pad)),
    )


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return None


def check_demo_memory(*, dim: int, num_measurements: int, width: int) -> None:
    """Refuse sizes whose arrays need more than half of the physical memory, before allocating.

    The arrays: m d^2 Gaussian entries, a few d x d and d x k matrices, all float64.
    """
    entries = num_measurements * dim * dim + 4 * dim * dim + 4 * dim * width
    needed = 8 * entries
    memory = physical_memory()
    if memory is not None and needed > memory // 2:
        raise ConfigurationError(
            f"--dim {dim}, --measurements {num_measurements}: the demo needs about {needed / 2**30:.3g} GiB "
            f"(m d^2 float64 Gaussian entries), more than half of this machine's {memory / 2**30:.3g} GiB; "
            "reduce --dim or --measurements"
        )


def run_demo(
    *, dim: int = 30, rank: int = 2, num_measurements: int = 600, width: int = 30, seed: int = 0
) -> DemoReport:
    """Sample an instance from ``seed`` and evaluate the exact traces (see module docstring).

    Raises:
        ConfigurationError: sizes whose float64 arrays cannot fit in half of this machine's memory.
    """
    check_demo_memory(dim=dim, num_measurements=num_measurements, width=width)
    streams = child_generators(seed, "instance", "init")
    problem = MatrixSensing(shape=(dim, dim), rank=rank, num_measurements=num_measurements)
    instance = problem.sample(generator=streams["instance"])
    objective = BilinearFactorization(instance, width=width)
    truth = balanced_factors(instance.require_ground_truth("the demo"), width)
    random_point = tuple(
        torch.randn(dim, width, generator=streams["init"], dtype=torch.float64) / dim**0.5 for _ in range(2)
    )
    objective.hessian_trace(truth)  # the one-time rescaling build
    start = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        objective.hessian_trace(random_point)
    seconds = (time.perf_counter() - start) / repeats
    return DemoReport(
        dim=dim,
        rank=rank,
        num_measurements=num_measurements,
        width=width,
        kappa=instance.operator.rescaling_condition_number(),
        trace_at_truth=float(objective.hessian_trace(truth)),
        scaled_trace_at_truth=float(objective.scaled_trace(truth)),
        loss_at_truth=float(objective.value(truth)),
        trace_at_random=float(objective.hessian_trace(random_point)),
        scaled_trace_at_random=float(objective.scaled_trace(random_point)),
        loss_at_random=float(objective.value(random_point)),
        seconds_per_trace=seconds,
    )
