r"""Statistical dimension of the descent cones of the nuclear norm and of the trace on the PSD cone.

The statistical dimension of a closed convex cone K is delta(K) = E ||Pi_K(g)||^2 = E dist(g, K°)^2
with g standard Gaussian in the ambient space. For the descent cone D(f, X) of a norm-like function f
at X, K° = cone(∂f(X)), and Amelunxen, Lotz, McCoy & Tropp (ALMT) show that m Gaussian measurements
recover X by min f s.t. A(Z) = A(X) with probability >= 1 - eta once m >= delta + a_eta sqrt(D), and
fail once m <= delta - a_eta sqrt(D) (D the ambient dimension, a_eta = sqrt(8 log(4/eta))): delta is
the location of the phase transition.

All three functions evaluate ALMT's formula (Recipe 4.1 with the limiting spectral law; Prop. 4.7 for
the nuclear norm)

    delta ≈ inf_{tau >= 0} E dist(g, tau ∂f(X))^2,

which is an upper bound on delta with 0 <= bound - delta <= 2 sup_{s in ∂f(X)} ||s|| / f(X / ||X||)
(ALMT, Theorem 4.3), with the expectation over the spectrum of the Gaussian block orthogonal to X
replaced by its Marchenko-Pastur / semicircle limit. Writing n1 <= n2 for the sizes of that block,

* nuclear norm at a rank-r d1 x d2 matrix (d1 <= d2, n1 = d1 - r, n2 = d2 - r, y = n1 / n2):

      delta = r (d1 + d2 - r) + n2 min_{t >= 0} [ r t^2 + n1 ∫_{max(t, a-)}^{a+} (s - t)^2 phi_y(s) ds ],

  phi_y(s) = sqrt((a+^2 - s^2)(s^2 - a-^2)) / (pi y s) on [a-, a+], a± = 1 ± sqrt(y): the law of the
  singular values of an n1 x n2 Gaussian matrix divided by sqrt(n2) (quarter circle for y = 1);
  divided by d1 d2 this is ALMT's psi(rho, nu) with rho = r / d1, nu = d1 / d2.
* nuclear norm on symmetric d x d matrices at a rank-r symmetric matrix of any signature (n = d - r):

      delta = r (r + 1) / 2 + r (d - r) + (n / 2) min_{t >= 0} [ r t^2 + 2 n ∫_t^2 (x - t)^2 w(x) dx ],

  w(x) = sqrt(4 - x^2) / (2 pi) the semicircle law of a GOE matrix (Frobenius-standard Gaussian on
  Sym(d)) divided by sqrt(n / 2). The signs of the eigenvalues of X do not change delta: flipping the
  sign of diagonal entries of the Gaussian block along X leaves its law unchanged.
* trace on the PSD cone (f = tr + indicator of X >= 0) at a rank-r PSD matrix: ∂f(X) =
  {U U^T + U⊥ W U⊥^T : W <= I}, so only the eigenvalues above tau count:

      delta = r (r + 1) / 2 + r (d - r) + (n / 2) min_{t >= 0} [ r t^2 + n ∫_t^2 (x - t)^2 w(x) dx ].

Limits: rank 0 gives 0 (the descent cone at 0 is {0}); full rank gives the ambient dimension (d1 d2
or d (d + 1) / 2), where the exact value is one half less (the descent cone is a half space); the
values increase with the rank. The minimization over t is one-dimensional and convex; it is solved by
root finding on its derivative (scipy ``brentq``) with the integrals from ``scipy.integrate.quad``, in
float64.

References:
    D. Amelunxen, M. Lotz, M. B. McCoy, J. A. Tropp. Living on the edge: phase transitions in convex
    programs with random data. Information and Inference 3(3), 2014 (Prop. 4.7, Thm. 4.3, Recipe 4.1).
    V. Chandrasekaran, B. Recht, P. Parrilo, A. Willsky. The convex geometry of linear inverse
    problems. Found. Comput. Math. 12, 2012.
    S. Oymak, B. Hassibi. Sharp MSE bounds for proximal denoising. Found. Comput. Math. 16, 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from flatminima._checks import check_int_in_range

__all__ = [
    "marchenko_pastur_singular_value_density",
    "nuclear_norm_statistical_dimension",
    "psd_trace_statistical_dimension",
    "symmetric_nuclear_norm_statistical_dimension",
]

_QUAD_OPTIONS = {"limit": 200, "epsabs": 1e-12, "epsrel": 1e-10}


def marchenko_pastur_singular_value_density(s: float, ratio: float) -> float:
    """phi_y(s) = sqrt((a+^2 - s^2)(s^2 - a-^2)) / (pi y s) on [a-, a+], a± = 1 ± sqrt(y), else 0.

    The limiting law of the singular values of an n1 x n2 standard Gaussian matrix divided by
    sqrt(n2), n1 / n2 -> y = ``ratio`` in (0, 1] (the quarter-circle law sqrt(4 - s^2) / pi for y = 1).

    Example:
        >>> round(marchenko_pastur_singular_value_density(1.0, 1.0), 6)  # sqrt(3) / pi
        0.551329
    """
    lower, upper = 1.0 - math.sqrt(ratio), 1.0 + math.sqrt(ratio)
    if not lower < s < upper:
        return 0.0
    # sqrt((a+^2 - s^2)(s^2 - a-^2)) / s written without the 0 / 0 at s = a- = 0 (y = 1).
    return math.sqrt((upper**2 - s * s) * (1.0 - (lower / s) ** 2)) / (math.pi * ratio)


def _semicircle(x: float) -> float:
    return math.sqrt(max(4.0 - x * x, 0.0)) / (2.0 * math.pi)


def _quad(function: Callable[[float], float], low: float, high: float) -> float:
    from scipy.integrate import quad

    if high <= low:
        return 0.0
    value, _ = quad(function, low, high, **_QUAD_OPTIONS)
    return float(value)


def _tail_moments(
    density: Callable[[float], float], support: tuple[float, float], t: float
) -> tuple[float, float]:
    """(∫ (s - t)_+ density, ∫ (s - t)_+^2 density) over ``support``."""
    low = max(t, support[0])
    first = _quad(lambda s: (s - t) * density(s), low, support[1])
    second = _quad(lambda s: (s - t) ** 2 * density(s), low, support[1])
    return first, second


def _min_over_threshold(
    rank: int, weight: float, density: Callable[[float], float], support: tuple[float, float]
) -> float:
    """min_{t >= 0} r t^2 + weight ∫ (s - t)_+^2 density(s) ds (convex in t; 0 when r = 0)."""
    from scipy.optimize import brentq

    if rank == 0 or weight == 0.0:
        return 0.0  # r = 0: t -> sup(support) gives 0; weight = 0: t = 0 gives 0

    def derivative(t: float) -> float:  # half the derivative: r t - weight ∫ (s - t)_+ density
        return rank * t - weight * _tail_moments(density, support, t)[0]

    t_star = float(brentq(derivative, 0.0, support[1], xtol=1e-13, rtol=1e-13))
    return rank * t_star**2 + weight * _tail_moments(density, support, t_star)[1]


def nuclear_norm_statistical_dimension(d1: int, d2: int, rank: int) -> float:
    """Statistical dimension of the descent cone of ||.||_* at a rank-``rank`` d1 x d2 matrix (ALMT).

    delta = r (d1 + d2 - r) + n2 min_t [r t^2 + n1 ∫ (s - t)_+^2 phi_y(s) ds] with n1 <= n2 the sizes of
    the block orthogonal to X (module docstring); the Gaussian measurement count at which nuclear-norm
    minimization starts to recover X. An upper bound on the exact value with an error O(sqrt(d1 / r))
    (ALMT Thm. 4.3); d1 d2 at full rank, 0 at rank 0.

    Raises:
        InputDataError, InputTypeError: d1, d2 not positive integers, or rank not in [0, min(d1, d2)].

    Example:
        >>> nuclear_norm_statistical_dimension(10, 10, 0), nuclear_norm_statistical_dimension(3, 5, 3)
        (0.0, 15.0)
    """
    check_int_in_range("d1", d1, low=1)
    check_int_in_range("d2", d2, low=1)
    small, large = min(d1, d2), max(d1, d2)
    check_int_in_range("rank", rank, low=0, high=small, high_name="min(d1, d2)")
    n1, n2 = small - rank, large - rank
    base = float(rank * (small + large - rank))
    if n1 == 0:
        return base
    ratio = n1 / n2
    support = (1.0 - math.sqrt(ratio), 1.0 + math.sqrt(ratio))

    def density(s: float) -> float:
        return marchenko_pastur_singular_value_density(s, ratio)

    return base + n2 * _min_over_threshold(rank, float(n1), density, support)


def _symmetric(d: int, rank: int, sides: int) -> float:
    check_int_in_range("d", d, low=1)
    check_int_in_range("rank", rank, low=0, high=d, high_name="d")
    n = d - rank
    base = rank * (rank + 1) / 2 + rank * n
    if n == 0:
        return base
    return base + (n / 2) * _min_over_threshold(rank, float(sides * n), _semicircle, (0.0, 2.0))


def symmetric_nuclear_norm_statistical_dimension(d: int, rank: int) -> float:
    """Statistical dimension of the descent cone of ||.||_* on symmetric d x d matrices at rank ``rank``.

    The relaxation of the quadratic network (min ||Z||_* over symmetric Z, any signature of the truth):
    delta = r (r + 1) / 2 + r (d - r) + (n / 2) min_t [r t^2 + 2 n ∫_t^2 (x - t)^2 w(x) dx], n = d - r,
    w the semicircle law (module docstring); d (d + 1) / 2 at full rank, 0 at rank 0.

    Raises:
        InputDataError, InputTypeError: d not a positive integer, or rank not in [0, d].

    Example:
        >>> symmetric_nuclear_norm_statistical_dimension(4, 4)
        10.0
    """
    return _symmetric(d, rank, 2)


def psd_trace_statistical_dimension(d: int, rank: int) -> float:
    """Statistical dimension of the descent cone of tr + indicator(Z >= 0) at a rank-``rank`` PSD matrix.

    The relaxation of covariance estimation / phase retrieval over the PSD cone: as the symmetric
    nuclear norm but one-sided, delta = r (r + 1) / 2 + r (d - r) + (n / 2) min_t [r t^2 +
    n ∫_t^2 (x - t)^2 w(x) dx]; never larger than :func:`symmetric_nuclear_norm_statistical_dimension`.

    Raises:
        InputDataError, InputTypeError: d not a positive integer, or rank not in [0, d].

    Example:
        >>> psd_trace_statistical_dimension(5, 0)
        0.0
    """
    return _symmetric(d, rank, 1)
