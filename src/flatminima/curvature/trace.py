"""Trace of a Hessian: exact (basis products), Hutchinson and Hutch++ estimates, and the scaled trace.

Hutchinson: tr H = E[z^T H z] for any probe with E[z z^T] = I; the estimate is the mean of z_j^T H z_j
over independent probes, reported with its standard error. Rademacher probes have variance
2(||H||_F^2 - sum_i H_ii^2) per probe, Gaussian probes 2||H||_F^2.

Hutch++: with a sketch S (n x k), Q = orth(H S); tr H = tr(Q^T H Q) + tr(P H P), P = I - Q Q^T, the first
term exact and the second estimated by Hutchinson on the deflated operator. For a decaying spectrum
the residual variance is much smaller: O(1/eps) instead of O(1/eps^2) products for relative error eps.

Scaled trace (Ding et al. 2024): sum over parameter blocks of tr(H_bb) / rows_b, i.e. tr(S H S) with
S = diag(1/sqrt(rows)); for f(L, R) this is tr H_LL / d1 + tr H_RR / d2.

References:
    M. F. Hutchinson. A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines. Comm. Statist. Simulation Comput. 19(2), 1990.
    R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff. Hutch++: optimal stochastic trace estimation.
    SOSA 2021.
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from flatminima._checks import check_int_in_range
from flatminima.curvature.estimate import Estimate, check_sampling, draw_probes, sample_until
from flatminima.curvature.hessian import HessianOperator
from flatminima.curvature.linear_operator import LinearOperator, ScaledOperator, basis_blocks


def exact_trace(operator: LinearOperator, *, batch_size: int = 64) -> torch.Tensor:
    """Return tr H = sum_i e_i^T H e_i by n basis products, ``batch_size`` at a time (small n only).

    Example:
        >>> H = HessianOperator(lambda p: (p["x"] ** 2).sum(), {"x": torch.ones(3, dtype=torch.float64)})
        >>> float(exact_trace(H))
        6.0
    """
    check_int_in_range("batch_size", batch_size, low=1)
    total = torch.zeros((), dtype=operator.dtype, device=operator.device)
    start = 0
    for E in basis_blocks(operator, batch_size):
        width = E.shape[1]
        total = total + operator.matmat(E)[start : start + width].diagonal().sum()
        start += width
    return total


def hutchinson_trace(
    operator: LinearOperator,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    rtol: float | None = None,
    min_probes: int = 10,
    batch_size: int = 32,
) -> Estimate:
    """Hutchinson's estimate of tr H with its standard error.

    tr H ~ (1/N) sum_j z_j^T H z_j, stderr = std_j(z_j^T H z_j) / sqrt(N), the quadratic forms from
    ``operator.quadratic_forms`` (one Hessian-vector product each, or a cheaper closed form where the
    operator has one). Without ``rtol`` exactly
    ``num_probes`` probes are used; with ``rtol`` probes are added ``batch_size`` at a time until
    stderr <= rtol |estimate| (never before ``min_probes``), at most ``num_probes``
    (``converged=False`` if the budget runs out first). There is always a minimum of ``min_probes``
    (default 10): an estimator that stops after 2 probes has no usable error bar.

    Args:
        operator: the symmetric operator H (e.g. a :class:`HessianOperator`).
        num_probes: the probe budget (>= min_probes).
        generator: the random stream of the probes (required; the global RNG is never used).
        distribution: "rademacher" (+-1 entries; default) or "gaussian".
        rtol: target relative standard error, or None for a fixed probe count.
        min_probes: the fewest probes behind any estimate (>= 2).
        batch_size: probes applied together (vectorized Hessian-vector products).

    Returns:
        Estimate(value, stderr, num_matvecs, num_samples, converged).

    Raises:
        InputDataError: if ``num_probes`` < ``min_probes``, ``min_probes`` < 2, or ``rtol`` <= 0.
        InputTypeError: if ``generator`` is not a torch.Generator.

    Example:
        >>> H = HessianOperator(lambda p: (p["x"] ** 2).sum(), {"x": torch.ones(5, dtype=torch.float64)})
        >>> hutchinson_trace(H, 20, generator=torch.Generator().manual_seed(0)).value
        10.0

    References:
        Hutchinson (1990); Avron and Toledo, J. ACM 58(2), 2011.
    """
    generator = check_sampling(num_probes, min_probes, rtol, batch_size, distribution, generator)
    stats, converged = sample_until(
        operator.quadratic_forms,
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


def hutchpp_trace(
    operator: LinearOperator,
    num_probes: int = 30,
    *,
    generator: torch.Generator | None = None,
    sketch_size: int | None = None,
    distribution: str = "rademacher",
    rtol: float | None = None,
    min_probes: int = 10,
    batch_size: int = 32,
) -> Estimate:
    """Hutch++ estimate of tr H: an exact trace on a sketched top subspace plus Hutchinson on the rest.

    Q = orth(H S) for a random S (n x k); tr H = tr(Q^T H Q) + E[z^T P H P z] with P = I - Q Q^T. The
    cost is 2k products for the sketch plus one per residual probe; the standard error is that of the
    residual Hutchinson part (0 when k >= n, where the estimate is exact). With the default
    ``sketch_size = num_probes`` the budget splits in thirds as in Meyer et al.

    Args:
        operator: the symmetric operator H.
        num_probes: the residual probe budget (>= min_probes).
        generator: the random stream (required).
        sketch_size: k, the number of sketch vectors (default ``num_probes``; capped at n).
        distribution: "rademacher" (default) or "gaussian" sketch and probe vectors.
        rtol: target relative standard error of the total, or None for a fixed probe count.
        min_probes: the fewest residual probes behind any estimate (>= 2).
        batch_size: vectors applied together.

    Returns:
        Estimate(value, stderr, num_matvecs = 2k + residual probes, num_samples, converged).

    Raises:
        InputDataError: as :func:`hutchinson_trace`, or if ``sketch_size`` < 1.

    Example:
        >>> H = HessianOperator(lambda p: (p["x"] ** 2).sum(), {"x": torch.ones(5, dtype=torch.float64)})
        >>> round(hutchpp_trace(H, 10, generator=torch.Generator().manual_seed(0)).value, 10)
        10.0

    References:
        Meyer, Musco, Musco, Woodruff. Hutch++: optimal stochastic trace estimation. SOSA 2021.
    """
    generator = check_sampling(num_probes, min_probes, rtol, batch_size, distribution, generator)
    k = num_probes if sketch_size is None else check_int_in_range("sketch_size", sketch_size, low=1)
    k = min(k, operator.size)
    S = draw_probes(
        operator.size,
        k,
        distribution=distribution,
        generator=generator,
        dtype=operator.dtype,
        device=operator.device,
    )
    Q = torch.linalg.qr(_matmat_blocks(operator, S, batch_size)).Q
    top = float((Q * _matmat_blocks(operator, Q, batch_size)).sum())
    if k >= operator.size:
        return Estimate(top, 0.0, 2 * k, 0, True)

    def deflated(Z: torch.Tensor) -> torch.Tensor:
        Z = Z - Q @ (Q.mT @ Z)
        return operator.quadratic_forms(Z)

    stats, converged = sample_until(
        deflated,
        operator,
        num_probes=num_probes,
        min_probes=min_probes,
        rtol=rtol,
        batch_size=batch_size,
        distribution=distribution,
        generator=generator,
        offset=top,
    )
    residual, stderr = stats.mean_and_stderr()
    return Estimate(top + residual, stderr, 2 * k + stats.count, stats.count, converged)


def exact_scaled_trace(
    operator: HessianOperator,
    *,
    block_weights: Mapping[str, float] | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Return the scaled trace sum_b w_b tr(H_bb), w_b = 1 / rows_b by default (Ding et al.).

    For f(L, R) = (1/m)||A(L R^T) - b||^2 this equals 2(||D1 L||_F^2 + ||D2 R||_F^2) at every point.

    Args:
        operator: a :class:`HessianOperator` (its parameter blocks define the weights).
        block_weights: optional weights by parameter name (default 1 / shape[0]).
        batch_size: basis vectors per batched product.

    Example:
        >>> w = {"L": torch.ones(4, 2, dtype=torch.float64)}
        >>> float(exact_scaled_trace(HessianOperator(lambda p: (p["L"] ** 2).sum(), w)))
        4.0

    References:
        Ding, Drusvyatskiy, Fazel, Harchaoui (2024), Section 3.
    """
    return exact_trace(ScaledOperator(operator, operator.block_scale(block_weights)), batch_size=batch_size)


