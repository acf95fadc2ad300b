from __future__ import annotations

import pytest
import torch
from curvature_cases import bilinear_case, dense_hessian, mlp_case, within

from flatminima.curvature import (
    HessianOperator,
    MatrixOperator,
    exact_scaled_trace,
    exact_trace,
    hutchinson_scaled_trace,
    hutchinson_trace,
    hutchpp_trace,
)
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError
from flatminima.objectives import BilinearFactorization
from flatminima.problems import MatrixSensing


@pytest.fixture(scope="module")
def mlp():
    case = mlp_case(0)
    return HessianOperator(case.loss, case.params()), dense_hessian(case.loss, case.params())


def _decaying(n: int = 300, seed: int = 0) -> tuple[MatrixOperator, float]:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.arange(1, n + 1, dtype=torch.float64) ** -2.0
    return MatrixOperator((Q * eigenvalues) @ Q.T), float(eigenvalues.sum())


def test_exact_trace_matches_dense(mlp) -> None:
    H, dense = mlp
    torch.testing.assert_close(exact_trace(H, batch_size=7), torch.trace(dense))


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_within_five_standard_errors(mlp, distribution) -> None:
    H, dense = mlp
    estimate = hutchinson_trace(H, 300, generator=torch.Generator().manual_seed(1), distribution=distribution)
    assert estimate.num_matvecs == 300 and estimate.num_samples == 300
    assert estimate.stderr > 0
    assert within(estimate, float(torch.trace(dense)))


def test_hutchpp_within_five_standard_errors(mlp) -> None:
    H, dense = mlp
    estimate = hutchpp_trace(H, 12, generator=torch.Generator().manual_seed(2))
    assert estimate.num_matvecs == 2 * 12 + 12
    assert within(estimate, float(torch.trace(dense)))


def test_hutchpp_is_exact_with_a_full_sketch(mlp) -> None:
    H, dense = mlp
    estimate = hutchpp_trace(H, 10, sketch_size=100, generator=torch.Generator().manual_seed(3))
    assert estimate.stderr == 0.0 and estimate.num_matvecs == 2 * H.size
    assert estimate.value == pytest.approx(float(torch.trace(dense)), rel=1e-10)


def test_stopping_rule_reaches_the_target_relative_error(mlp) -> None:
    H, dense = mlp
    estimate = hutchinson_trace(H, 5000, generator=torch.Generator().manual_seed(4), rtol=0.05)
    assert estimate.converged
    assert estimate.stderr <= 0.05 * abs(estimate.value)
    assert 10 <= estimate.num_matvecs < 5000
    assert within(estimate, float(torch.trace(dense)))
    starved = hutchinson_trace(H, 20, generator=torch.Generator().manual_seed(4), rtol=1e-6)
    assert not starved.converged and starved.num_matvecs == 20


def test_two_probe_pitfall_minimum_probe_count() -> None:
    """PyHessian's trace may stop after 2 probes with no error bar: here there is a floor."""
    H = MatrixOperator(torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)))
    # a target that two identical Rademacher samples would "reach" (stderr 0) still takes min_probes
    estimate = hutchinson_trace(H, 100, generator=torch.Generator().manual_seed(0), rtol=0.5, batch_size=1)
    assert estimate.num_matvecs == 10
    with pytest.raises(InputDataError, match=r"num_probes must be >= 10; got num_probes=2"):
        hutchinson_trace(H, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputDataError, match=r"min_probes must be >= 2; got min_probes=1"):
        hutchinson_trace(H, 5, min_probes=1, generator=torch.Generator().manual_seed(0))
    assert hutchinson_trace(H, 2, min_probes=2, generator=torch.Generator().manual_seed(0)).num_samples == 2


def test_hutchpp_needs_three_times_fewer_matvecs_on_a_decaying_spectrum() -> None:
    H, exact = _decaying()
    plain = hutchinson_trace(H, 20000, generator=torch.Generator().manual_seed(5), rtol=0.01, batch_size=200)
    plus = hutchpp_trace(H, 2000, sketch_size=10, generator=torch.Generator().manual_seed(6), rtol=0.01)
    assert plain.converged and plus.converged
    assert within(plain, exact) and within(plus, exact)
    assert abs(plus.value - exact) <= 0.05 * exact
    assert 3 * plus.num_matvecs <= plain.num_matvecs


