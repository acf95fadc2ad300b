from __future__ import annotations

import pytest
import torch
from curvature_cases import mlp_case
from torch import nn

from flatminima.curvature import HessianOperator
from flatminima.curvature.gradients import gradient_variance, path_norm
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

F = nn.functional


def _explicit_gradients(case, names):
    grads = []
    for i in range(len(case.y)):
        case.net.zero_grad()
        F.cross_entropy(case.net(case.x[i : i + 1]), case.y[i : i + 1]).backward()
        grads.append(torch.cat([dict(case.net.named_parameters())[n].grad.reshape(-1) for n in names]))
    return torch.stack(grads)


def test_per_example_gradient_variance_matches_a_loop() -> None:
    case = mlp_case(0, n=23)
    H = HessianOperator.from_model(case.net, F.cross_entropy, case.batches([10, 13]), mode="eval")
    G = _explicit_gradients(case, H.names)
    expected = (G - G.mean(0)).square().sum(1).mean()
    torch.testing.assert_close(gradient_variance(H), expected)
    block = H.select("2.*")
    Gb = _explicit_gradients(case, block.names)
    torch.testing.assert_close(gradient_variance(block), (Gb - Gb.mean(0)).square().sum(1).mean())


def test_per_batch_gradient_variance() -> None:
    case = mlp_case(1, n=20)
    sizes = [5, 15]
    H = HessianOperator.from_model(case.net, F.cross_entropy, case.batches(sizes), mode="eval")
    full = H.value_and_grad_at(H.point)[1]
    total = 0.0
    for (x, y), size in zip(case.batches(sizes), sizes, strict=True):
        case.net.zero_grad()
        F.cross_entropy(case.net(x), y).backward()
        g = torch.cat([p.grad.reshape(-1) for p in case.net.parameters()])
        total = total + size / 20 * (g - full).square().sum()
    torch.testing.assert_close(gradient_variance(H, unit="batch"), total)


def test_gradient_variance_errors() -> None:
    case = mlp_case(2)
    with pytest.raises(InputDataError, match="needs the model and its data"):
        gradient_variance(HessianOperator(case.loss, case.params()))
    H = HessianOperator.from_model(case.net, F.cross_entropy, [(case.x, case.y)], mode="eval")
    with pytest.raises(ConfigurationError, match="unit must be 'example' or 'batch'"):
        gradient_variance(H, unit="sample")
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    Hbn = HessianOperator.from_model(bn, F.cross_entropy, [(case.x, case.y)], mode="train")
    with pytest.raises(ConfigurationError, match="per-example gradients are undefined"):
        gradient_variance(Hbn)
    assert float(gradient_variance(Hbn, unit="batch")) == pytest.approx(0.0, abs=1e-20)


def test_path_norm_is_the_sum_over_paths_of_squared_weights() -> None:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    W1, b1, W2, b2 = (p.detach() for p in net.parameters())
    hidden = W1.square() @ torch.ones(3, dtype=torch.float64) + b1.square()
    expected = (W2.square() @ hidden + b2.square()).sum()
    torch.testing.assert_close(path_norm(net, (3,)), expected)
    nobias = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False)).double()
    with torch.no_grad():
        nobias[0].weight.copy_(W1)
        nobias[2].weight.copy_(W2)
    paths = sum(float(W2[o, h] ** 2 * W1[h, i] ** 2) for o in range(2) for h in range(4) for i in range(3))
    assert float(path_norm(nobias, (3,))) == pytest.approx(paths)
    assert net.training  # untouched


def test_path_norm_errors() -> None:
    with pytest.raises(ConfigurationError, match="BatchNorm folded"):
        path_norm(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), (2,))
    with pytest.raises(InputTypeError, match="input_shape must be a sequence of positive ints"):
        path_norm(nn.Linear(2, 2), 2)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="model must be a torch.nn.Module"):
        path_norm("net", (2,))  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match="with parameters"):
        path_norm(nn.ReLU(), (2,))
