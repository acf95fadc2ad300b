"""The squared Frobenius norm ||H||_F^2 = tr(H^2) = sum_i lambda_i^2: exact and estimated.

For probes with E[z z^T] = I, E||H z||^2 = tr(H^T H) = ||H||_F^2, so the mean of ||H z_j||^2 over N probes is
an unbiased estimate, reported with its standard error. ||H||_F bounds the linear stability of SGD
(Wu, Wang, Su 2022: a minimum stable for SGD with batch B and step eta has ||H||_F <= O(sqrt(B)/eta)).

References:
    L. Wu, M. Wang, W. Su. The alignment property of SGD noise and how it helps select flat minima:
    a stability analysis. NeurIPS 2022.
"""

from __future__ import annotations

import torch

from flatminima._checks import check_int_in_range
from flatminima.curvature.estimate import Estimate, check_sampling, sample_until
from flatminima.curvature.linear_operator import LinearOperator, basis_blocks


def exact_squared_frobenius_norm(operator: LinearOperator, *, batch_size: int = 64) -> torch.Tensor:
    """Return ||H||_F^2 = sum_i ||H e_i||^2 from n basis products (small n only).

    Example:
        >>> from flatminima.curvature import MatrixOperator
        >>> float(exact_squared_frobenius_norm(MatrixOperator(torch.eye(3, dtype=torch.float64) * 2)))
        12.0
    """
    check_int_in_range("batch_size", batch_size, low=1)
    total = torch.zeros((), dtype=operator.dtype, device=operator.device)
    for E in basis_blocks(operator, batch_size):
        total = total + operator.matmat(E).square().sum()
    return total


def hutchinson_squared_frobenius_norm(
    operator: LinearOperator,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    rtol: float | None = None,
    min_probes: int = 10,
    batch_size: int = 32,
) -> Estimate:
    """Estimate ||H||_F^2 by the mean of ||H z_j||^2 with its standard error.

    Arguments, stopping rule and errors as :func:`flatminima.curvature.hutchinson_trace`.

    Example:
        >>> from flatminima.curvature import MatrixOperator
        >>> H = MatrixOperator(torch.eye(3, dtype=torch.float64) * 2)
        >>> hutchinson_squared_frobenius_norm(H, 10, generator=torch.Generator().manual_seed(0)).value
        12.0

    References:
        Hutchinson (1990); Wu, Wang, Su (2022).
    """
    generator = check_sampling(num_probes, min_probes, rtol, batch_size, distribution, generator)
    stats, converged = sample_until(
        lambda Z: operator.matmat(Z).square().sum(dim=0),
        operator,
        num_probes=num_probes,
        min_probes=min_probes,
        rtol=rtol,
        batch_size=batch_size,
        distribution=distribution,
        generator=generator,
    )
    value, stderr = stats.mean_and_stderr()
    return Estimate(value, stderr, stats.count, stats.count, converged)
