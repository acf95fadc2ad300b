"""Second-order Taylor mode for multilayer perceptrons: v^T H v for many directions in one forward pass.

Along the line w(t) = w + t v the loss expands as L(w(t)) = L0 + t L1 + (t^2 / 2) L2 + O(t^3) with
L2 = v^T H v, which is all Hutchinson's estimator needs. Taylor mode propagates every activation as its
coefficients (x0, x1, x2) of x(t) = x0 + t x1 + (t^2 / 2) x2 through the network:

* linear layer y = x W^T + c with W(t) = W + t V, c(t) = c + t e:
  y0 = x0 W^T + c,  y1 = x1 W^T + x0 V^T + e,  y2 = x2 W^T + 2 x1 V^T;
* elementwise sigma: y0 = sigma(x0),  y1 = sigma'(x0) x1,  y2 = sigma''(x0) x1^2 + sigma'(x0) x2;
* cross-entropy l(z) = logsumexp(z) - z_y, with p = softmax(z0):
  l2 = sum_c p z1^2 - (p . z1)^2 + (p - e_y) . z2;
  mean squared error mean((z - y)^2): l2 = (2 / numel) sum (z1^2 + (z0 - y) z2).

x0 is shared by all directions; x1, x2 carry a leading batch of b directions. At the first layer the
input is constant (x1 = x2 = 0), so the only product with the data is x0 V^T for all directions in one
matrix product, where a Hessian-vector product (forward over reverse) needs two (x0 V^T and the
weight-gradient tangent x0^T dy). For ReLU sigma'' = 0, the same convention autograd's Hessian uses.

Supported: ``nn.Sequential`` of ``nn.Linear``, ``nn.Tanh``, ``nn.Sigmoid``, ``nn.ReLU``, ``nn.Identity``,
``nn.Flatten`` (and ``nn.Dropout`` in eval mode) with ``torch.nn.functional.cross_entropy`` /
``mse_loss`` or ``nn.CrossEntropyLoss()`` / ``nn.MSELoss()`` at their defaults (mean reduction).
:func:`supports` decides; everything else (convolutions, normalization, embeddings, attention, residual
blocks, train-mode dropout, hooked layers) keeps Hessian-vector products.

References:
    A. Griewank, A. Walther. Evaluating Derivatives, 2nd ed. SIAM 2008, Chapter 13 (Taylor propagation).
    J. Bettencourt, M. J. Johnson, D. Duvenaud. Taylor-mode automatic differentiation for higher-order
    derivatives in JAX. NeurIPS Program Transformations Workshop, 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

_ELEMENTWISE = (nn.Tanh, nn.Sigmoid, nn.ReLU)
_NO_OPS = (nn.Identity, nn.Dropout)  # dropout: eval mode only (see supports)
_SUPPORTED = (nn.Linear, nn.Flatten, *_ELEMENTWISE, *_NO_OPS)
Coefficients = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def loss_kind(loss_fn: Callable[..., Any]) -> str | None:
    """The kind ("cross_entropy" or "mse") of a supported mean-reduced loss at its defaults, else None."""
    if loss_fn is nn.functional.cross_entropy:
        return "cross_entropy"
    if loss_fn is nn.functional.mse_loss:
        return "mse"
    if type(loss_fn) is nn.CrossEntropyLoss:
        default = nn.CrossEntropyLoss()
        same = loss_fn.weight is None and loss_fn.label_smoothing == 0.0 and loss_fn.reduction == "mean"
        return "cross_entropy" if same and loss_fn.ignore_index == default.ignore_index else None
    if type(loss_fn) is nn.MSELoss and loss_fn.reduction == "mean":
        return "mse"
    return None


def supports(model: nn.Module, loss_fn: Callable[..., Any], mode: str) -> bool:
    """True when :func:`quadratic_forms` applies to ``model`` and ``loss_fn`` in ``mode``.

    Only a plain ``nn.Sequential`` of the supported layers qualifies (exact types: subclasses,
    parametrized layers and nested containers are not), without forward hooks or pre-hooks (which
    would change what the network computes); convolutions, normalization, embeddings, attention,
    residual blocks and every other architecture keep Hessian-vector products.

    Example:
        >>> mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> supports(mlp, nn.functional.cross_entropy, "eval")
        True
        >>> supports(nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten()), nn.functional.cross_entropy, "eval")
        False
    """
    if type(model) is not nn.Sequential or loss_kind(loss_fn) is None:
        return False
    if _has_hooks(model):
        return False
    return all(
        type(layer) in _SUPPORTED and (type(layer) is not nn.Dropout or mode == "eval")
        for layer in model.children()
    )


def _has_hooks(model: nn.Module) -> bool:
    """Whether a module of ``model`` (or the global registry) has forward hooks or pre-hooks."""
    hooks = nn.modules.module
    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks:
        return True
    return any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())


def quadratic_forms(
    model: nn.Module,
    kind: str,
    params: Mapping[str, torch.Tensor],
    directions: Mapping[str, torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """(v_j^T H v_j)_j of the batch loss for directions with a leading batch dimension b, shape (b,).

    ``kind`` is the loss's :func:`loss_kind`; ``params`` holds every parameter by its
    ``named_parameters`` name; ``directions`` those that move (the others are held fixed).
    """
    batch = next(iter(directions.values())).shape[0]
    layers = [(name, layer) for name, layer in model.named_children() if type(layer) not in _NO_OPS]
    last = layers.pop() if layers and type(layers[-1][1]) is nn.Linear else None
    before_last = last is not None and layers and type(layers[-1][1]) in _ELEMENTWISE
    activation = layers.pop()[1] if before_last else None
    x: Coefficients = (inputs, None, None)
    for name, layer in layers:
        if type(layer) is nn.Linear:
            x = _linear(x, params, directions, f"{name}.", batch)
        elif type(layer) in _ELEMENTWISE:
            x = _elementwise(layer, x)
        else:  # Flatten
            x = _reshape(layer, x)
    if last is None or x[0].ndim != 2:  # no output layer to fold (or inputs with extra dimensions)
        if activation is not None:
            x = _elementwise(activation, x)
        if last is not None:
            x = _linear(x, params, directions, f"{last[0]}.", batch)
        z0, z1, z2 = x
        curvature, g = _loss_terms(kind, z0, None if z1 is None else z1.movedim(-1, 0), targets, batch)
        return curvature if z2 is None else curvature + _weighted_sum(z2, g)
    # the last linear layer: z2 enters the loss only through g . z2, which folds into the layer,
    # g . (x2 W^T + 2 x1 V^T) = <x2, g W> + 2 <V, g^T x1>: no product of the batch with W or V for z2;
    # after an activation, x2 = sigma'' x1^2 + sigma' x2_pre is never formed: <x2, c> is a sum of
    # weighted sums <x1^2, sigma'' c> + <x2_pre, sigma' c> with unbatched weights (matrix-vector products)
    name, _ = last
    x0, x1, x2 = x
    if activation is not None:
        x0, first, second = _derivatives(activation, x0)
        pre1, pre2 = x1, x2
        x1, x2 = (None if pre1 is None else first * pre1), None
    W, V = params[f"{name}.weight"], directions.get(f"{name}.weight")
    z0 = nn.functional.linear(x0, W, params.get(f"{name}.bias"))
    z1 = _class_first_output(x0, x1, W, V, directions.get(f"{name}.bias"), batch)
    curvature, g = _loss_terms(kind, z0, z1, targets, batch)
    c = g @ W
    if activation is not None:
        if second is not None and pre1 is not None:
            curvature = curvature + _weighted_sum(pre1.square(), second * c)
        if pre2 is not None:
            curvature = curvature + _weighted_sum(pre2, first * c)
    elif x2 is not None:
        curvature = curvature + _weighted_sum(x2, c)
    if x1 is not None and V is not None:
        rows = g.reshape(-1, g.shape[-1]).mT  # (out, N)
        curvature = curvature + 2.0 * (V * (rows @ x1.reshape(batch, -1, x1.shape[-1]))).sum(dim=(-2, -1))
    return curvature


def _weighted_sum(T: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(sum over all but the first dimension of T_j * weights)_j, one matrix-vector product, shape (b,)."""
    return T.reshape(T.shape[0], -1) @ weights.reshape(-1)


