"""Linear stability of minima (Wu, Ma and E 2018): the exact second-moment map, the classical conditions,
and the verdicts against simulated GD/SGD runs on each side of the threshold."""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch

from flatminima.curvature import HessianOperator
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError
from flatminima.generalization import (
    linear_stability,
    model_linear_stability,
    noise_factor,
    per_example_hessians,
    second_moment_map,
)
from flatminima.generalization._functional import FlatModel

module = importlib.import_module("flatminima.generalization.linear_stability")  # the function shadows it


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_psd(n: int, d: int, rank: int, seed: int) -> torch.Tensor:
    factors = torch.randn(n, d, rank, generator=gen(seed), dtype=torch.float64)
    return factors @ factors.transpose(1, 2) / rank


def critical_learning_rate(hessians: torch.Tensor, batch_size: int, sampling: str) -> float:
    """The largest eta with growth <= 1, by bisection on the verdict."""
    low, high = 1e-8, 1e3
    for _ in range(60):
        middle = (low * high) ** 0.5
        ok = linear_stability(hessians, learning_rate=middle, batch_size=batch_size, sampling=sampling).stable
        low, high = (middle, high) if ok else (low, middle)
    return low


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement"])
def test_second_moment_map_is_the_expectation_over_every_batch(sampling: str) -> None:
    n, d, B, eta = 5, 3, 2, 0.3
    H = random_psd(n, d, 2, seed=0)
    M = random_psd(1, d, 3, seed=1)[0]
    if sampling == "without_replacement":
        batches = [list(c) for c in itertools.combinations(range(n), B)]
    else:
        batches = [list(c) for c in itertools.product(range(n), repeat=B)]
    expected = torch.zeros(d, d, dtype=torch.float64)
    for batch in batches:
        step = torch.eye(d, dtype=torch.float64) - eta * H[batch].mean(0)
        expected += step @ M @ step / len(batches)
    got = second_moment_map(H, M, learning_rate=eta, noise=noise_factor(n, B, sampling))
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-13)
    # and the reported growth is the spectral radius of that expectation, over all matrices
    K = torch.zeros(d * d, d * d, dtype=torch.float64)
    for batch in batches:
        step = torch.eye(d, dtype=torch.float64) - eta * H[batch].mean(0)
        K += torch.kron(step, step) / len(batches)
    radius = float(torch.linalg.eigvals(K).abs().max())
    result = linear_stability(H, learning_rate=eta, batch_size=B, sampling=sampling)
    assert result.growth == pytest.approx(radius, rel=1e-12)


def test_commuting_hessians_give_the_exact_coordinatewise_condition() -> None:
    n, d, eta, B = 7, 4, 0.25, 2
    diagonals = torch.rand(n, d, generator=gen(2), dtype=torch.float64) * torch.tensor([1.0, 3.0, 6.0, 0.5])
    H = torch.diag_embed(diagonals)
    c = noise_factor(n, B)
    mean, variance = diagonals.mean(0), diagonals.var(0, correction=0)
    exact = float(((1 - eta * mean) ** 2 + eta**2 * c * variance).max())
    result = linear_stability(H, learning_rate=eta, batch_size=B)
    assert result.growth == pytest.approx(exact, rel=1e-12)
    assert result.sufficient_growth == pytest.approx(exact, rel=1e-12)
    assert result.non_uniformity == pytest.approx(float(variance.max().sqrt()), rel=1e-12)
    assert result.sharpness == pytest.approx(float(mean.max()), rel=1e-12)


def test_in_one_dimension_the_three_growth_factors_coincide() -> None:
    h = torch.tensor([0.5, 1.0, 4.0, 2.5], dtype=torch.float64).reshape(4, 1, 1)
    for eta, B in [(0.2, 1), (0.45, 2), (0.3, 3)]:
        r = linear_stability(h, learning_rate=eta, batch_size=B)
        assert r.growth == pytest.approx(r.sufficient_growth, rel=1e-12)
        assert r.growth == pytest.approx(r.one_dimensional_growth, rel=1e-12)
        assert r.noise_factor == (4 - B) / (B * 3)


