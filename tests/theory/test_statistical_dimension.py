"""Statistical dimensions of nuclear-norm and PSD-trace descent cones against Monte Carlo and limits.

The reference is the definition: delta(D(f, X)) = E dist(G, cone(∂f(X)))^2 with G standard Gaussian,
where for X = diag(I_r, 0) (orthogonal invariance makes this general) and ∂||X||_* =
{[I 0; 0 W] : ||W|| <= 1} the distance to tau ∂f is

    ||G11 - tau I||^2 + ||G12||^2 + ||G21||^2 + sum_i (sigma_i(G22) - tau)_+^2,

(eigenvalues |lambda_i| of the symmetric block for the symmetric nuclear norm, lambda_i for the PSD
trace), minimized over tau >= 0 exactly per sample: the minimizer of this convex piecewise quadratic is
(tr G11 + sum of the k largest sigma_i) / (r + k) for the right k, so the minimum over the candidates
k = 0..n (and tau = 0) is the minimum.
"""

from __future__ import annotations

import doctest
import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from flatminima.errors import InputDataError, InputTypeError
from flatminima.theory import (
    marchenko_pastur_singular_value_density,
    nuclear_norm_statistical_dimension,
    psd_trace_statistical_dimension,
    symmetric_nuclear_norm_statistical_dimension,
)


def _min_over_tau(trace11: np.ndarray, rank: int, spectrum: np.ndarray, const: np.ndarray) -> np.ndarray:
    """min_{tau >= 0} const - 2 tau tr(G11) + r tau^2 + sum_i (s_i - tau)_+^2 per sample (rows)."""
    s = -np.sort(-spectrum, axis=1)
    samples, n = s.shape
    partial = np.concatenate([np.zeros((samples, 1)), np.cumsum(s, axis=1)], axis=1)
    tau = np.clip((trace11[:, None] + partial) / (rank + np.arange(n + 1)), 0.0, None)
    tau = np.concatenate([tau, np.zeros((samples, 1))], axis=1)
    excess = np.clip(s[:, None, :] - tau[:, :, None], 0.0, None)
    values = rank * tau**2 - 2 * tau * trace11[:, None] + (excess**2).sum(-1)
    return const + values.min(axis=1)


def monte_carlo_nuclear(
    d1: int, d2: int, rank: int, samples: int, rng: np.random.Generator
) -> tuple[float, float]:
    g = rng.standard_normal((samples, d1, d2))
    block = g[:, rank:, rank:]
    const = (g**2).sum((1, 2)) - (block**2).sum((1, 2))
    spectrum = np.linalg.svd(block, compute_uv=False) if rank < min(d1, d2) else np.zeros((samples, 0))
    values = _min_over_tau(np.trace(g[:, :rank, :rank], axis1=1, axis2=2), rank, spectrum, const)
    return float(values.mean()), float(values.std() / math.sqrt(samples))


def monte_carlo_symmetric(
    d: int, rank: int, samples: int, rng: np.random.Generator, *, psd: bool
) -> tuple[float, float]:
    a = rng.standard_normal((samples, d, d))
    g = (a + a.transpose(0, 2, 1)) / 2  # standard Gaussian on Sym(d) with the Frobenius inner product
    block = g[:, rank:, rank:]
    const = (g**2).sum((1, 2)) - (block**2).sum((1, 2))
    eigenvalues = np.linalg.eigvalsh(block)
    spectrum = eigenvalues if psd else np.abs(eigenvalues)
    values = _min_over_tau(np.trace(g[:, :rank, :rank], axis1=1, axis2=2), rank, spectrum, const)
    return float(values.mean()), float(values.std() / math.sqrt(samples))


def test_the_reference_is_exact_at_full_rank() -> None:
    # full rank: the descent cone is a half space, delta = D - 1/2 exactly
    rng = np.random.default_rng(0)
    mean, se = monte_carlo_nuclear(4, 5, 4, 4000, rng)
    assert abs(mean - (20 - 0.5)) < 4 * se
    mean, se = monte_carlo_symmetric(4, 4, 4000, rng, psd=False)
    assert abs(mean - (10 - 0.5)) < 4 * se


@pytest.mark.parametrize(("d1", "d2", "rank"), [(8, 8, 2), (6, 9, 2), (10, 10, 3), (9, 6, 1)])
def test_nuclear_norm_matches_monte_carlo(d1: int, d2: int, rank: int) -> None:
    # ALMT's formula (an upper bound with the Marchenko-Pastur limit) within 2 % at these sizes
    mean, se = monte_carlo_nuclear(d1, d2, rank, 3000, np.random.default_rng(d1 * 100 + d2 * 10 + rank))
    value = nuclear_norm_statistical_dimension(d1, d2, rank)
    assert abs(value - mean) <= 3 * se + 0.02 * mean, (value, mean, se)


