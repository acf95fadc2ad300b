"""The Hessian diagonal: exact by basis products, and its Hutchinson-style (Bekas et al.) estimate.

diag(H)_i = e_i^T H e_i exactly, or E[z_i (H z)_i] for probes with E[z z^T] = I (for Rademacher
probes the variance of one sample is sum_{j != i} H_ij^2). Per-block sums of the diagonal give the
per-parameter traces; the diagonal itself is what diagonal preconditioners and the "scaled trace"
of Ding et al. weight.

References:
    C. Bekas, E. Kokiopoulou, Y. Saad. An estimator for the diagonal of a matrix. Applied Numerical
    Mathematics 57(11-12), 2007.
"""

from __future__ import annotations

import math

import torch

from flatminima._checks import check_int_in_range
from flatminima.curvature.estimate import VectorEstimate, check_sampling, probe_blocks
from flatminima.curvature.linear_operator import LinearOperator, basis_blocks


def exact_hessian_diagonal(operator: LinearOperator, *, batch_size: int = 64) -> torch.Tensor:
    """Return diag(H), shape (n,), from n basis products applied ``batch_size`` at a time.

    Example:
        >>> from flatminima.curvature import HessianOperator
        >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> H = HessianOperator(lambda p: (p["x"] ** 3).sum(), {"x": x})
        >>> exact_hessian_diagonal(H)
        tensor([ 6., 12.], dtype=torch.float64)
    """
    check_int_in_range("batch_size", batch_size, low=1)
    pieces = []
    start = 0
    for E in basis_blocks(operator, batch_size):
        width = E.shape[1]
        pieces.append(operator.matmat(E)[start : start + width].diagonal())
        start += width
    return torch.cat(pieces)


def hutchinson_hessian_diagonal(
    operator: LinearOperator,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    min_probes: int = 10,
    batch_size: int = 32,
) -> VectorEstimate:
    """Estimate diag(H) by (1/N) sum_j z_j * (H z_j) with entrywise standard errors.

    Args:
        operator: the symmetric operator H.
        num_probes: N (>= ``min_probes`` >= 2).
        generator: the random stream of the probes (required).
        distribution: "rademacher" (default; exact for diagonal H) or "gaussian".
        min_probes: the fewest probes allowed.
        batch_size: probes applied together.

    Returns:
        VectorEstimate(value (n,), stderr (n,), num_matvecs, num_samples).

    Raises:
        InputDataError: if ``num_probes`` < ``min_probes`` or ``min_probes`` < 2.
        InputTypeError: if ``generator`` is missing.

    References:
        Bekas, Kokiopoulou, Saad (2007).
    """
    generator = check_sampling(num_probes, min_probes, None, batch_size, distribution, generator)
    total = torch.zeros(operator.size, dtype=torch.float64, device=operator.device)
    total_sq = torch.zeros_like(total)
    count = 0
    blocks = probe_blocks(
        operator, num_probes, batch_size=batch_size, distribution=distribution, generator=generator
    )
    for Z in blocks:
        samples = (Z * operator.matmat(Z)).to(torch.float64)
        total += samples.sum(dim=1)
        total_sq += (samples**2).sum(dim=1)
        count += Z.shape[1]
    mean = total / count
    variance = ((total_sq - count * mean**2) / (count - 1)).clamp_min(0.0)
    return VectorEstimate(
        value=mean.to(operator.dtype),
        stderr=(variance.sqrt() / math.sqrt(count)).to(operator.dtype),
        num_matvecs=count,
        num_samples=count,
    )
