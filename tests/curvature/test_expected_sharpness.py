"""Expected sharpness E[L(w + u)] - L(w) = sigma^2 tr(H) / 2 on quadratics, and its KL term in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from curvature_cases import mlp_case
from torch import nn

from flatminima.curvature import ExpectedSharpness, HessianOperator, expected_sharpness_kl, measure
from flatminima.curvature.pac_bayes import pac_bayes_sigma
from flatminima.errors import InputDataError, InputTypeError

F = nn.functional


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quadratic(n: int = 8, seed: int = 0) -> tuple[HessianOperator, torch.Tensor, torch.Tensor]:
    """0.5 (w - c)^T A (w - c) at a point w away from the minimum c (a non-zero gradient g)."""
    g = _gen(seed)
    B = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = B @ B.T / n
    c = torch.randn(n, generator=g, dtype=torch.float64)
    w = c + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)

    def loss(p):
        d = p["w"] - c
        return 0.5 * d @ A @ d

    return HessianOperator(loss, {"w": w}), A, A @ (w - c)


def test_expected_sharpness_of_a_quadratic_is_half_sigma_squared_trace() -> None:
    H, A, grad = _quadratic()
    sigma, m = 0.2, 400
    result = expected_sharpness_kl(H, sigma, num_samples=m, generator=_gen(1))
    assert isinstance(result, ExpectedSharpness) and not result.searched and result.sigma == sigma
    truth = sigma**2 * float(torch.trace(A)) / 2
    assert abs(result.value - truth) <= 4 * result.stderr  # within the estimator's own error bar
    # the error bar itself: Var[g^T u + u^T A u / 2] = sigma^2 |g|^2 + sigma^4 tr(A^2) / 2
    variance = sigma**2 * float(grad @ grad) + sigma**4 * float(torch.trace(A @ A)) / 2
    assert result.stderr == pytest.approx(math.sqrt(variance / m), rel=0.2)
    assert result.num_samples == m and result.num_evaluations == m + 1
    assert result.loss == pytest.approx(float(H.value()))


def test_kl_term_in_closed_form_for_each_prior() -> None:
    H, _, _ = _quadratic(n=5)
    w = H.point
    w0 = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
    sigma = 0.3
    zero = expected_sharpness_kl(H, sigma, num_samples=4, generator=_gen())
    assert zero.prior == "zero"
    assert zero.kl == pytest.approx(float(w.square().sum()) / (2 * sigma**2), rel=1e-12)
    for initial in (w0, {"w": w0.clone().requires_grad_()}):
        result = expected_sharpness_kl(H, sigma, initial_weights=initial, num_samples=4, generator=_gen())
        assert result.prior == "initialization"
        assert result.distance_squared == pytest.approx(float((w - w0).square().sum()), rel=1e-12)
        assert result.kl == pytest.approx(float((w - w0).square().sum()) / (2 * sigma**2), rel=1e-12)
        assert result.value == zero.value  # the prior changes the KL term, not the noise


def test_without_sigma_the_pac_bayes_sigma_is_searched_first() -> None:
    H, _, _ = _quadratic()
    result = expected_sharpness_kl(H, num_bisections=8, search_samples=6, num_samples=20, generator=_gen(2))
    search = pac_bayes_sigma(H, num_bisections=8, num_samples=6, generator=_gen(2))
    assert result.searched and result.sigma == search.sigma > 0
    assert result.num_evaluations == search.num_evaluations + 1 + 20


def test_the_loop_and_the_vmapped_chunks_agree() -> None:
    H, _, _ = _quadratic()
    vmapped = expected_sharpness_kl(H, 0.1, num_samples=10, chunk_size=4, generator=_gen(3))
    looped = expected_sharpness_kl(H, 0.1, num_samples=10, vectorize=False, generator=_gen(3))
    assert vmapped.value == pytest.approx(looped.value, rel=1e-12)
    assert vmapped.stderr == pytest.approx(looped.stderr, rel=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sigma": 0.0}, InputDataError, r"^sigma must satisfy 0.0 < sigma; got sigma=0.0.$"),
        ({"num_samples": 1}, InputDataError, "num_samples must be >= 2; got num_samples=1"),
        ({"search_samples": 1}, InputDataError, "search_samples must be >= 2"),
        ({"sigma_max": -1.0}, InputDataError, "sigma_max must satisfy 0.0 < sigma_max"),
        ({"initial_weights": {"v": torch.zeros(8)}}, InputDataError, r"missing \['w'\]"),
        (
            {"initial_weights": {"w": torch.zeros(3)}},
            InputDataError,
            r"initial_weights\['w'\] must have shape",
        ),
        ({"initial_weights": torch.zeros(3)}, InputDataError, r"initial_weights must have shape \(8\)"),
        ({"initial_weights": [0.0]}, InputTypeError, "initial_weights must be None, a mapping"),
        ({"generator": None}, InputTypeError, "generator must be a torch.Generator"),
    ],
)
def test_expected_sharpness_errors(kwargs, error, match) -> None:
    H, _, _ = _quadratic()
    with pytest.raises(error, match=match) as caught:
        expected_sharpness_kl(H, **{"sigma": 0.1, "generator": _gen(), **kwargs})
    assert "\n" not in str(caught.value)


def test_expected_sharpness_kl_in_the_measure_table_shares_the_pac_bayes_sigma() -> None:
    case = mlp_case(0, n=24)
    H = HessianOperator.from_model(case.net, F.cross_entropy, case.batches([12, 12]), mode="eval")
    options = {
        "expected_sharpness_kl": {"num_bisections": 6, "num_samples": 10},
        "pac_bayes_sigma": {"num_bisections": 6},
    }
    table = measure(H, ["expected_sharpness_kl", "pac_bayes_sigma"], generator=_gen(4), options=options)
    assert not table.failures
    sigma = table.get("pac_bayes_sigma").value
    row = table.get("expected_sharpness_kl")
    assert row.diagnostic == "kl" and math.isnan(row.diagnostic_stderr)
    assert row.diagnostic_value == pytest.approx(float(H.point.square().sum()) / (2 * sigma**2), rel=1e-12)
    assert row.stderr > 0 and math.isfinite(row.value)
    # the same sigma drawn by the function directly, then its fresh noise: the same row
    direct = expected_sharpness_kl(H, num_bisections=6, num_samples=10, generator=_gen(4))
    assert (row.value, row.stderr) == (direct.value, direct.stderr) and direct.sigma == sigma
    fixed = measure(
        H,
        ["expected_sharpness_kl"],
        generator=_gen(4),
        options={"expected_sharpness_kl": {"sigma": 0.01, "num_samples": 10}},
    ).get("expected_sharpness_kl")
    assert fixed.diagnostic_value == pytest.approx(float(H.point.square().sum()) / (2 * 0.01**2))
    with pytest.raises(InputDataError, match="sigma must satisfy 0.0 < sigma"):
        measure(
            H, ["expected_sharpness_kl"], generator=_gen(), options={"expected_sharpness_kl": {"sigma": -1.0}}
        )
    with pytest.raises(InputDataError, match="initial_weights must hold every selected parameter"):
        measure(
            H,
            ["expected_sharpness_kl"],
            generator=_gen(),
            options={"expected_sharpness_kl": {"initial_weights": {"0.weight": torch.zeros(5, 4)}}},
        )
    with pytest.raises(InputTypeError, match="generator must be a torch.Generator"):
        measure(H, ["expected_sharpness_kl"])


def test_float32_parameters() -> None:
    H = HessianOperator(lambda p: 0.5 * (p["w"] ** 2).sum(), {"w": torch.ones(4)})
    result = expected_sharpness_kl(H, 0.1, initial_weights=torch.zeros(4), num_samples=50, generator=_gen())
    assert result.kl == pytest.approx(4 / (2 * 0.01), rel=1e-6)
    assert abs(result.value - 0.01 * 4 / 2) <= 4 * result.stderr
