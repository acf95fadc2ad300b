"""Batches of two-layer ReLU networks with one output, trained full-batch by GD or SAM on a square loss.

K networks f_k(x) = sum_j a_kj relu(w_kj . x [+ b_kj]) [+ c_k] are held as tensors W (K, width, 2 [+ 1
bias column]), a (K, width) [, c (K,)] and trained at once: the loss (1/n) sum_i (f_k(x_i) - y_i)^2 and
its gradient are computed in closed form for all of them, and SAM's ascent step rho g / ||g|| uses each
network's own gradient norm (the map of :func:`flatminima.optim.sam_perturbation`, per network). Batching
makes the many small trainings of the ``wen-xor`` study cheap; :func:`network` returns one of them as an
``nn.Sequential`` for the curvature measures.

References:
    P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur. Sharpness-aware minimization for efficiently
    improving generalization. ICLR 2021.
"""

from __future__ import annotations

import torch
from torch import nn


def initial_parameters(
    count: int, width: int, bias: bool, scale: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``count`` networks: W (count, width, 2 [+1 bias column]), a (count, width) [, c (count,)].

    Weights, then output weights, then (with bias) hidden and output biases are drawn, so networks with
    and without bias share W and a for one generator seed.
    """

    def uniform(*shape: int, fan_in: int) -> torch.Tensor:
        u = torch.rand(*shape, generator=generator, dtype=torch.float64)
        return (2.0 * u - 1.0) * fan_in**-0.5 * scale

    params = {"W": uniform(count, width, 2, fan_in=2), "a": uniform(count, width, fan_in=width)}
    if bias:
        params["W"] = torch.cat([params["W"], uniform(count, width, 1, fan_in=2)], dim=2)
        params["c"] = uniform(count, fan_in=width)
    return params


def _features(x: torch.Tensor, bias: bool) -> torch.Tensor:
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1) if bias else x


def _loss_and_gradient(
    params: dict[str, torch.Tensor], features: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    # every network shares the inputs: one (n, d') x (d', K width) product gives all pre-activations
    count, width, columns = params["W"].shape
    n = features.shape[0]
    pre = (features @ params["W"].reshape(count * width, columns).T).reshape(n, count, width)
    hidden = pre.clamp_min(0.0)
    out = (hidden * params["a"]).sum(2)  # (n, K)
    if "c" in params:
        out = out + params["c"]
    residual = out - y.unsqueeze(1)
    loss = residual.square().mean(0)
    d_out = residual * (2.0 / n)
    grads = {"a": (hidden * d_out.unsqueeze(2)).sum(0)}
    d_pre = torch.where(pre > 0, d_out.unsqueeze(2) * params["a"], 0.0)
    grads["W"] = (d_pre.reshape(n, count * width).T @ features).reshape(count, width, columns)
    if "c" in params:
        grads["c"] = d_out.sum(0)
    return loss, grads


def loss_and_gradient(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per network: the square loss (1/n) sum (f(x_i) - y_i)^2 and its gradient (closed form)."""
    params = {k: v.contiguous() for k, v in params.items()}
    return _loss_and_gradient(params, _features(x, "c" in params), y)


def _shaped(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *[1] * (like.dim() - 1))


def train(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    algorithm: str,
    learning_rate: float,
    rho: float,
    target_loss: float,
    max_steps: int,
    sam_steps: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Full-batch GD, or SAM for the first ``sam_steps`` steps then GD, until each loss is <= target.

    A network stops (stays put) at its first step with loss <= ``target_loss``; at most ``max_steps``.

    Returns:
        (final parameters, final losses, steps taken per network).
    """
    params = {k: v.clone().contiguous() for k, v in params.items()}
    features = _features(x, "c" in params)
    count = params["a"].shape[0]
    done = torch.zeros(count, dtype=torch.bool)
    steps = torch.zeros(count, dtype=torch.int64)
    tiny = torch.finfo(params["a"].dtype).tiny
    for step in range(max_steps):
        loss, grads = _loss_and_gradient(params, features, y)
        done |= loss <= target_loss
        if bool(done.all()):
            break
        if algorithm == "sam" and rho > 0 and step < sam_steps:
            squares = [g.reshape(count, -1).square().sum(1) for g in grads.values()]
            scale = rho / torch.stack(squares).sum(0).sqrt().clamp_min(tiny)
            ascent = {k: v + _shaped(scale, v) * grads[k] for k, v in params.items()}
            grads = _loss_and_gradient(ascent, features, y)[1]
        rate = (~done).double() * learning_rate
        for key, value in params.items():
            value.sub_(_shaped(rate, value) * grads[key])
        steps += ~done
    loss = _loss_and_gradient(params, features, y)[0]
    return params, loss, steps


def network(params: dict[str, torch.Tensor], index: int) -> nn.Sequential:
    """Network ``index`` of a batch as an ``nn.Sequential`` (Linear, ReLU, Linear), float64."""
    bias = "c" in params
    width = params["a"].shape[1]
    # skip_init: the layers' default initialization would draw from the global RNG
    first = nn.utils.skip_init(nn.Linear, 2, width, bias=bias, dtype=torch.float64)
    second = nn.utils.skip_init(nn.Linear, width, 1, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        first.weight.copy_(params["W"][index, :, :2])
        second.weight.copy_(params["a"][index].unsqueeze(0))
        if bias:
            first.bias.copy_(params["W"][index, :, 2])
            second.bias.copy_(params["c"][index : index + 1])
    return nn.Sequential(first, nn.ReLU(), second)


def square_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1/n) sum_i (f(x_i) - y_i)^2 of a one-output network."""
    return (output.squeeze(-1) - target).square().mean()