@pytest.mark.parametrize(("d", "rank"), [(8, 2), (10, 3), (12, 1)])
def test_symmetric_and_psd_match_monte_carlo(d: int, rank: int) -> None:
    # the semicircle limit is within 5 % at these sizes (finite-n GOE effects; 13 % separates the cones)
    rng = np.random.default_rng(d * 10 + rank)
    sym, sym_se = monte_carlo_symmetric(d, rank, 3000, rng, psd=False)
    psd, psd_se = monte_carlo_symmetric(d, rank, 3000, rng, psd=True)
    assert abs(symmetric_nuclear_norm_statistical_dimension(d, rank) - sym) <= 3 * sym_se + 0.05 * sym
    assert abs(psd_trace_statistical_dimension(d, rank) - psd) <= 3 * psd_se + 0.05 * psd
    assert psd_trace_statistical_dimension(d, rank) < symmetric_nuclear_norm_statistical_dimension(d, rank)
    assert psd + 3 * psd_se < sym


def test_limits_and_monotonicity() -> None:
    for d1, d2 in [(7, 7), (5, 11), (11, 5)]:
        values = [nuclear_norm_statistical_dimension(d1, d2, r) for r in range(min(d1, d2) + 1)]
        assert values[0] == 0.0 and values[-1] == d1 * d2
        assert all(b > a for a, b in itertools.pairwise(values))
        # the manifold dimension r (d1 + d2 - r) is a lower bound
        assert all(v >= r * (d1 + d2 - r) for r, v in enumerate(values))
    assert nuclear_norm_statistical_dimension(5, 11, 2) == pytest.approx(
        nuclear_norm_statistical_dimension(11, 5, 2)
    )
    for function in (symmetric_nuclear_norm_statistical_dimension, psd_trace_statistical_dimension):
        values = [function(9, r) for r in range(10)]
        assert values[0] == 0.0 and values[-1] == 9 * 10 / 2
        assert all(b > a for a, b in itertools.pairwise(values))


def test_proportional_limit_is_stable() -> None:
    # ALMT Prop. 4.7: delta / (d1 d2) converges for r / d1 and d1 / d2 fixed
    small = nuclear_norm_statistical_dimension(100, 200, 10) / (100 * 200)
    large = nuclear_norm_statistical_dimension(400, 800, 40) / (400 * 800)
    assert abs(small - large) < 2e-3
    assert 0.1 * 1.5 - 0.1**2 * 0.5 < large < 1  # above rho + rho nu - rho^2 nu (the manifold part)


def test_density_is_the_singular_value_law() -> None:
    from scipy.integrate import quad

    rng = np.random.default_rng(3)
    n1, n2 = 150, 300
    singular = np.linalg.svd(rng.standard_normal((n1, n2)), compute_uv=False) / math.sqrt(n2)
    ratio = n1 / n2
    low, high = 1 - math.sqrt(ratio), 1 + math.sqrt(ratio)
    mass = quad(lambda s: marchenko_pastur_singular_value_density(s, ratio), low, high)[0]
    mean = quad(lambda s: s * marchenko_pastur_singular_value_density(s, ratio), low, high)[0]
    second = quad(lambda s: s * s * marchenko_pastur_singular_value_density(s, ratio), low, high)[0]
    assert mass == pytest.approx(1.0, abs=1e-8) and second == pytest.approx(1.0, abs=1e-8)
    assert abs(singular.mean() - mean) < 0.01
    assert marchenko_pastur_singular_value_density(high + 0.1, ratio) == 0.0


def test_errors() -> None:
    with pytest.raises(InputDataError, match=r"rank must satisfy 0 <= rank <= min\(d1, d2\) = 3; got rank=4"):
        nuclear_norm_statistical_dimension(3, 5, 4)
    with pytest.raises(InputDataError, match="d1 must be >= 1"):
        nuclear_norm_statistical_dimension(0, 5, 0)
    with pytest.raises(InputTypeError, match="rank must be an integer"):
        psd_trace_statistical_dimension(5, 1.5)
    with pytest.raises(InputDataError, match="rank must satisfy 0 <= rank <= d = 4"):
        symmetric_nuclear_norm_statistical_dimension(4, -1)


def test_docstring_examples(docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples("flatminima.theory.statistical_dimension")
    assert result.failed == 0 and result.attempted >= 4
