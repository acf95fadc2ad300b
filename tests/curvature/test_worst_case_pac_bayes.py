"""Worst-case rho-ball sharpness (plain, adaptive) and PAC-Bayes sigma (a standard deviation)."""

from __future__ import annotations

import math

import pytest
import torch

from flatminima.curvature import HessianOperator
from flatminima.curvature.pac_bayes import jiang_pac_bayes_bounds, pac_bayes_sigma
from flatminima.curvature.worst_case import worst_case_sharpness
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError


def _quadratic_form(center: torch.Tensor, hessian: torch.Tensor, offset: float = 0.0) -> HessianOperator:
    def loss(p):
        d = p["w"] - center
        return offset + 0.5 * d @ hessian @ d

    return HessianOperator(loss, {"w": center.clone()})


def _psd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(n, n, generator=g, dtype=torch.float64)
    return B @ B.T / n


def test_l2_worst_case_is_half_rho_squared_lambda_max() -> None:
    Hm = _psd(6, 0)
    H = _quadratic_form(torch.zeros(6, dtype=torch.float64), Hm)
    truth = 0.5 * 0.1**2 * float(torch.linalg.eigvalsh(Hm)[-1])
    result = worst_case_sharpness(H, 0.1, num_steps=50, generator=torch.Generator().manual_seed(0))
    assert 0.99 * truth <= result.value <= truth * (1 + 1e-12)  # a feasible point: never above the max
    assert float(result.perturbation.norm()) <= 0.1 * (1 + 1e-12)


def test_linf_worst_case_reaches_the_corner() -> None:
    h = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    H = _quadratic_form(torch.ones(3, dtype=torch.float64), torch.diag(h), offset=1.0)
    result = worst_case_sharpness(H, 0.2, norm="linf", generator=torch.Generator().manual_seed(1))
    assert result.value == pytest.approx(0.5 * 0.2**2 * float(h.sum()), rel=1e-12)
    assert result.loss == pytest.approx(1.0)
    assert float(result.perturbation.abs().max()) <= 0.2 + 1e-15


def test_adaptive_l2_worst_case_uses_the_magnitude_scaled_ball() -> None:
    center = torch.tensor([3.0, -0.1, 1.0, 0.0], dtype=torch.float64)
    Hm = _psd(4, 2)
    H = _quadratic_form(center, Hm)
    t = center.abs() + 0.01
    truth = 0.5 * 0.05**2 * float(torch.linalg.eigvalsh(t[:, None] * Hm * t[None, :])[-1])
    result = worst_case_sharpness(
        H, 0.05, adaptive=True, num_steps=50, generator=torch.Generator().manual_seed(2)
    )
    assert 0.99 * truth <= result.value <= truth * (1 + 1e-12)
    assert float((result.perturbation / t).norm()) <= 0.05 * (1 + 1e-12)


