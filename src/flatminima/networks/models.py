"""Small ReLU MLPs with an explicit initialization stream, and Dinh et al.'s layer rescaling.

:func:`mlp` builds ``Linear -> ReLU -> ... -> Linear`` with every weight and bias drawn from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default ``nn.Linear`` law) from the given generator;
the layers are created with ``torch.nn.utils.skip_init``, so the global RNG is never touched.

:func:`rescale_layers` applies the non-negative homogeneity of ReLU: for alpha > 0,
relu(alpha z) = alpha relu(z), so replacing (W_l, b_l) by (alpha W_l, alpha b_l) and W_{l+1} by
W_{l+1} / alpha leaves the function unchanged, while the Hessian becomes T^{-1} H T^{-1} with
T = diag(alpha on layer l, 1/alpha on layer l+1, 1 elsewhere): tr H_ll / alpha^2 + tr H_{l+1,l+1} alpha^2
+ (the rest), and by Ostrowski's theorem every eigenvalue moves by a factor in
[min(alpha^2, alpha^-2), max(alpha^2, alpha^-2)].

References:
    L. Dinh, R. Pascanu, S. Bengio, Y. Bengio. Sharp minima can generalize for deep nets. ICML 2017.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import torch
from torch import nn

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.errors import InputDataError, InputTypeError


def mlp(
    input_dim: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> nn.Sequential:
    """A ReLU MLP ``input_dim -> hidden[0] -> ... -> num_classes`` initialized from ``generator``.

    Args:
        input_dim: the number of input features (>= 1).
        hidden: the hidden widths (each >= 1); empty for a linear model.
        num_classes: the number of outputs (>= 1).
        generator: draws every weight and bias (required).
        dtype: the parameters' floating dtype.

    Raises:
        InputTypeError: if ``generator`` is missing or a width is not an integer.
        InputDataError: if a width is < 1.

    Example:
        >>> net = mlp(4, [3], 2, generator=torch.Generator().manual_seed(0))
        >>> [tuple(p.shape) for p in net.parameters()]
        [(3, 4), (3,), (2, 3), (2,)]
    """
    generator = check_generator("generator", generator)
    check_int_in_range("input_dim", input_dim, low=1)
    check_int_in_range("num_classes", num_classes, low=1)
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
        raise InputTypeError(f"hidden must be a sequence of widths; got {hidden!r}.")
    widths = [check_int_in_range(f"hidden[{i}]", w, low=1) for i, w in enumerate(hidden)]
    sizes = [input_dim, *widths, num_classes]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layer = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out, dtype=dtype)
        bound = fan_in**-0.5
        with torch.no_grad():
            for p in (layer.weight, layer.bias):
                u = torch.rand(p.shape, generator=generator, device=generator.device, dtype=torch.float64)
                p.copy_(((2.0 * u - 1.0) * bound).to(dtype))
        layers.append(layer)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` modules of ``model`` in order."""
    return [module for module in model.modules() if isinstance(module, nn.Linear)]


def rescale_layers(model: nn.Module, layer: int, alpha: float) -> nn.Module:
    """A copy of a ReLU MLP with layer ``layer`` scaled by alpha and layer ``layer + 1`` by 1/alpha.

    The weight and bias of the ``layer``-th ``nn.Linear`` are multiplied by alpha and the weight of the
    next one divided by alpha (its bias is untouched); the function is unchanged when the layers are
    separated by a positively homogeneous activation (ReLU), see the module.

    Args:
        model: a network whose ``nn.Linear`` layers ``layer`` and ``layer + 1`` are consecutive.
        layer: the index of the first layer among the ``nn.Linear`` modules (0-based).
        alpha: the factor (> 0).

    Raises:
        InputTypeError: if ``model`` is not an ``nn.Module``.
        InputDataError: if alpha <= 0 or the model has no Linear layers ``layer`` and ``layer + 1``.

    Example:
        >>> net = mlp(3, [4], 2, generator=torch.Generator().manual_seed(0))
        >>> x = torch.ones(1, 3, dtype=torch.float64)
        >>> bool(torch.allclose(rescale_layers(net, 0, 10.0)(x), net(x), rtol=0, atol=1e-12))
        True

    References:
        Dinh et al. (2017), Section 4 (alpha-scale transformation).
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    a = check_real("alpha", alpha, low=0.0, low_open=True)
    count = len(linear_layers(model))
    if count < 2:
        raise InputDataError(f"rescale_layers needs at least two nn.Linear layers; the model has {count}.")
    check_int_in_range("layer", layer, low=0, high=count - 2, high_name="(number of Linear layers - 2)")
    out = copy.deepcopy(model)
    first, second = linear_layers(out)[layer : layer + 2]
    with torch.no_grad():
        first.weight.mul_(a)
        if first.bias is not None:
            first.bias.mul_(a)
        second.weight.div_(a)
    return out


def parameter_count(model: nn.Module) -> int:
    """The number of trainable scalars of ``model``.

    Raises:
        InputTypeError: if ``model`` is not an ``nn.Module``.
        InputDataError: if it has no trainable parameter.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if count == 0:
        raise InputDataError("the model has no trainable parameters; give a model with at least one.")
    return count
