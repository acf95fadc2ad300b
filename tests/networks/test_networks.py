"""Digits data, MLPs, the deterministic trainer and Dinh et al.'s rescaling (exactness in float64)."""

from __future__ import annotations

import math

import pytest
import torch

from flatminima.curvature import (
    HessianOperator,
    exact_trace,
    lanczos_eigenvalues,
    pac_bayes_sigma,
    worst_case_sharpness,
)
from flatminima.errors import InputDataError, InputTypeError
from flatminima.networks import (
    evaluate,
    load_digits_split,
    mlp,
    parameter_count,
    rescale_layers,
    train_classifier,
    xor_split,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits() -> object:
    return load_digits_split(generator=gen(0), num_train=300)


@pytest.fixture(scope="module")
def trained(digits: object) -> object:
    net = mlp(64, [12], 10, generator=gen(1))
    return train_classifier(
        net, digits, learning_rate=0.1, batch_size=32, generator=gen(2), max_epochs=20
    ).model


def test_digits_split_is_reproducible_and_standardized() -> None:
    a = load_digits_split(generator=gen(3))
    b = load_digits_split(generator=gen(3))
    c = load_digits_split(generator=gen(4))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)
    assert a.num_train + a.x_test.shape[0] == 1797 and a.x_train.dtype == torch.float64
    assert a.x_train.mean(0).abs().max() < 1e-12
    nonconstant = a.x_train.std(0) > 0
    assert torch.allclose(
        a.x_train.std(0)[nonconstant], torch.ones(int(nonconstant.sum()), dtype=torch.float64)
    )


def test_mlp_init_uses_only_its_generator() -> None:
    state = torch.random.get_rng_state()
    a, b = mlp(5, [4, 3], 2, generator=gen(0)), mlp(5, [4, 3], 2, generator=gen(0))
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q) and p.dtype == torch.float64
    first = next(a.parameters())
    assert first.abs().max() <= 5**-0.5


def test_training_is_deterministic_and_reaches_target() -> None:
    data = xor_split(128, 64, generator=gen(0))
    net = mlp(2, [32], 2, generator=gen(1))
    state = torch.random.get_rng_state()
    runs = [
        train_classifier(
            net, data, learning_rate=0.5, batch_size=16, generator=gen(2), target_loss=0.2, max_epochs=300
        )
        for _ in range(2)
    ]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert runs[0].history == runs[1].history and runs[0].reached_target
    assert runs[0].train_loss <= 0.2 and not runs[0].diverged
    assert evaluate(runs[0].model, data)["train_loss"] == pytest.approx(runs[0].train_loss, rel=1e-12)
    assert next(net.parameters()) is not next(runs[0].model.parameters())


@pytest.mark.parametrize("alpha", [0.1, 7.0])
def test_dinh_rescaling_is_exact(digits: object, trained: object, alpha: float) -> None:
    model = trained
    scaled = rescale_layers(model, 0, alpha)
    x = digits.x_train  # type: ignore[attr-defined]
    y = digits.y_train  # type: ignore[attr-defined]
    assert (scaled(x) - model(x)).abs().max() <= 1e-10
    loss = torch.nn.functional.cross_entropy
    H = HessianOperator.from_model(model, loss, [(x, y)], mode="eval")
    Hs = HessianOperator.from_model(scaled, loss, [(x, y)], mode="eval")
    top = lanczos_eigenvalues(H, generator=gen(5)).eigenvalues[0]
    top_s = lanczos_eigenvalues(Hs, generator=gen(5)).eigenvalues[0]
    low, high = sorted((alpha**2, alpha**-2))
    ratio = float(top_s / top)
    assert low * (1 - 1e-6) <= ratio <= high * (1 + 1e-6)
    assert not math.isclose(ratio, 1.0, rel_tol=0.05)
    # exact: tr H' = tr H_11 / alpha^2 + tr H_22 alpha^2 (first layer's weight and bias, second weight)
    first = exact_trace(H.select("0.weight", "0.bias"))
    second = exact_trace(H.select("2.weight"))
    rest = exact_trace(H.select("2.bias"))
    assert float(exact_trace(Hs)) == pytest.approx(
        float(first / alpha**2 + second * alpha**2 + rest), rel=1e-9
    )
    # magnitude-aware measures are invariant (with zero offsets)
    for adaptive_radius in (0.05,):
        a = worst_case_sharpness(H, adaptive_radius, adaptive=True, eta=0.0, generator=gen(6))
        b = worst_case_sharpness(Hs, adaptive_radius, adaptive=True, eta=0.0, generator=gen(6))
        assert b.value == pytest.approx(a.value, rel=1e-8, abs=1e-12)
    s1 = pac_bayes_sigma(H, magnitude_aware=True, epsilon=0.0, num_bisections=8, generator=gen(7))
    s2 = pac_bayes_sigma(Hs, magnitude_aware=True, epsilon=0.0, num_bisections=8, generator=gen(7))
    assert s2.sigma == s1.sigma