def test_general_case_orders_the_conditions() -> None:
    H = random_psd(9, 5, 2, seed=3)
    for eta, B in itertools.product([0.05, 0.2, 0.5, 1.0], [1, 3, 9]):
        r = linear_stability(H, learning_rate=eta, batch_size=B)
        assert r.growth <= r.sufficient_growth + 1e-12  # Wu et al.'s condition is sufficient
        assert r.growth >= r.gd_growth - 1e-12  # SGD noise only adds to the second moment
        if r.stable:
            assert r.necessary and r.gd_stable
        if r.sufficient:
            assert r.stable
    full = linear_stability(H, learning_rate=0.2, batch_size=9)
    assert full.noise_factor == 0.0 and full.growth == pytest.approx(full.gd_growth, rel=1e-12)


def test_gd_threshold_is_two_over_sharpness_and_needs_a_minimum() -> None:
    H = torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64))
    assert linear_stability(H, learning_rate=0.49).stable  # 0.49 * 4 < 2
    assert not linear_stability(H, learning_rate=0.51).stable
    saddle = torch.diag(torch.tensor([4.0, -0.1], dtype=torch.float64))
    r = linear_stability(saddle, learning_rate=0.1)
    assert not r.stable and not r.gd_stable and r.min_eigenvalue == pytest.approx(-0.1)
    assert r.sharpness_limit == pytest.approx(20.0)


def test_matrix_free_path_agrees_with_the_dense_one(monkeypatch: pytest.MonkeyPatch) -> None:
    H = random_psd(12, 6, 2, seed=4)
    dense = linear_stability(H, learning_rate=0.3, batch_size=2)
    monkeypatch.setattr(module, "DENSE_LIMIT", 0)
    sparse = linear_stability(H, learning_rate=0.3, batch_size=2)
    assert sparse.growth == pytest.approx(dense.growth, rel=1e-9)


# ---- simulations ---------------------------------------------------------------------------------


def least_squares(seed: int) -> torch.Tensor:
    """Inputs of an over-parameterized least-squares problem (d = 20 > n = 10), one input 3x larger."""
    X = torch.randn(10, 20, generator=gen(seed), dtype=torch.float64)
    X[0] *= 3.0
    return X


def run_least_squares(X: torch.Tensor, eta: float, B: int, sampling: str, steps: int, seed: int) -> float:
    """SGD on (1/2n) ||X w - y||^2 from w* + e_0, ||e_0|| = 1: exactly e <- e - eta X_b^T X_b e / B."""
    g = gen(seed)
    n, d = X.shape
    e = torch.randn(d, generator=g, dtype=torch.float64)
    e /= e.norm()
    for _ in range(steps):
        if sampling == "with_replacement":
            batch = torch.randint(n, (B,), generator=g)
        else:
            batch = torch.randperm(n, generator=g)[:B]
        e = e - eta * X[batch].T @ (X[batch] @ e) / B
        if e.norm() > 1e6:
            break
    return float(e.norm())


@pytest.mark.parametrize(("B", "sampling"), [(1, "without_replacement"), (2, "with_replacement")])
def test_least_squares_sgd_stays_below_and_escapes_above_the_threshold(B: int, sampling: str) -> None:
    X = least_squares(5)
    H = X[:, :, None] * X[:, None, :]
    eta_c = critical_learning_rate(H, B, sampling)
    sharpness = linear_stability(H, learning_rate=1.0).sharpness
    assert eta_c < 0.5 * 2.0 / sharpness  # SGD's threshold is far below GD's: non-uniformity matters
    stable = linear_stability(H, learning_rate=0.5 * eta_c, batch_size=B, sampling=sampling)
    unstable = linear_stability(H, learning_rate=2.0 * eta_c, batch_size=B, sampling=sampling)
    assert stable.stable and not unstable.stable and unstable.gd_stable and unstable.necessary is not None
    for seed in range(4):
        assert run_least_squares(X, 0.5 * eta_c, B, sampling, 300, seed) <= 1.0
        assert run_least_squares(X, 2.0 * eta_c, B, sampling, 300, seed) > 1e3
    # GD (B = n) at the same step sizes contracts: the instability is SGD's alone
    assert run_least_squares(X, 2.0 * eta_c, 10, "without_replacement", 300, 0) <= 1.0


