"""The binary relative entropy kl(q || p) and its upper and lower inverses, by bisection.

For q, p in [0, 1] (Bernoulli means) the relative entropy is

    kl(q || p) = q log(q / p) + (1 - q) log((1 - q) / (1 - p)),

with 0 log 0 = 0 and a log(a / 0) = +inf for a > 0. For fixed q it is convex in p, zero at p = q,
decreasing on [0, q] and increasing on [q, 1]. Its inverses at a budget c >= 0 are

    kl^{-1}_upper(q, c) = sup {p in [q, 1] : kl(q || p) <= c},
    kl^{-1}_lower(q, c) = inf {p in [0, q] : kl(q || p) <= c}.

The upper inverse turns a PAC-Bayes-kl or Chernoff statement kl(empirical || true) <= c into an upper
bound on the true mean (Langford and Seeger 2001; Langford and Caruana 2001); the lower inverse gives
the matching lower bound. Both are computed by bisection on the monotone branch, run until the bracket
cannot shrink in double precision (at most about 1,100 halvings), and the returned end of the bracket is
the conservative one: the upper inverse returns a p with kl(q || p) >= c (never below the exact
inverse) and the lower inverse likewise, so a bound computed with them is never optimistic. Pinsker's
inequality kl(q || p) >= 2 (q - p)^2 gives the closed-form relaxation p <= q + sqrt(c / 2) (McAllester's
form), which is never smaller than the upper inverse.

References:
    J. Langford, M. Seeger. Bounds for averaging classifiers. CMU-CS-01-102, 2001.
    J. Langford, R. Caruana. (Not) bounding the true error. NIPS 2001.
    G. K. Dziugaite, D. M. Roy. Computing nonvacuous generalization bounds for deep (stochastic) neural
    networks with many more parameters than training data. UAI 2017, Section 2.
"""

from __future__ import annotations

import math

import torch

from flatminima._checks import check_real

_MAX_HALVINGS = 2000


def _kl(q: float, p: float) -> float:
    """kl(q || p) with 0 log 0 = 0; log1p keeps the second term accurate for p or q near 0."""
    first = 0.0 if q == 0.0 else (math.inf if p == 0.0 else q * (math.log(q) - math.log(p)))
    if q == 1.0:
        second = 0.0
    elif p == 1.0:
        second = math.inf
    else:
        second = (1.0 - q) * (math.log1p(-q) - math.log1p(-p))
    return max(first + second, 0.0)


def bernoulli_kl(q: float, p: float) -> float:
    """The relative entropy kl(q || p) of Bernoulli(q) from Bernoulli(p).

    Args:
        q: the first mean, in [0, 1] (e.g. an empirical error).
        p: the second mean, in [0, 1] (e.g. a true error).

    Returns:
        kl(q || p) >= 0, +inf when p is 0 or 1 and q differs from it.

    Raises:
        InputDataError: if q or p is outside [0, 1] or not finite.

    Example:
        >>> round(bernoulli_kl(0.5, 0.25), 6)  # 0.5 log 2 + 0.5 log(2/3)
        0.143841
    """
    q = check_real("q", q, low=0.0, high=1.0)
    p = check_real("p", p, low=0.0, high=1.0)
    return _kl(q, p)


def _check_budget(q: float, budget: float) -> tuple[float, float]:
    q = check_real("q", q, low=0.0, high=1.0)
    budget = check_real("budget", budget, low=0.0)
    return q, budget


def kl_inverse_upper(q: float, budget: float) -> float:
    """The upper inverse sup {p in [q, 1] : kl(q || p) <= budget}: an upper bound on p.

    Args:
        q: the empirical mean, in [0, 1].
        budget: c >= 0, the right-hand side of the kl statement (e.g. (KL(Q||P) + log(2 sqrt(m)/delta)) / m).

    Returns:
        The upper inverse, rounded up (the returned p satisfies kl(q || p) >= budget unless p = 1).

    Raises:
        InputDataError: if q is outside [0, 1] or ``budget`` is negative or not finite.

    Example:
        >>> p = kl_inverse_upper(0.1, 0.05)
        >>> round(p, 4), abs(bernoulli_kl(0.1, p) - 0.05) < 1e-12
        (0.2201, True)
    """
    q, budget = _check_budget(q, budget)
    if budget == 0.0 or q == 1.0:
        return q
    if _kl(q, 1.0) <= budget:
        return 1.0
    return _bisect(q, budget, q, 1.0, upper=True)


def kl_inverse_lower(q: float, budget: float) -> float:
    """The lower inverse inf {p in [0, q] : kl(q || p) <= budget}: a lower bound on p.

    Args:
        q: the empirical mean, in [0, 1].
        budget: c >= 0.

    Returns:
        The lower inverse, rounded down (the returned p satisfies kl(q || p) >= budget unless p = 0).

    Raises:
        InputDataError: if q is outside [0, 1] or ``budget`` is negative or not finite.

    Example:
        >>> p = kl_inverse_lower(0.5, 0.1)
        >>> round(p, 4), abs(bernoulli_kl(0.5, p) - 0.1) < 1e-12
        (0.2871, True)
    """
    q, budget = _check_budget(q, budget)
    if budget == 0.0 or q == 0.0:
        return q
    if _kl(q, 0.0) <= budget:
        return 0.0
    return _bisect(q, budget, 0.0, q, upper=False)


def _bisect(q: float, budget: float, low: float, high: float, *, upper: bool) -> float:
    """Bisection on [low, high] for the p where kl(q || p) crosses ``budget``, rounded outwards.

    kl(q || .) increases away from q, so the points beyond the crossing (above it for the upper inverse,
    below it for the lower one) are those with kl > budget; the bracket end on that side is returned.
    """
    for _ in range(_MAX_HALVINGS):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if (_kl(q, middle) > budget) == upper:
            high = middle
        else:
            low = middle
    return high if upper else low


def gaussian_kl(
    mean: torch.Tensor, variance: torch.Tensor, prior_mean: torch.Tensor, prior_variance: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean, diag(variance)) || N(prior_mean, prior_variance I)), differentiable.

    ``prior_variance`` may be a tensor of several variances (a KL per entry).

    Example:
        >>> z, one = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        >>> float(gaussian_kl(z, one, z, torch.tensor(1.0, dtype=torch.float64)))
        0.0
    """
    d = mean.numel()
    spread = variance.sum() + (mean - prior_mean).square().sum()
    return 0.5 * (spread / prior_variance - d + d * torch.log(prior_variance) - torch.log(variance).sum())
