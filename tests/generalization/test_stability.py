"""Uniform stability of SGD, measured (Hardt, Recht and Singer 2016): the defining properties and Thm 3.8."""

from __future__ import annotations

import pytest
import torch

from flatminima.errors import ConfigurationError, InputDataError, InputTypeError
from flatminima.generalization import (
    StabilityResult,
    logistic_loss,
    logistic_regression_constants,
    sgd_stability,
)
from flatminima.networks import mlp

D, N, K = 10, 100, 8


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(count: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(2, (count,), generator=g).double()
    x = 0.3 * torch.randn(count, D, generator=g, dtype=torch.float64) + 0.3 * (2 * y[:, None] - 1)
    return x, y


def linear_model() -> torch.nn.Module:
    net = torch.nn.utils.skip_init(torch.nn.Linear, D, 1, dtype=torch.float64)
    torch.nn.init.zeros_(net.weight)
    torch.nn.init.zeros_(net.bias)
    return net


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = gen(0)
    return {"train": draw(N, g), "new": draw(K, g), "held": draw(200, g)}


@pytest.fixture(scope="module", params=["with_replacement", "permutation"])
def logistic(request: pytest.FixtureRequest, data: dict) -> StabilityResult:
    L, beta = logistic_regression_constants(data["train"][0], data["new"][0], data["held"][0])
    return sgd_stability(
        linear_model(),
        logistic_loss,
        data["train"],
        data["new"],
        data["held"],
        indices=list(range(0, N, N // K))[:K],
        learning_rate=1.0 / beta,
        num_steps=300,
        batch_size=4,
        sampling=request.param,
        generator=gen(1),
        lipschitz=L,
        smoothness=beta,
    )


def test_divergence_is_exactly_zero_until_the_replaced_example_is_first_sampled(logistic) -> None:
    T = logistic.num_steps
    assert logistic.divergence.shape == (K, T + 1) == logistic.loss_difference.shape
    for k, first in enumerate(logistic.first_sampled):
        assert first is not None  # 300 steps of 4 examples out of 100: every example is drawn
        assert torch.equal(logistic.divergence[k, : first + 1], torch.zeros(first + 1, dtype=torch.float64))
        assert torch.equal(
            logistic.loss_difference[k, : first + 1], torch.zeros(first + 1, dtype=torch.float64)
        )
        assert logistic.divergence[k, first + 1] > 0
    assert len(set(logistic.first_sampled)) > 1  # the indices enter at different steps


def test_logistic_regression_stays_below_theorem_3_8(logistic) -> None:
    assert logistic.bound is not None and logistic.divergence_bound is not None
    steps = torch.arange(logistic.num_steps + 1, dtype=torch.float64)
    L = logistic.lipschitz
    expected = 2.0 * L**2 / N * steps * float(logistic.learning_rates[0])
    assert torch.allclose(logistic.bound, expected, rtol=1e-12, atol=0)
    # the measured stability (held-out loss differences, worst point, mean over i) is below the bound
    assert bool((logistic.max_loss_difference_mean <= logistic.bound + 1e-12).all())
    assert bool((logistic.loss_difference_mean <= logistic.max_loss_difference_mean + 1e-15).all())
    # and the pathwise form of the proof holds for every run and step (non-expansive steps)
    assert bool((logistic.divergence <= logistic.divergence_bound * (1 + 1e-9) + 1e-15).all())
    # |f(w; z) - f(w'; z)| <= L ||w - w'||
    assert bool((logistic.max_loss_difference <= L * logistic.divergence * (1 + 1e-9) + 1e-15).all())


def test_summaries_are_means_and_standard_errors_across_indices(logistic) -> None:
    div = logistic.divergence
    assert torch.allclose(logistic.divergence_mean, div.mean(0))
    assert torch.allclose(logistic.divergence_stderr, div.std(0) / K**0.5)
    assert torch.allclose(logistic.loss_difference_mean, logistic.loss_difference.mean(0))
    assert logistic.divergence_mean[-1] > 0


def test_runs_reproduce_from_the_seed_and_follow_the_model_dtype(data) -> None:
    def run(seed: int) -> StabilityResult:
        return sgd_stability(
            mlp(D, [5], 1, generator=gen(3), dtype=torch.float32),
            logistic_loss,
            tuple(t.float() for t in data["train"]),
            tuple(t[:2].float() for t in data["new"]),
            tuple(t.float() for t in data["held"]),
            indices=[5, 17],
            learning_rate=[0.5] * 60,
            num_steps=60,
            batch_size=8,
            generator=gen(seed),
        )

    first, again, other = run(4), run(4), run(5)
    assert first.divergence.dtype == torch.float32 and first.bound is None
    assert torch.equal(first.divergence, again.divergence) and first.first_sampled == again.first_sampled
    assert not torch.equal(first.divergence, other.divergence)
    for k, t in enumerate(first.first_sampled):
        if t is not None:
            assert float(first.divergence[k, : t + 1].abs().max()) == 0.0
            assert first.divergence[k, t + 1] > 0  # the nonconvex MLP too


def test_a_single_index_has_nan_standard_errors(data) -> None:
    result = sgd_stability(
        linear_model(),
        logistic_loss,
        data["train"],
        tuple(t[:1] for t in data["new"]),
        data["held"],
        indices=[0],
        learning_rate=0.1,
        num_steps=5,
        generator=gen(0),
    )
    assert bool(result.divergence_stderr.isnan().all()) and result.divergence.shape == (1, 6)


def bad(data: dict, **changes: object) -> None:
    options: dict = {
        "model": linear_model(),
        "loss_fn": logistic_loss,
        "train": data["train"],
        "replacements": tuple(t[:1] for t in data["new"]),
        "held_out": data["held"],
        "indices": [0],
        "learning_rate": 0.1,
        "num_steps": 5,
        "generator": gen(0),
    }
    options.update(changes)
    sgd_stability(**options)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"batch_size": N + 1}, InputDataError, "batch_size must satisfy 1 <= batch_size <= the number"),
        ({"batch_size": 0}, InputDataError, "batch_size must satisfy 1 <= batch_size"),
        ({"learning_rate": 0.0}, InputDataError, "learning_rate must satisfy 0.0 < learning_rate"),
        ({"learning_rate": [0.1, -0.1, 0.1, 0.1, 0.1]}, InputDataError, r"learning_rate\[1\] must satisfy"),
        ({"learning_rate": [0.1]}, InputDataError, "learning_rate must hold num_steps = 5"),
        ({"smoothness": 100.0}, InputDataError, "learning_rate must be <= 2 / smoothness"),
        ({"indices": [N]}, InputDataError, r"indices\[0\] must satisfy 0 <= indices\[0\] <= n - 1"),
        ({"indices": []}, InputDataError, "indices must be a non-empty sequence"),
        ({"sampling": "cyclic"}, ConfigurationError, "sampling must be one of"),
        ({"model": torch.nn.ReLU()}, InputDataError, "model has no trainable parameters"),
        ({"model": "net"}, InputTypeError, "model must be a torch.nn.Module"),
        ({"generator": None}, InputTypeError, "generator must be a torch.Generator"),
        ({"lipschitz": -1.0}, InputDataError, "lipschitz must satisfy"),
    ],
)
def test_bad_input_raises_one_line_errors(data, changes, error, match) -> None:
    with pytest.raises(error, match=match) as info:
        bad(data, **changes)
    assert "\n" not in str(info.value)


def test_duplicate_indices_and_mismatched_replacements_are_rejected(data) -> None:
    with pytest.raises(InputDataError, match="indices must be distinct"):
        bad(data, indices=[1, 1], replacements=tuple(t[:2] for t in data["new"]))
    with pytest.raises(InputDataError, match="replacements must hold one example per index"):
        bad(data, indices=[1, 2])
    with pytest.raises(InputDataError, match="loss_fn must return one loss per example"):
        bad(data, loss_fn=lambda out, y: logistic_loss(out, y).mean())
