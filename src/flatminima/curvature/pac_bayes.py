"""PAC-Bayes sharpness: the largest Gaussian noise scale the loss tolerates, and Jiang et al.'s bounds.

sigma is a STANDARD DEVIATION. Plain: u ~ N(0, sigma^2 I), so each coordinate moves by sigma.
Magnitude-aware: u_i ~ N(0, sigma'^2 w_i^2 + eps^2) (eps = 1e-3), i.e. standard deviation
sqrt(sigma'^2 w_i^2 + eps^2) for coordinate i. (A widely used re-implementation passes the variance
sigma'^2 w_i^2 + eps^2 where torch.normal expects the standard deviation; here the standard deviation is
passed, so sigma and sigma' mean what the bounds assume.)

The scale is the largest sigma in [0, sigma_max] with E_u[L(w + u)] - L(w) <= threshold, found by
bisection (``num_bisections`` halvings) on Monte Carlo estimates over ``num_samples`` draws. The draws
z_j ~ N(0, I) are fixed once (common random numbers, u_j = std(sigma) * z_j), so the estimated
increase is a smooth function of sigma and the bisection is consistent. The result reports the
estimate at the returned sigma with its standard error. Jiang et al. (2020) use a 0.1 increase of the
training error, sigma in [0, 2], 15 bisections and 10 draws; those are the defaults.

Measures built on sigma (Jiang et al. 2020, eqs. 48, 49, 53, 56, 57, 61; m examples, omega parameters,
w0 the initialization):
    pac_bayes_init = ||w - w0||^2 / (4 sigma^2) + log(m / sigma) + 10,
    pac_bayes_orig = ||w||^2 / (4 sigma^2) + log(m / sigma) + 10,
    pac_bayes_flatness = 1 / sigma^2,
    pac_bayes_mag_init = 1/4 sum_i log[(eps^2 + (sigma'^2 + 1) ||w - w0||^2 / omega)
                                       / (eps^2 + sigma'^2 |w_i - w0_i|^2)] + log(m / sigma') + 10,
    pac_bayes_mag_orig = the same with w0 = 0,
    pac_bayes_mag_flatness = 1 / sigma'^2.

References:
    Y. Jiang, B. Neyshabur, H. Mobahi, D. Krishnan, S. Bengio. Fantastic generalization measures and
    where to find them. ICLR 2020, Appendix C.
    G. K. Dziugaite, D. M. Roy. Computing nonvacuous generalization bounds for deep (stochastic) neural
    networks with many more parameters than training data. UAI 2017.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

from flatminima._checks import check_generator, check_int_in_range, check_real, check_tensor
from flatminima.curvature.hessian import HessianOperator
from flatminima.errors import InputDataError


@dataclasses.dataclass(frozen=True)
class PacBayesSigma:
    """The result of :func:`pac_bayes_sigma`.

    Attributes:
        sigma: the noise scale, a standard deviation (plain) or the relative standard deviation
            sigma' (magnitude-aware).
        increase: Monte Carlo estimate of E[L(w + u)] - L(w) at ``sigma``.
        increase_stderr: its standard error.
        loss: L(w).
        threshold: the allowed increase.
        magnitude_aware: which noise model was used.
        saturated: True when even ``sigma_max`` stayed below the threshold (sigma = sigma_max).
        num_evaluations: loss evaluations spent.
    """

    sigma: float
    increase: float
    increase_stderr: float
    loss: float
    threshold: float
    magnitude_aware: bool
    saturated: bool
    num_evaluations: int


def pac_bayes_sigma(
    operator: HessianOperator,
    *,
    max_increase: float = 0.1,
    relative: bool = False,
    magnitude_aware: bool = False,
    epsilon: float = 1e-3,
    num_samples: int = 10,
    num_bisections: int = 15,
    sigma_max: float = 2.0,
    generator: torch.Generator | None = None,
) -> PacBayesSigma:
    """The largest noise standard deviation sigma with E[L(w + u)] - L(w) <= threshold.

    Args:
        operator: a :class:`HessianOperator`; L is its loss (for the 0-1 error of Jiang et al., build
            it from a closure returning the error rate), perturbed on its selected parameters.
        max_increase: the threshold (> 0), absolute, or relative to L(w) if ``relative``.
        relative: interpret ``max_increase`` as a fraction of L(w).
        magnitude_aware: u_i ~ N(0, sigma^2 w_i^2 + epsilon^2) instead of N(0, sigma^2).
        epsilon: the magnitude-aware floor (>= 0), a standard deviation.
        num_samples: Monte Carlo draws per sigma (>= 2, for a standard error).
        num_bisections: bisection steps (>= 1); the bracket shrinks to sigma_max / 2^num_bisections.
        sigma_max: the upper end of the search interval (> 0).
        generator: draws the noise (required).

    Returns:
        PacBayesSigma(sigma, increase, increase_stderr, loss, threshold, magnitude_aware, saturated,
        num_evaluations).

    Raises:
        InputDataError: on a non-positive threshold or sigma_max, a negative epsilon, or counts out of range.
        InputTypeError: if ``generator`` is missing.

    Example:
        >>> H = HessianOperator(lambda p: (p["w"] ** 2).sum(), {"w": torch.zeros(4, dtype=torch.float64)})
        >>> g = torch.Generator().manual_seed(0)
        >>> result = pac_bayes_sigma(H, max_increase=0.04, num_samples=200, generator=g)
        >>> round(result.sigma, 1)  # E ||u||^2 = 4 sigma^2 = 0.04
        0.1

    References:
        Jiang et al. (2020); Dziugaite and Roy (2017).
    """
    generator = check_generator("generator", generator)
    check_real("max_increase", max_increase, low=0.0, low_open=True)
    check_real("epsilon", epsilon, low=0.0)
    samples = check_int_in_range("num_samples", num_samples, low=2)
    depth = check_int_in_range("num_bisections", num_bisections, low=1)
    check_real("sigma_max", sigma_max, low=0.0, low_open=True)
    w = operator.point
    loss = float(operator.value())
    threshold = max_increase * abs(loss) if relative else max_increase
    if threshold <= 0.0:
        raise InputDataError(
            f"the threshold max_increase * |L(w)| must be > 0; got L(w) = {loss}. Use relative=False."
        )
    Z = torch.randn(samples, w.numel(), generator=generator, device=generator.device, dtype=torch.float64)
    Z = Z.to(device=w.device, dtype=w.dtype)
    evaluations = 0

    def increase(sigma: float) -> tuple[float, float]:
        nonlocal evaluations
        std = torch.sqrt(sigma**2 * w**2 + epsilon**2) if magnitude_aware else torch.full_like(w, sigma)
        values = torch.stack([operator.value_at(w + std * z) for z in Z]).to(torch.float64) - loss
        evaluations += samples
        return float(values.mean()), float(values.std(correction=1)) / math.sqrt(samples)

    top = increase(sigma_max)
    if top[0] <= threshold:
        return PacBayesSigma(sigma_max, *top, loss, threshold, magnitude_aware, True, evaluations)
    low, high = 0.0, sigma_max
    at_low = increase(0.0) if magnitude_aware else (0.0, 0.0)
    for _ in range(depth):
        middle = 0.5 * (low + high)
        at_middle = increase(middle)
        if at_middle[0] <= threshold:
            low, at_low = middle, at_middle
        else:
            high = middle
    return PacBayesSigma(low, *at_low, loss, threshold, magnitude_aware, False, evaluations)


def shared_pac_bayes_sigma(
    operator: HessianOperator,
    cache: dict,
    *,
    magnitude_aware: bool,
    generator: torch.Generator | None,
    options: Mapping[str, Any],
) -> PacBayesSigma:
    """:func:`pac_bayes_sigma` computed once per operator, noise model and option set, kept in ``cache``.

    The measures of one noise scale (the ``pac_bayes_*`` rows, ``expected_sharpness_kl`` without a
    sigma) share one bisection within a call of :func:`~flatminima.curvature.measure.measure`; a
    failure is kept too, so the other measures of that sigma fail alike without rerunning it.
    """
    key = ("pac_bayes", id(operator), magnitude_aware, tuple(sorted(options.items())))
    if key not in cache:
        try:
            cache[key] = pac_bayes_sigma(
                operator, magnitude_aware=magnitude_aware, generator=generator, **options
            )
        except Exception as failure:
            cache[key] = failure
            raise
    if isinstance(cache[key], Exception):
        raise cache[key]
    return cache[key]


def jiang_pac_bayes_bounds(
    sigma: float,
    weights: torch.Tensor,
    *,
    num_examples: int,
    initial_weights: torch.Tensor | None = None,
    magnitude_aware: bool = False,
    epsilon: float = 1e-3,
) -> dict[str, float]:
    """Jiang et al.'s PAC-Bayes measures from a noise scale sigma (see the module for the formulas).

    Args:
        sigma: the scale from :func:`pac_bayes_sigma` (> 0; a standard deviation).
        weights: w, the flat trained weights (e.g. ``operator.point``).
        num_examples: m, the training-set size (>= 1).
        initial_weights: w0, the flat initialization; the "init" measure is omitted without it.
        magnitude_aware: whether sigma came from the magnitude-aware noise model.
        epsilon: the magnitude-aware floor (>= 0).

    Returns:
        {"pac_bayes_init"?, "pac_bayes_orig", "pac_bayes_flatness"} or the "pac_bayes_mag_*" variants.

    Raises:
        InputDataError: if ``sigma`` <= 0, ``epsilon`` < 0, ``num_examples`` < 1, or the weight shapes differ.

    Example:
        >>> bounds = jiang_pac_bayes_bounds(0.5, torch.ones(4, dtype=torch.float64), num_examples=100)
        >>> round(bounds["pac_bayes_flatness"], 6)
        4.0
    """
    s = check_real("sigma", sigma, low=0.0, low_open=True)
    eps = check_real("epsilon", epsilon, low=0.0)
    m = check_int_in_range("num_examples", num_examples, low=1)
    check_tensor("weights", weights, shape=(None,))
    w = weights.to(torch.float64)
    prefix = "pac_bayes_mag" if magnitude_aware else "pac_bayes"
    references = {"orig": torch.zeros_like(w)}
    if initial_weights is not None:
        check_tensor("initial_weights", initial_weights, shape=(w.numel(),))
        references = {"init": initial_weights.to(device=w.device, dtype=torch.float64), **references}
    tail = math.log(m / s) + 10.0
    results: dict[str, float] = {}
    for name, w0 in references.items():
        delta = w - w0
        if magnitude_aware:
            omega = w.numel()
            numerator = eps**2 + (s**2 + 1.0) * float(delta.square().sum()) / omega
            terms = torch.log(numerator / (eps**2 + s**2 * delta.square()))
            results[f"{prefix}_{name}"] = 0.25 * float(terms.sum()) + tail
        else:
            results[f"{prefix}_{name}"] = float(delta.square().sum()) / (4.0 * s**2) + tail
    results[f"{prefix}_flatness"] = 1.0 / s**2
    return results
