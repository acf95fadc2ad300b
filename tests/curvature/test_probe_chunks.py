"""Blocks of Hessian-vector products: vmapped in chunks, or looped on one gradient graph (large graphs)."""

from __future__ import annotations

import torch
from torch import nn

from flatminima.curvature import HessianOperator, hutchinson_trace
from flatminima.curvature._autograd_products import WHOLE_BLOCK


def _cnn_case(n: int = 64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).double()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    return net.eval(), X, torch.randint(0, 3, (n,), generator=g)


def _operator(chunk: int | None, *, vectorize: bool = True) -> HessianOperator:
    net, X, y = _cnn_case()
    H = HessianOperator.from_model(
        net,
        nn.functional.cross_entropy,
        [(X[:40], y[:40]), (X[40:], y[40:])],
        mode="eval",
        vectorize=vectorize,
    )
    if chunk is not None:
        H._probe_chunk = chunk  # force the path
    return H


def test_looped_vmapped_and_chunked_products_agree() -> None:
    V = torch.randn(_operator(None).size, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    whole = _operator(WHOLE_BLOCK).matmat(V)
    for H in (_operator(1), _operator(3), _operator(None, vectorize=False)):
        torch.testing.assert_close(H.matmat(V), whole, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(H.matvec(V[:, 0]), whole[:, 0], rtol=1e-10, atol=1e-12)
    dense = _operator(1).dense()
    torch.testing.assert_close(dense, dense.mT, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_operator(WHOLE_BLOCK).dense(), dense, rtol=1e-10, atol=1e-12)


def test_loop_handles_unused_and_linear_parameters() -> None:
    params = {
        "x": torch.tensor([1.0, -2.0], dtype=torch.float64),
        "linear": torch.tensor([0.5], dtype=torch.float64),  # enters linearly: zero Hessian rows
        "unused": torch.zeros(3, dtype=torch.float64),  # does not enter the loss
    }

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (p["x"] ** 3).sum() + 2.0 * p["linear"].sum()

    looped, vmapped = HessianOperator(loss, params), HessianOperator(loss, params)
    looped._probe_chunk = 1
    expected = torch.zeros(6, 6, dtype=torch.float64)
    expected[0, 0], expected[1, 1] = 6.0, -12.0
    torch.testing.assert_close(looped.dense(), expected)
    torch.testing.assert_close(vmapped.dense(), expected)
    only_linear = HessianOperator(loss, params).select("linear", "unused")
    only_linear._probe_chunk = 1
    torch.testing.assert_close(only_linear.dense(), torch.zeros(4, 4, dtype=torch.float64))


def test_large_activations_loop_on_cpu_small_ones_vmap() -> None:
    net, X, y = _cnn_case(n=512)
    big = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(32 * 64, 3)
    ).double()
    H = HessianOperator.from_model(big, nn.functional.cross_entropy, [(X, y)], mode="eval")
    estimate = hutchinson_trace(H, 12, generator=torch.Generator().manual_seed(0), batch_size=4)
    assert H._probe_chunk == 1  # ~2 MiB per saved activation: one double backward per probe
    small = HessianOperator.from_model(net, nn.functional.cross_entropy, [(X[:8], y[:8])], mode="eval")
    small.matmat(torch.ones(small.size, 4, dtype=torch.float64))
    assert small._probe_chunk > 4
    reference = HessianOperator.from_model(big, nn.functional.cross_entropy, [(X, y)], mode="eval")
    reference._probe_chunk = WHOLE_BLOCK
    again = hutchinson_trace(reference, 12, generator=torch.Generator().manual_seed(0), batch_size=4)
    assert abs(estimate.value - again.value) <= 1e-9 * abs(again.value)