def tiny_network() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """x -> v^T tanh(W x), W 3x2 and v 3x1 from a generator, on 6 inputs labelled by itself: zero loss."""
    first = torch.nn.utils.skip_init(torch.nn.Linear, 2, 3, bias=False, dtype=torch.float64)
    second = torch.nn.utils.skip_init(torch.nn.Linear, 3, 1, bias=False, dtype=torch.float64)
    net = torch.nn.Sequential(first, torch.nn.Tanh(), second)
    g = gen(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
    return net, x, y


def test_per_example_hessians_average_to_the_curvature_layer_hessian() -> None:
    net, x, y = tiny_network()
    y = y + 0.1  # away from the minimum too
    losses, grads, H = per_example_hessians(net, torch.nn.functional.mse_loss, x, y, chunk_size=4)
    operator = HessianOperator.from_model(net, torch.nn.functional.mse_loss, [(x, y)], mode="eval")
    assert torch.allclose(H.mean(0), operator.dense(), rtol=1e-10, atol=1e-12)
    value, gradient = operator.value_and_grad_at(operator.point)
    assert float(losses.mean()) == pytest.approx(float(value), rel=1e-12)
    assert torch.allclose(grads.mean(0), gradient, rtol=1e-10, atol=1e-13)


def test_tiny_network_at_a_zero_loss_minimum_matches_simulated_sgd() -> None:
    net, x, y = tiny_network()
    mse = torch.nn.functional.mse_loss
    _, _, H = per_example_hessians(net, mse, x, y)
    B = 1
    eta_c = critical_learning_rate(H, B, "without_replacement")
    stable = model_linear_stability(net, mse, x, y, learning_rate=0.5 * eta_c, batch_size=B)
    unstable = model_linear_stability(net, mse, x, y, learning_rate=2.0 * eta_c, batch_size=B)
    assert stable.stable and not unstable.stable
    assert stable.loss == 0.0 and stable.max_example_gradient_norm == 0.0  # an interpolating minimum
    model = FlatModel.of(net)
    gradient = torch.func.grad(lambda w, batch: mse(model(w, x[batch]), y[batch]))

    def farthest(eta: float, seed: int, steps: int = 300, eps: float = 1e-4) -> float:
        g = gen(seed)
        u = torch.randn(model.size, generator=g, dtype=torch.float64)
        w, largest = model.point + eps * u / u.norm(), 1.0
        for _ in range(steps):
            w = w - eta * gradient(w, torch.randperm(6, generator=g)[:B])
            largest = max(largest, float((w - model.point).norm()) / eps)
            if largest > 1e3:
                break
        return largest

    for seed in range(3):
        assert farthest(0.5 * eta_c, seed) < 2.0  # stays close (flat directions neither grow nor shrink)
        assert farthest(2.0 * eta_c, seed) > 1e3  # escapes the minimum


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda H: linear_stability(H, learning_rate=0.0),
            InputDataError,
            "learning_rate must satisfy 0.0 <",
        ),
        (lambda H: linear_stability(H, learning_rate=-1.0), InputDataError, "learning_rate must satisfy"),
        (
            lambda H: linear_stability(H, learning_rate=0.1, batch_size=5),
            InputDataError,
            "batch_size must satisfy 1 <= batch_size <= the number of examples = 4",
        ),
        (lambda H: linear_stability(H, learning_rate=0.1, batch_size=0), InputDataError, "batch_size must"),
        (
            lambda H: linear_stability(H, learning_rate=0.1, batch_size=2, sampling="poisson"),
            ConfigurationError,
            "sampling must be one of",
        ),
        (lambda H: linear_stability(H[:, 0], learning_rate=0.1), InputDataError, "hessians must have shape"),
        (lambda H: linear_stability(H.long(), learning_rate=0.1), InputTypeError, "floating dtype"),
        (
            lambda H: model_linear_stability(
                torch.nn.Tanh(), torch.nn.functional.mse_loss, H[0], H[0], learning_rate=0.1
            ),
            InputDataError,
            "model has no trainable parameters",
        ),
    ],
)
def test_bad_input_raises_one_line_errors(call, error, match) -> None:
    H = random_psd(4, 3, 1, seed=0)
    with pytest.raises(error, match=match) as info:
        call(H)
    assert "\n" not in str(info.value)
