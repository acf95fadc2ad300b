"""Gradient-based and norm-based generalization measures: gradient variance and the path norm.

Gradient variance (Jiang et al. 2020): at the weights w, with per-example gradients g_i = grad l_i(w)
and their mean g = grad L(w) (the full-batch gradient when L is the mean loss),

    Var = (1/N) sum_i ||g_i - g||^2,

computed exactly over the whole dataset with per-example gradients vectorized by
``torch.func.vmap(torch.func.grad(...))``; with ``unit="batch"`` the g_i are the gradients of the
batches, weighted by batch size. It needs the model and its data, i.e. an operator made by
``HessianOperator.from_model``; per-example gradients are only defined in eval mode when the model has
BatchNorm or dropout.

Path norm (Jiang et al. 2020, after Neyshabur et al. 2015): square every parameter, feed the all-ones
input and sum the outputs, sum_i f_{w o w}(1)[i]; for a ReLU network without biases this is the sum over
all input-output paths of the product of the squared weights along the path.

References:
    Y. Jiang, B. Neyshabur, H. Mobahi, D. Krishnan, S. Bengio. Fantastic generalization measures and
    where to find them. ICLR 2020.
    B. Neyshabur, R. Salakhutdinov, N. Srebro. Path-SGD: path-normalized optimization in deep neural
    networks. NeurIPS 2015.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from flatminima.curvature._distributed import all_reduce_sum
from flatminima.curvature._model import batch_norm_modules, dropout_modules
from flatminima.curvature.hessian import HessianOperator
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError


def gradient_variance(operator: HessianOperator, *, unit: str = "example") -> torch.Tensor:
    """(1/N) sum_i ||g_i - g||^2 over the selected parameters, g_i per example (or per batch).

    Args:
        operator: an operator from :meth:`HessianOperator.from_model` (it carries the model and data).
        unit: "example" (per-example gradients, vectorized) or "batch" (per-batch gradients,
            weighted by batch size).

    Returns:
        The variance as a 0-dim tensor in the operator's dtype.

    Raises:
        InputDataError: if the operator was not built from a model and its data.
        ConfigurationError: if ``unit`` is unknown, or per-example gradients are asked for a model with
            BatchNorm or dropout measured in train mode.

    Example:
        >>> net = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([[1.0, 1.0]]))
        >>> H = HessianOperator.from_model(net, torch.nn.functional.mse_loss, [(x, y)], mode="eval")
        >>> float(gradient_variance(H))  # g_1 = (2, 0), g_2 = (0, 2), mean (1, 1)
        2.0

    References:
        Jiang et al. (2020), Section 7 ("variance of gradients").
    """
    source = operator.source
    if source is None:
        raise InputDataError(
            "gradient_variance needs the model and its data; build the operator with "
            "HessianOperator.from_model(model, loss_fn, batches, mode=...)."
        )
    if unit not in ("example", "batch"):
        raise ConfigurationError(f"unit must be 'example' or 'batch'; got unit={unit!r}.")
    _, mean = operator.value_and_grad_at(operator.point)
    params = operator.parameters()
    selected = {name: params[name] for name in operator.names}
    fixed = {name: t for name, t in params.items() if name not in selected}
    total = torch.zeros((), dtype=operator.dtype, device=operator.device)
    if unit == "batch":
        for index, weight in enumerate(source.weights):
            g = torch.func.grad(lambda s, i=index: source.loss({**fixed, **s}, i))(selected)
            total = total + weight * (operator.flatten(g) - mean).square().sum()
        return all_reduce_sum(total.detach(), operator.process_group)
    if source.mode == "train" and (batch_norm_modules(source.model) or dropout_modules(source.model)):
        raise ConfigurationError(
            "per-example gradients are undefined for BatchNorm/dropout in train mode; build the "
            "operator with mode='eval' or use unit='batch'."
        )

    def example_loss(s: dict[str, torch.Tensor], inputs: object, target: torch.Tensor) -> torch.Tensor:
        return source.example_loss({**fixed, **s}, inputs, target)

    per_example = torch.func.vmap(torch.func.grad(example_loss), in_dims=(None, 0, 0))
    for inputs, targets in source.batches:
        grads = per_example(selected, inputs, targets)
        flat = torch.cat([grads[name].reshape(targets.shape[0], -1) for name in operator.names], dim=1)
        total = total + (flat - mean).square().sum()
    # each rank holds a shard of the batches; the weights and N are already global
    return all_reduce_sum(total.detach(), operator.process_group) / source.num_examples


def path_norm(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """Jiang et al.'s path norm: sum of the outputs of the squared-weight network at the all-ones input.

    Every parameter is squared (biases included, as in the reference code); the model is evaluated in
    eval mode on a copy, so the caller's model is untouched.

    Args:
        model: a feed-forward network without BatchNorm (fold BatchNorm into the preceding layer first).
        input_shape: the shape of one input, without the batch dimension (e.g. (784,)).

    Returns:
        The path norm as a 0-dim tensor in the model's dtype.

    Raises:
        InputTypeError: if ``model`` is not an ``nn.Module`` or ``input_shape`` is not a sequence of ints.
        ConfigurationError: if the model has BatchNorm layers.

    Example:
        >>> first, second = torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False)
        >>> net = torch.nn.Sequential(first, torch.nn.ReLU(), second)
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(2.0); _ = net[2].weight.fill_(3.0)
        >>> float(path_norm(net, (2,)))  # 4 paths, each 2^2 * 3^2
        144.0

    References:
        Jiang et al. (2020), eq. (44); Neyshabur, Salakhutdinov, Srebro (2015).
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if not isinstance(input_shape, Sequence) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in input_shape
    ):
        raise InputTypeError(f"input_shape must be a sequence of positive ints; got {input_shape!r}.")
    layers = batch_norm_modules(model)
    if layers:
        raise ConfigurationError(
            f"path_norm needs BatchNorm folded into the preceding layers; the model has {', '.join(layers)}."
        )
    params = dict(model.named_parameters())
    if not params:
        raise InputDataError("path_norm needs a model with parameters; got none.")
    first = next(iter(params.values()))
    evaluated = copy.deepcopy(model).eval()
    squared = {name: p.detach().square() for name, p in params.items()}
    ones = torch.ones((1, *input_shape), dtype=first.dtype, device=first.device)
    with torch.no_grad():
        return torch.func.functional_call(evaluated, squared, (ones,)).sum()