def hutchinson_scaled_trace(
    operator: HessianOperator,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    block_weights: Mapping[str, float] | None = None,
    distribution: str = "rademacher",
    rtol: float | None = None,
    min_probes: int = 10,
    batch_size: int = 32,
) -> Estimate:
    """Hutchinson's estimate of the scaled trace with block-scaled probes z_b / sqrt(rows_b).

    Arguments as :func:`hutchinson_trace`, plus ``block_weights`` as :func:`exact_scaled_trace`.

    Example:
        >>> w = {"L": torch.ones(4, 2, dtype=torch.float64)}
        >>> H = HessianOperator(lambda p: (p["L"] ** 2).sum(), w)
        >>> hutchinson_scaled_trace(H, 10, generator=torch.Generator().manual_seed(0)).value
        4.0

    References:
        Ding, Drusvyatskiy, Fazel, Harchaoui (2024), Section 3.
    """
    scaled = ScaledOperator(operator, operator.block_scale(block_weights))
    return hutchinson_trace(
        scaled,
        num_probes,
        generator=generator,
        distribution=distribution,
        rtol=rtol,
        min_probes=min_probes,
        batch_size=batch_size,
    )


def _matmat_blocks(operator: LinearOperator, V: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([operator.matmat(block) for block in V.split(batch_size, dim=1)], dim=1)
