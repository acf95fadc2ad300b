"""Taylor-mode quadratic forms v^T H v of MLPs against Hessian-vector products (float64, round-off)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from curvature_cases import within
from torch import nn

from flatminima.curvature import HessianOperator, hutchinson_trace

LOSSES: dict[str, Callable[..., Any]] = {
    "cross_entropy": nn.functional.cross_entropy,
    "CrossEntropyLoss": nn.CrossEntropyLoss(),
    "mse_loss": nn.functional.mse_loss,
    "MSELoss": nn.MSELoss(),
}
ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}


def _mlp(activation: type[nn.Module], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)  # module initialization only; the tests draw their own data below
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 5),
        activation(),
        nn.Dropout(0.3),
        nn.Linear(5, 4, bias=False),
        activation(),
        nn.Linear(4, 3),
    ).double()


def _data(loss: str, n: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, 2, 3, generator=g, dtype=torch.float64)
    if "ntropy" in loss:
        return X, torch.randint(0, 3, (n,), generator=g)
    return X, torch.randn(n, 3, generator=g, dtype=torch.float64)


def _operator(activation: str, loss: str) -> HessianOperator:
    X, y = _data(loss)
    batches = [(X[:9], y[:9]), (X[9:], y[9:])]  # unequal batches: weighted by size
    return HessianOperator.from_model(_mlp(ACTIVATIONS[activation]), LOSSES[loss], batches, mode="eval")


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_taylor_quadratic_forms_match_hessian_vector_products(activation: str, loss: str) -> None:
    H = _operator(activation, loss)
    assert H._closed_quadratic_forms is not None  # the Taylor-mode path is the one under test
    V = torch.randn(H.size, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(H.quadratic_forms(V), (V * H.matmat(V)).sum(dim=0), rtol=1e-10, atol=1e-12)
    group = H.select("1.weight", "6.bias")  # parameters outside the group are held fixed
    W = torch.randn(group.size, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(
        group.quadratic_forms(W), (W * group.matmat(W)).sum(dim=0), rtol=1e-10, atol=1e-12
    )


def test_frozen_parameters_stay_fixed() -> None:
    net = _mlp(nn.Tanh)
    net[4].weight.requires_grad_(False)
    X, y = _data("cross_entropy")
    H = HessianOperator.from_model(net, nn.functional.cross_entropy, [(X, y)], mode="eval")
    assert H._closed_quadratic_forms is not None and "4.weight" not in H.names
    V = torch.randn(H.size, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(H.quadratic_forms(V), (V * H.matmat(V)).sum(dim=0), rtol=1e-10, atol=1e-12)


def test_hutchinson_on_an_mlp_is_within_its_error_bar() -> None:
    H = _operator("tanh", "cross_entropy")
    exact = float(torch.trace(H.dense()))
    estimate = hutchinson_trace(H, 400, generator=torch.Generator().manual_seed(5), batch_size=100)
    assert within(estimate, exact)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _soft_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets)


@pytest.mark.parametrize(
    ("build", "loss", "mode"),
    [
        (lambda: _Residual().double(), nn.functional.cross_entropy, "eval"),  # not an nn.Sequential
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 3), nn.BatchNorm1d(3)).double(), None, "eval"),
        (lambda: _mlp(nn.Tanh), nn.CrossEntropyLoss(label_smoothing=0.1), "eval"),  # non-default loss
        (lambda: _mlp(nn.Tanh), nn.HuberLoss(), "eval"),  # a regression loss Taylor mode does not know
        (lambda: _mlp(nn.Tanh), _soft_cross_entropy, "eval"),  # an arbitrary callable
        (lambda: _mlp(nn.Tanh), nn.functional.cross_entropy, "train"),  # dropout masks in train mode
    ],
)
def test_unsupported_models_keep_hessian_vector_products(
    build: Callable[[], nn.Module], loss: Any, mode: str
) -> None:
    X, y = _data("cross_entropy")
    loss = nn.functional.cross_entropy if loss is None else loss
    if isinstance(loss, nn.HuberLoss):
        y = torch.randn(X.shape[0], 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    H = HessianOperator.from_model(
        build(), loss, [(X, y)], mode=mode, generator=torch.Generator().manual_seed(0)
    )
    assert H._closed_quadratic_forms is None
    V = torch.randn(H.size, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    torch.testing.assert_close(H.quadratic_forms(V), (V * H.matmat(V)).sum(dim=0))


def test_soft_label_targets_keep_hessian_vector_products() -> None:
    X, _ = _data("cross_entropy")
    y = torch.softmax(
        torch.randn(X.shape[0], 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64), -1
    )
    H = HessianOperator.from_model(_mlp(nn.Tanh), nn.functional.cross_entropy, [(X, y)], mode="eval")
    assert H._closed_quadratic_forms is None


@pytest.mark.parametrize("last", ["linear", "activation"])
def test_inputs_with_extra_dimensions_and_no_output_layer(last: str) -> None:
    """(N, T, features) inputs under the mean squared error, ending in a linear layer or an activation."""
    g = torch.Generator().manual_seed(9)
    layers: list[nn.Module] = [nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)]
    if last == "activation":
        layers.append(nn.Tanh())
    torch.manual_seed(0)
    net = nn.Sequential(*layers).double()
    X = torch.randn(7, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, 5, 2, generator=g, dtype=torch.float64)
    H = HessianOperator.from_model(net, nn.functional.mse_loss, [(X, y)], mode="eval")
    assert H._closed_quadratic_forms is not None
    V = torch.randn(H.size, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(H.quadratic_forms(V), (V * H.matmat(V)).sum(dim=0), rtol=1e-10, atol=1e-12)
