"""The train/eval pitfall: BatchNorm and dropout change the Hessian, so the mode is explicit."""

from __future__ import annotations

import warnings

import pytest
import torch
from curvature_cases import dense_hessian
from torch import nn

from flatminima.curvature import CurvatureWarning, HessianOperator
from flatminima.errors import ConfigurationError, InputTypeError

F = nn.functional


def _bn_net(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        net[1].running_mean.copy_(torch.randn(4, generator=g, dtype=torch.float64))
        net[1].running_var.copy_(torch.rand(4, generator=g, dtype=torch.float64) + 0.5)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (12,), generator=g)
    return net, x, y


def _manual_bn_loss(params, x, y, *, running=None):
    h = x @ params["0.weight"].T + params["0.bias"]
    if running is None:  # train mode: batch statistics (biased variance, as BatchNorm normalizes)
        mean, var = h.mean(0), h.var(0, correction=0)
    else:
        mean, var = running
    h = (h - mean) / torch.sqrt(var + 1e-5) * params["1.weight"] + params["1.bias"]
    out = torch.tanh(h) @ params["3.weight"].T + params["3.bias"]
    return F.cross_entropy(out, y)


def test_mode_is_required_or_warned_for_batchnorm() -> None:
    net, x, y = _bn_net()
    with pytest.warns(CurvatureWarning, match=r"BatchNorm/dropout layers \(1\).*measuring in eval mode"):
        H = HessianOperator.from_model(net, F.cross_entropy, [(x, y)])
    assert H.source is not None and H.source.mode == "eval"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HessianOperator.from_model(net, F.cross_entropy, [(x, y)], mode="train")
        HessianOperator.from_model(nn.Linear(3, 2).double(), F.cross_entropy, [(x, y)])  # no BN: no warning


def test_invalid_mode() -> None:
    net, x, y = _bn_net()
    with pytest.raises(ConfigurationError, match="mode must be 'train' or 'eval'; got mode='training'"):
        HessianOperator.from_model(net, F.cross_entropy, [(x, y)], mode="training")


def test_batchnorm_train_and_eval_hessians_match_their_definitions_and_differ() -> None:
    net, x, y = _bn_net()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    running = (net[1].running_mean.clone(), net[1].running_var.clone())
    train = HessianOperator.from_model(net, F.cross_entropy, [(x, y)], mode="train").dense()
    evaluation = HessianOperator.from_model(net, F.cross_entropy, [(x, y)], mode="eval").dense()
    expected_train = dense_hessian(lambda p: _manual_bn_loss(p, x, y), params)
    expected_eval = dense_hessian(lambda p: _manual_bn_loss(p, x, y, running=running), params)
    torch.testing.assert_close(train, expected_train, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(evaluation, expected_eval, rtol=1e-9, atol=1e-10)
    assert float((train - evaluation).abs().max()) > 1e-2


def test_measuring_in_train_mode_leaves_the_model_untouched() -> None:
    net, x, y = _bn_net()
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    H = HessianOperator.from_model(net, F.cross_entropy, [(x, y)], mode="train")
    H.matmat(torch.ones(H.size, 3, dtype=torch.float64))
    assert not net.training
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key])


def _dropout_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 2)).double()
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (10,), generator=g)
    return net, x, y


def test_dropout_eval_mode_is_the_deterministic_network() -> None:
    net, x, y = _dropout_net()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    H = HessianOperator.from_model(net, F.cross_entropy, [(x, y)], mode="eval")

    def loss(p):
        h = torch.tanh(x @ p["0.weight"].T + p["0.bias"])
        return F.cross_entropy(h @ p["3.weight"].T + p["3.bias"], y)

    torch.testing.assert_close(H.dense(), dense_hessian(loss, params), rtol=1e-9, atol=1e-10)


def test_dropout_train_mode_uses_one_fixed_mask_per_batch() -> None:
    net, x, y = _dropout_net()
    with pytest.raises(InputTypeError, match="needs generator="):
        HessianOperator.from_model(net, F.cross_entropy, [(x, y)], mode="train")
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    H = HessianOperator.from_model(
        net, F.cross_entropy, batches, mode="train", generator=torch.Generator().manual_seed(0)
    )
    assert H.source is not None
    masks = H.source.model[2].masks
    assert set(masks) == {0, 1}
    params = {k: v.detach().clone() for k, v in net.named_parameters()}

    def loss(p):
        total = 0.0
        for index, (xb, yb) in enumerate(batches):
            h = torch.tanh(xb @ p["0.weight"].T + p["0.bias"]) * masks[index]
            total = total + F.cross_entropy(h @ p["3.weight"].T + p["3.bias"], yb) * len(yb) / len(y)
        return total

    dense = H.dense()
    torch.testing.assert_close(dense, dense_hessian(loss, params), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(H.dense(), dense)  # the same loss at every product


def test_train_mode_rejects_other_dropout_kinds() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.AlphaDropout(0.2), nn.Linear(4, 2)).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ConfigurationError, match="supports nn.Dropout only; layer '1' is AlphaDropout"):
        HessianOperator.from_model(
            net, F.cross_entropy, [(x, y)], mode="train", generator=torch.Generator().manual_seed(0)
        )