def test_adaptive_sharpness_is_invariant_to_factor_rescaling_and_plain_is_not() -> None:
    """Dinh et al.: L -> cL, R -> R/c keeps the function; ASAM's adaptive sharpness (eta = 0) too."""
    g = torch.Generator().manual_seed(3)
    L, R = (
        torch.randn(4, 2, generator=g, dtype=torch.float64),
        torch.randn(3, 2, generator=g, dtype=torch.float64),
    )
    M = L @ R.T + 0.1 * torch.randn(4, 3, generator=g, dtype=torch.float64)

    def loss(p):
        return (p["L"] @ p["R"].T - M).square().sum()

    values = {}
    for c in (1.0, 5.0):
        H = HessianOperator(loss, {"L": c * L, "R": R / c})
        for adaptive in (True, False):
            result = worst_case_sharpness(
                H, 0.05, adaptive=adaptive, eta=0.0, generator=torch.Generator().manual_seed(4)
            )
            values[c, adaptive] = result.value
    assert values[5.0, True] == pytest.approx(values[1.0, True], rel=1e-9)
    assert abs(values[5.0, False] - values[1.0, False]) > 0.1 * values[1.0, False]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"radius": -0.1}, InputDataError, "radius must satisfy 0.0 < radius"),
        ({"radius": 0.0}, InputDataError, "radius must satisfy 0.0 < radius"),
        ({"norm": "l1"}, ConfigurationError, "norm must be 'l2' or 'linf'"),
        ({"eta": -1.0}, InputDataError, "eta must satisfy 0.0 <= eta"),
        ({"num_steps": 0}, InputDataError, "num_steps must be >= 1"),
        ({"step_size": 0.0}, InputDataError, "step_size must satisfy"),
        ({"generator": None}, InputTypeError, "generator must be a torch.Generator"),
    ],
)
def test_worst_case_errors(kwargs, error, match) -> None:
    H = _quadratic_form(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    arguments = {"radius": 0.1, "generator": torch.Generator().manual_seed(0), **kwargs}
    with pytest.raises(error, match=match):
        worst_case_sharpness(H, **arguments)


def test_pac_bayes_sigma_is_a_standard_deviation() -> None:
    """Pitfall: with u ~ N(0, sigma^2 I) and L = 0.5 c ||w - w*||^2, E[L(w* + u)] - L(w*) = 0.5 c n sigma^2.

    Reading sigma as a variance would give E = 0.5 c n sigma instead, i.e. a sigma ~ 22x smaller here.
    """
    n, c = 50, 2.0
    H = _quadratic_form(torch.zeros(n, dtype=torch.float64), c * torch.eye(n, dtype=torch.float64))
    result = pac_bayes_sigma(H, max_increase=0.1, num_samples=50, generator=torch.Generator().manual_seed(0))
    assert not result.saturated and result.threshold == 0.1
    assert 0.99 * 0.1 <= result.increase <= 0.1  # the bisection bracket is sigma_max / 2^15 wide
    assert abs(result.increase - 0.5 * c * n * result.sigma**2) <= 5 * result.increase_stderr
    assert result.sigma == pytest.approx(math.sqrt(2 * 0.1 / (c * n)), rel=0.1)
    assert result.num_evaluations == 50 * 16


def test_magnitude_aware_pac_bayes_noise_has_std_sqrt_sigma2_w2_plus_eps2() -> None:
    center = torch.linspace(-2.0, 2.0, 40, dtype=torch.float64)
    H = _quadratic_form(center, torch.eye(40, dtype=torch.float64))
    result = pac_bayes_sigma(
        H,
        max_increase=0.05,
        magnitude_aware=True,
        epsilon=1e-2,
        num_samples=100,
        generator=torch.Generator().manual_seed(1),
    )
    expected = 0.5 * float((result.sigma**2 * center**2 + 1e-2**2).sum())
    assert abs(result.increase - expected) <= 5 * result.increase_stderr
    assert result.magnitude_aware and result.increase <= 0.05


def test_pac_bayes_relative_threshold_and_saturation() -> None:
    H = _quadratic_form(torch.zeros(5, dtype=torch.float64), torch.eye(5, dtype=torch.float64), offset=2.0)
    result = pac_bayes_sigma(H, max_increase=0.1, relative=True, generator=torch.Generator().manual_seed(2))
    assert result.threshold == pytest.approx(0.2) and result.increase <= 0.2
    flat = HessianOperator(lambda p: 0.0 * p["w"].sum() + 1.0, {"w": torch.zeros(3, dtype=torch.float64)})
    saturated = pac_bayes_sigma(flat, generator=torch.Generator().manual_seed(3))
    assert saturated.saturated and saturated.sigma == 2.0


def test_jiang_bounds_formulas() -> None:
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    w0 = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    plain = jiang_pac_bayes_bounds(0.5, w, num_examples=1000, initial_weights=w0)
    tail = math.log(1000 / 0.5) + 10
    assert plain["pac_bayes_init"] == pytest.approx(1.5 / (4 * 0.25) + tail)
    assert plain["pac_bayes_orig"] == pytest.approx(5.25 / (4 * 0.25) + tail)
    assert plain["pac_bayes_flatness"] == pytest.approx(4.0)
    mag = jiang_pac_bayes_bounds(
        0.5, w, num_examples=1000, initial_weights=w0, magnitude_aware=True, epsilon=1e-3
    )
    d = (w - w0).tolist()
    numerator = 1e-6 + 1.25 * sum(x * x for x in d) / 3
    expected = 0.25 * sum(math.log(numerator / (1e-6 + 0.25 * x * x)) for x in d) + tail
    assert mag["pac_bayes_mag_init"] == pytest.approx(expected)
    assert mag["pac_bayes_mag_flatness"] == pytest.approx(4.0)
    assert set(jiang_pac_bayes_bounds(0.5, w, num_examples=10)) == {"pac_bayes_orig", "pac_bayes_flatness"}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda H, g: pac_bayes_sigma(H, max_increase=-0.1, generator=g),
            InputDataError,
            "max_increase must satisfy",
        ),
        (
            lambda H, g: pac_bayes_sigma(H, epsilon=-1.0, generator=g),
            InputDataError,
            "epsilon must satisfy 0.0 <= epsilon",
        ),
        (
            lambda H, g: pac_bayes_sigma(H, num_samples=1, generator=g),
            InputDataError,
            "num_samples must be >= 2",
        ),
        (
            lambda H, g: pac_bayes_sigma(H, sigma_max=0.0, generator=g),
            InputDataError,
            "sigma_max must satisfy",
        ),
        (
            lambda H, g: pac_bayes_sigma(H, relative=True, generator=g),
            InputDataError,
            r"max_increase \* \|L\(w\)\|",
        ),
        (lambda H, g: pac_bayes_sigma(H), InputTypeError, "generator must be a torch.Generator"),
        (
            lambda H, g: jiang_pac_bayes_bounds(-0.5, H.point, num_examples=10),
            InputDataError,
            "sigma must satisfy 0.0 < sigma",
        ),
        (
            lambda H, g: jiang_pac_bayes_bounds(0.0, H.point, num_examples=10),
            InputDataError,
            "sigma must satisfy",
        ),
        (
            lambda H, g: jiang_pac_bayes_bounds(0.5, H.point, num_examples=0),
            InputDataError,
            "num_examples must be >= 1",
        ),
        (
            lambda H, g: jiang_pac_bayes_bounds(
                0.5, H.point, num_examples=3, initial_weights=torch.zeros(2, dtype=torch.float64)
            ),
            InputDataError,
            r"initial_weights must have shape \(3\)",
        ),
    ],
)
def test_pac_bayes_errors(call, error, match) -> None:
    H = _quadratic_form(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    with pytest.raises(error, match=match):
        call(H, torch.Generator().manual_seed(0))
