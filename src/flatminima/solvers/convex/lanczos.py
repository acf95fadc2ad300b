"""Largest singular value of a structured matrix by block Lanczos (no dense SVD).

For a matrix W available only through products W X and W^T Y, the top eigenvalue theta of W^T W is
estimated by the Rayleigh-Ritz procedure on a block Krylov space {Q0, (W^T W) Q0, ...} with full
reorthogonalization: the package's one Lanczos kernel (:func:`flatminima.numerics.block_lanczos`, with its
deflation at breakdown). The returned bound sqrt(theta + r) adds the Ritz residual r = ||(W^T W) x -
theta x||, floored at the round-off level ``ROUND_OFF_FACTOR * eps * theta`` (the distance from theta
to the nearest true eigenvalue is at most that residual).

References:
    Golub and Van Loan. Matrix Computations (4th ed., 2013), Section 10.3 (block Lanczos).
    Musco and Musco. Randomized block Krylov methods for stronger and faster approximate singular value
    decomposition (NeurIPS 2015).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from flatminima.numerics.lanczos import ROUND_OFF_FACTOR, extreme_eigenpairs

Matmul = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class SpectralNormEstimate:
    """sigma ~ ||W||_op (Ritz value), an upper-type bound sigma_bound, and the work done."""

    sigma: float
    sigma_bound: float
    num_products: int


def block_lanczos_norm(
    matmul: Matmul,
    rmatmul: Matmul,
    num_columns: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator,
    block_size: int = 4,
    steps: int = 12,
) -> SpectralNormEstimate:
    """Estimate ||W||_op for W with ``num_columns`` columns from W X (``matmul``) and W^T Y (``rmatmul``).

    Args:
        matmul: X (n, b) -> W X.
        rmatmul: Y -> W^T Y.
        num_columns: n.
        dtype: dtype of the start block.
        device: device of the start block.
        generator: CPU generator of the Gaussian start block.
        block_size: columns per block.
        steps: block Krylov steps (the space has block_size * (steps + 1) columns at most).

    Returns:
        The Ritz estimate, the residual-inflated bound, and the number of W / W^T block products.
    """
    block = min(block_size, num_columns)
    start = torch.randn(num_columns, block, generator=generator, dtype=torch.float64)
    state, pairs = extreme_eigenpairs(
        lambda X: rmatmul(matmul(X)), start.to(dtype=dtype, device=device), 1, max_blocks=steps + 1
    )
    theta = max(float(pairs.values[0]), 0.0)
    residual = max(float(pairs.residuals[0]), ROUND_OFF_FACTOR * torch.finfo(dtype).eps * theta)
    return SpectralNormEstimate(theta**0.5, (theta + residual) ** 0.5, 2 * state.num_blocks)