def test_bilinear_closed_form_trace_and_scaled_trace() -> None:
    case = bilinear_case(0)
    H = HessianOperator(case.loss, case.params())
    assert float(exact_trace(H)) == pytest.approx(case.exact_trace(), rel=1e-10)
    assert float(exact_scaled_trace(H)) == pytest.approx(case.exact_scaled_trace(), rel=1e-10)
    estimate = hutchinson_trace(H, 200, generator=torch.Generator().manual_seed(7))
    assert within(estimate, case.exact_trace())
    scaled = hutchinson_scaled_trace(H, 200, generator=torch.Generator().manual_seed(8))
    assert within(scaled, case.exact_scaled_trace())
    # per-factor traces: tr H_LL = 2 d1 ||D2 R||^2, tr H_RR = 2 d2 ||D1 L||^2
    D1, D2 = case.rescaling()
    d1, d2 = case.L.shape[0], case.R.shape[0]
    assert float(exact_trace(H.select("L"))) == pytest.approx(float(2 * d1 * (D2 @ case.R).square().sum()))
    assert float(exact_trace(H.select("R"))) == pytest.approx(float(2 * d2 * (D1 @ case.L).square().sum()))


@pytest.mark.parametrize("hvp", ["autograd", "closed_form"])
def test_against_the_bilinear_factorization_objective(hvp) -> None:
    g = torch.Generator().manual_seed(0)
    instance = MatrixSensing(shape=(6, 5), rank=2, num_measurements=40).sample(generator=g)
    objective = BilinearFactorization(instance, width=3)
    params = objective.random_params(generator=g)
    H = HessianOperator.from_objective(objective, params, hvp=hvp)
    assert H.names == ("L", "R")
    exact = float(objective.hessian_trace(params))
    assert float(exact_trace(H)) == pytest.approx(exact, rel=1e-10)
    assert float(exact_scaled_trace(H)) == pytest.approx(float(objective.scaled_trace(params)), rel=1e-10)
    assert within(hutchinson_trace(H, 100, generator=g), exact)
    assert within(hutchpp_trace(H, 10, generator=g), exact)
    traces = objective.block_traces(params)
    assert float(exact_trace(H.select(0))) == pytest.approx(float(traces[0]), rel=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"generator": None}, InputTypeError, "generator must be a torch.Generator"),
        ({"distribution": "uniform"}, ConfigurationError, "distribution must be one of"),
        ({"rtol": 0.0}, InputDataError, "rtol must satisfy 0.0 < rtol"),
        ({"rtol": -0.1}, InputDataError, "rtol must satisfy"),
        ({"batch_size": 0}, InputDataError, "batch_size must be >= 1"),
        ({"num_probes": 5}, InputDataError, "num_probes must be >= 10"),
    ],
)
@pytest.mark.parametrize("estimator", [hutchinson_trace, hutchpp_trace])
def test_estimator_argument_errors(estimator, kwargs, error, match) -> None:
    H = MatrixOperator(torch.eye(3, dtype=torch.float64))
    arguments = {"generator": torch.Generator().manual_seed(0), **kwargs}
    with pytest.raises(error, match=match):
        estimator(H, **arguments)


def test_scaled_trace_weight_errors() -> None:
    case = bilinear_case(1)
    H = HessianOperator(case.loss, case.params())
    with pytest.raises(InputDataError, match="unselected parameters"):
        exact_scaled_trace(H.select("L"), block_weights={"R": 1.0})
    with pytest.raises(InputDataError, match=r"block_weights\['L'\] must be >= 0"):
        exact_scaled_trace(H, block_weights={"L": -1.0})


def test_estimates_keep_device(device) -> None:
    H = MatrixOperator(torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64, device=device)))
    estimate = hutchinson_trace(H, 50, generator=torch.Generator().manual_seed(0), distribution="gaussian")
    assert within(estimate, 15.0) and estimate.stderr > 0