def test_errors() -> None:
    with pytest.raises(InputTypeError, match=r"generator must be a torch.Generator"):
        load_digits_split(generator=0)  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match=r"test_fraction must satisfy 0.0 < test_fraction < 1.0; got"):
        load_digits_split(generator=gen(0), test_fraction=1.5)
    with pytest.raises(InputDataError, match=r"num_train must satisfy 1 <= num_train <= the training split"):
        load_digits_split(generator=gen(0), num_train=5000)
    with pytest.raises(InputTypeError, match=r"dtype must be a floating torch.dtype; got dtype=torch.int64"):
        load_digits_split(generator=gen(0), dtype=torch.int64)
    with pytest.raises(InputDataError, match=r"hidden\[1\] must be >= 1; got hidden\[1\]=0"):
        mlp(3, [4, 0], 2, generator=gen(0))
    with pytest.raises(InputTypeError, match=r"hidden must be a sequence of widths; got 4"):
        mlp(3, 4, 2, generator=gen(0))  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match=r"alpha must satisfy 0.0 < alpha; got alpha=-1.0"):
        rescale_layers(mlp(3, [4], 2, generator=gen(0)), 0, -1.0)
    with pytest.raises(
        InputDataError, match=r"layer must satisfy 0 <= layer <= \(number of Linear layers - 2\) = 0"
    ):
        rescale_layers(mlp(3, [4], 2, generator=gen(0)), 1, 2.0)
    with pytest.raises(
        InputDataError, match=r"rescale_layers needs at least two nn.Linear layers; the model has 1"
    ):
        rescale_layers(mlp(3, [], 2, generator=gen(0)), 0, 2.0)
    with pytest.raises(InputDataError, match=r"the model has no trainable parameters"):
        parameter_count(torch.nn.ReLU())
    data = xor_split(8, 4, generator=gen(0))
    net = mlp(2, [4], 2, generator=gen(0))
    with pytest.raises(
        InputDataError, match=r"batch_size must satisfy 1 <= batch_size <= the number of training"
    ):
        train_classifier(net, data, learning_rate=0.1, batch_size=9, generator=gen(0))
    with pytest.raises(
        InputDataError, match=r"learning_rate must satisfy 0.0 < learning_rate; got learning_rate=0.0"
    ):
        train_classifier(net, data, learning_rate=0.0, batch_size=4, generator=gen(0))
    with pytest.raises(
        InputDataError, match=r"momentum must satisfy 0.0 <= momentum < 1.0; got momentum=1.0"
    ):
        train_classifier(net, data, learning_rate=0.1, batch_size=4, momentum=1.0, generator=gen(0))
    with pytest.raises(InputDataError, match=r"the model has no trainable parameters"):
        train_classifier(torch.nn.Identity(), data, learning_rate=0.1, batch_size=4, generator=gen(0))
    with pytest.raises(
        InputDataError, match=r"label_noise must satisfy 0.0 <= label_noise < 0.5; got label_noise=0.5"
    ):
        xor_split(8, 4, generator=gen(0), label_noise=0.5)
