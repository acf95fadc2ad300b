"""Non-uniform (power-law) sampling of matrix entries for matrix completion.

Entry (i, j) (1-based) is observed independently with probability

    P_ij = min(1, c i^{-a} j^{-b}),

a product of a row and a column power law with skew exponents a = ``row_skew`` >= 0 and
b = ``column_skew`` >= 0, the constant c > 0 chosen so that the mean probability is the target p:

    (1 / (d1 d2)) sum_ij P_ij = p    (the expected number of observations is exactly p d1 d2).

Without clipping (c i^{-a} j^{-b} <= 1 everywhere) the expected row counts sum_j P_ij are proportional to
i^{-a} and the column counts to j^{-b}: the marginals are the power laws. Where c i^{-a} j^{-b} would exceed
1 the entry is observed surely and c grows to keep the mean; c is found exactly by water-filling on the
sorted weights (no bisection), so the normalization holds to rounding. Skew 0 in both directions is
uniform Bernoulli(p) sampling. Rows and columns are indexed in a fixed order; the ground truths of the
models here are rotation-invariant in distribution, so that order carries no information about M.

This is the independent-Bernoulli version of the product sampling distribution of Srebro and
Salakhutdinov (2010) (who draw entries with replacement from p_row(i) p_col(j)); Foygel, Salakhutdinov,
Shamir and Srebro (2011) study the weighted trace norm ||diag(p_row)^{1/2} X diag(p_col)^{1/2}||_* under it.
The flat relaxation of Ding et al. (2024) is that weighted trace norm with the *empirical* marginals
(D1^2, D2^2 proportional to the observed row and column counts).

Rows or columns may stay unobserved (the more skew, the more likely): the sampler never forces coverage;
the completion model reports them in the instance's metadata (``empty_rows``, ``empty_columns``).

References:
    N. Srebro and R. Salakhutdinov. Collaborative filtering in a non-uniform world: learning with the
    weighted trace norm. NeurIPS 2010.
    R. Foygel, R. Salakhutdinov, O. Shamir and N. Srebro. Learning with the weighted trace-norm under
    arbitrary sampling distributions. NeurIPS 2011.
"""

from __future__ import annotations

import torch

from flatminima._checks import check_generator, check_real, check_shape_pair

#: the largest skew exponent accepted (beyond it all but a few lines are unobserved at any practical size).
MAX_SKEW = 10.0


def check_skew(name: str, value: object) -> float:
    """Return the skew exponent ``value`` as a float if it is finite and in [0, MAX_SKEW]; raise otherwise.

    Raises:
        InputTypeError: not a real number.
        InputDataError: negative, above :data:`MAX_SKEW`, or not finite.
    """
    return check_real(name, value, low=0.0, high=MAX_SKEW)


def power_law_probabilities(
    shape: tuple[int, int], *, row_skew: float, column_skew: float, mean: float
) -> torch.Tensor:
    """The observation probabilities P_ij = min(1, c i^{-a} j^{-b}) with mean exactly ``mean`` (float64).

    Args:
        shape: (d1, d2).
        row_skew: a >= 0, the exponent of the row power law.
        column_skew: b >= 0, the exponent of the column power law.
        mean: p in (0, 1], the mean of P (expected observations p d1 d2).

    Returns:
        P, shape (d1, d2), float64 on CPU, entries in (0, 1], non-increasing along rows and columns.

    Raises:
        InputDataError, InputTypeError: a bad shape, skew or mean (named, with the value).

    Example:
        >>> P = power_law_probabilities((4, 3), row_skew=1.0, column_skew=0.0, mean=0.25)
        >>> round(float(P.mean()), 12), [round(float(v), 4) for v in P[:, 0] / P[0, 0]]
        (0.25, [1.0, 0.5, 0.3333, 0.25])
    """
    d1, d2 = check_shape_pair("shape", shape)
    a = check_skew("row_skew", row_skew)
    b = check_skew("column_skew", column_skew)
    p = check_real("mean", mean, low=0.0, high=1.0, low_open=True)
    rows = torch.arange(1, d1 + 1, dtype=torch.float64).pow(-a)
    cols = torch.arange(1, d2 + 1, dtype=torch.float64).pow(-b)
    weights = torch.outer(rows / rows[0], cols / cols[0])  # largest weight 1, at (1, 1)
    n = d1 * d2
    if p == 1.0:
        return torch.ones(d1, d2, dtype=torch.float64)
    # Water-filling: with the weights sorted, s_1 >= ... >= s_n, clipping the k largest gives
    # c_k = (p n - k) / sum_{l > k} s_l; take the smallest k with c_k s_{k+1} <= 1.
    s = torch.sort(weights.reshape(-1), descending=True).values
    suffix = torch.flip(torch.cumsum(torch.flip(s, [0]), 0), [0])  # suffix[k] = sum_{l >= k} s_l (0-based)
    k = torch.arange(n, dtype=torch.float64)
    c = (p * n - k) / suffix
    feasible = (c * s <= 1.0) & (c > 0)
    first = int(torch.nonzero(feasible)[0, 0]) if bool(feasible.any()) else n - 1
    return torch.clamp(float(c[first]) * weights, max=1.0)


def power_law_mask(
    shape: tuple[int, int],
    *,
    row_skew: float,
    column_skew: float,
    mean: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """A boolean (d1, d2) mask with independent entries, (i, j) observed with probability P_ij.

    P is :func:`power_law_probabilities`; the mask is ``U < P`` with U uniform on [0, 1) drawn from
    ``generator`` (one float64 per entry, row-major), so skews 0 give the uniform Bernoulli(p) mask
    ``torch.rand(d1, d2, generator=generator, dtype=torch.float64) < p`` draw for draw.

    Args:
        shape: (d1, d2).
        row_skew: a >= 0, the exponent of the row power law.
        column_skew: b >= 0, the exponent of the column power law.
        mean: the mean observation probability p in (0, 1].
        generator: a CPU ``torch.Generator``.

    Returns:
        The mask (may have empty rows or columns; nothing is forced).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> mask = power_law_mask((50, 50), row_skew=1.0, column_skew=1.0, mean=0.2, generator=g)
        >>> mask.shape, bool(mask[0].sum() > mask[-1].sum())
        (torch.Size([50, 50]), True)
    """
    check_generator("generator", generator)
    P = power_law_probabilities(shape, row_skew=row_skew, column_skew=column_skew, mean=mean)
    return torch.rand(*P.shape, generator=generator, dtype=torch.float64) < P