def _loss_terms(
    kind: str, z0: torch.Tensor, z1: torch.Tensor | None, targets: torch.Tensor, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss's second-order coefficient without its z2 term, (b,), and g with l2 = that + g . z2.

    ``z1`` comes with the outputs' last (class) dimension first: (out, b, N, ...).
    """
    if z1 is None:
        curvature = z0.new_zeros(batch)
    if kind == "mse":
        scale = 2.0 / z0.numel()
        if z1 is not None:
            curvature = scale * z1.square().movedim(1, 0).reshape(batch, -1).sum(dim=1)
        return curvature, scale * (z0 - targets)
    p = torch.softmax(z0, dim=-1)
    count = z0.shape[0]
    g = (p - nn.functional.one_hot(targets, z0.shape[-1]).to(p.dtype)) / count
    if z1 is not None:
        columns = p.mT.unsqueeze(1)  # (out, 1, N)
        per_example = (columns * z1.square()).sum(dim=0) - (columns * z1).sum(dim=0).square()
        curvature = per_example.sum(dim=-1) / count
    return curvature, g


def _class_first_output(
    x0: torch.Tensor,
    x1: torch.Tensor | None,
    W: torch.Tensor,
    V: torch.Tensor | None,
    e: torch.Tensor | None,
    batch: int,
) -> torch.Tensor | None:
    """z1 = x1 W^T + x0 V_j^T + e_j of the output layer in the layout (out, b, N) (x0 of shape (N, in)).

    Both products then write contiguous blocks of N values (classes first), which on CPU was about
    twice as fast as the (b, N, out) layout for a handful of classes.
    """
    out = W.shape[0]
    parts = [] if x1 is None else [(W @ x1.reshape(-1, x1.shape[-1]).mT).reshape(out, batch, -1)]
    if V is not None:
        inputs, rows = x0, V
        if e is not None:
            inputs = torch.cat([x0, x0.new_ones(x0.shape[0], 1)], dim=-1)
            rows, e = torch.cat([V, e.unsqueeze(-1)], dim=-1), None
        parts.append((rows.reshape(batch * out, -1) @ inputs.mT).reshape(batch, out, -1).movedim(1, 0))
    if e is not None:
        parts.append(e.mT.unsqueeze(-1).expand(out, batch, x0.shape[0]))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else sum(parts[1:], parts[0])


def batches_supported(kind: str, output_shape: torch.Size | None, inputs: Any, targets: torch.Tensor) -> bool:
    """Whether one batch fits :func:`quadratic_forms`, given the shape of the model's output on it.

    It needs one input tensor, class-index targets for cross-entropy on (N, C) outputs, and targets
    shaped like the outputs for the mean squared error (``output_shape`` None: not a tensor output).
    """
    if not isinstance(inputs, torch.Tensor) or output_shape is None:
        return False
    if kind == "cross_entropy":
        integer = not torch.is_floating_point(targets) and not torch.is_complex(targets)
        return integer and targets.ndim == 1 and len(output_shape) == 2 and bool((targets >= 0).all())
    return output_shape == targets.shape


def _linear(
    x: Coefficients,
    params: Mapping[str, torch.Tensor],
    directions: Mapping[str, torch.Tensor],
    prefix: str,
    batch: int,
    *,
    second_order: bool = True,
) -> Coefficients:
    x0, x1, x2 = x
    W, c = params[prefix + "weight"], params.get(prefix + "bias")
    V, e = directions.get(prefix + "weight"), directions.get(prefix + "bias")
    y0 = nn.functional.linear(x0, W, c)
    y1 = None if x1 is None else _times(x1, W)
    y2 = None if x2 is None or not second_order else _times(x2, W)
    if V is not None:
        # [x0, 1] [V_j, e_j]^T for every direction j: one product gives x0 V_j^T + e_j
        directional = V.mT.reshape(batch, *([1] * (x0.ndim - 2)), *V.mT.shape[1:])
        if e is not None:
            x0 = torch.cat([x0, x0.new_ones(*x0.shape[:-1], 1)], dim=-1)
            shift = e.reshape(batch, *([1] * (x0.ndim - 2)), 1, -1)
            directional, e = torch.cat([directional, shift], dim=-2), None
        if y1 is not None and x0.ndim == 2:  # adding into y1: one wide product, (N, in) @ (in, b out)
            wide = x0 @ directional.movedim(0, -2).reshape(x0.shape[-1], -1)
            y1 = y1 + wide.reshape(x0.shape[0], batch, -1).movedim(1, 0)
        else:  # a contiguous (b, N, ..., out) result for the layers that follow
            moved = torch.matmul(x0, directional)
            y1 = moved if y1 is None else y1 + moved
        if x1 is not None and second_order:
            twice = 2.0 * torch.matmul(x1, directional[..., : x1.shape[-1], :])
            y2 = twice if y2 is None else y2 + twice
    if e is not None:
        shift = e.reshape(batch, *([1] * (x0.ndim - 1)), -1)
        y1 = shift.expand(batch, *y0.shape) if y1 is None else y1 + shift
    return y0, y1, y2


def _times(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """The product x W^T for x (b, ..., in) as one matrix product over all leading dimensions.

    A narrowing layer (out < in) is computed as (W x^T)^T, which was twice as fast on CPU for out = 10.
    """
    flat = x.reshape(-1, x.shape[-1])
    product = (W @ flat.mT).mT if W.shape[0] < W.shape[1] else flat @ W.mT
    return product.reshape(*x.shape[:-1], W.shape[0])


def _derivatives(
    layer: nn.Module, x0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(sigma(x0), sigma'(x0), sigma''(x0)) of an elementwise layer (None for ReLU's zero sigma'')."""
    if isinstance(layer, nn.Tanh):
        y0 = torch.tanh(x0)
        first = 1.0 - y0.square()
        return y0, first, -2.0 * y0 * first
    if isinstance(layer, nn.Sigmoid):
        y0 = torch.sigmoid(x0)
        first = y0 * (1.0 - y0)
        return y0, first, first * (1.0 - 2.0 * y0)
    return torch.relu(x0), (x0 > 0).to(x0.dtype), None  # ReLU: sigma'' = 0 (as in autograd)


def _elementwise(layer: nn.Module, x: Coefficients) -> Coefficients:
    x0, x1, x2 = x
    y0, first, second = _derivatives(layer, x0)
    y1 = None if x1 is None else first * x1
    y2 = None if x2 is None else first * x2
    if second is not None and x1 is not None:
        term = second * x1.square()
        y2 = term if y2 is None else y2 + term
    return y0, y1, y2


def _reshape(layer: nn.Module, x: Coefficients) -> Coefficients:
    x0, x1, x2 = x
    y0 = layer(x0)
    return (
        y0,
        None if x1 is None else x1.reshape(x1.shape[0], *y0.shape),
        None if x2 is None else x2.reshape(x2.shape[0], *y0.shape),
    )
