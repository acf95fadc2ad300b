"""VC-dimension bounds of piecewise-linear networks, from their weight, layer and unit counts.

The counts are read from an ``nn.Sequential`` chain (nested ``nn.Sequential`` containers are flattened;
subclasses, whose ``forward`` may differ, are not) of affine layers (``nn.Linear``, ``nn.Conv1d``,
``nn.Conv2d``, ``nn.Conv3d``), piecewise-linear activations (``nn.ReLU`` and ``nn.LeakyReLU``: 2 pieces;
``nn.Hardtanh`` and ``nn.ReLU6``: 3) and layers that only reshape or are the identity in eval mode
(``nn.Flatten``, ``nn.Unflatten``, ``nn.Identity``, ``nn.Dropout``, ``nn.Dropout1d/2d/3d``); anything
else (BatchNorm, tanh, pooling, residual blocks, attention) is an error naming the layer:

    W    the number of parameters (all of them: counting a frozen one as free only loosens the bounds),
    L    the number of affine layers along the chain (the depth of the computation graph in
         parametrized layers); layer L is the output layer, which must not be followed by an activation,
    k_i  the units of affine layer i: its output entries per example (out_features, or out_channels
         times the output positions of a convolution), read from one forward pass of a zero input,
    U    the non-linear units: the k_i of the layers followed by an activation,
    p+1  the most pieces of a hidden unit's activation (p >= 1); consecutive activations compose, their
         breakpoints adding up. Activations before the first affine layer transform the input and are
         not units.

Bartlett, Harvey, Liaw and Mehrabian (2019), Theorem 6 (the refined upper bound of the JMLR version),
for activations with p+1 pieces of degree d, here d = 1: with W_i the parameters of layers 1..i
(cumulative, as the theorem prescribes for d >= 1), the effective depth Lbar = (1/W) sum_i W_i <= L and
R = sum_i k_i (1 + (i - 1) d^(i-1)) = sum_i i k_i,

    VCdim(sgn F) <= L + Lbar W log2(4 e p R log2(2 e p R)) = O(Lbar W log(p U)), at most O(W L log W).

(:func:`bartlett2019_vc_bound`). Its last step, from the growth-function bound 2^L (2 e m p R /
(Lbar W))^(Lbar W) to the VC dimension, needs r = 2 e p R >= 16; for the smallest networks r is raised to
16, which only loosens the bound.

Harvey, Liaw and Mehrabian (2017) prove VCdim = Theta(W U) for piecewise-linear networks with U
non-linear units; the bound is stated as an order, without an explicit constant, so
:func:`harvey2017_vc_bound` reports the rate W max(U, 1) (without non-linear units the network is a
linear classifier, whose VC dimension is at most W). Comparisons between networks are what it is for.

Both bound the VC dimension of the sign of one real output. For a network with several outputs every
output unit and all W parameters are counted, an upper bound for the sign of each output.

References:
    P. L. Bartlett, N. Harvey, C. Liaw, A. Mehrabian. Nearly-tight VC-dimension and pseudodimension
    bounds for piecewise linear neural networks. JMLR 20(63), 1-17, 2019 (arXiv:1703.02930).
    N. Harvey, C. Liaw, A. Mehrabian. Nearly-tight VC-dimension bounds for piecewise linear neural
    networks. COLT 2017, PMLR 65:1064-1068.
    Y. Jiang, B. Neyshabur, H. Mobahi, D. Krishnan, S. Bengio. Fantastic generalization measures and
    where to find them. ICLR 2020 (VC dimension among the measures).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flatminima.curvature.hessian import HessianOperator
from flatminima.curvature.measure_table import MeasureValue
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

_AFFINE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: pieces of each piecewise-linear activation (ReLU6 is a Hardtanh).
_PIECES: tuple[tuple[type[nn.Module], int], ...] = ((nn.ReLU, 2), (nn.LeakyReLU, 2), (nn.Hardtanh, 3))
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)
_SUPPORTED = (
    "nn.Sequential chains of Linear/Conv1d/Conv2d/Conv3d layers, ReLU/LeakyReLU/Hardtanh/ReLU6 "
    "activations, Flatten, Unflatten, Identity and Dropout"
)


@dataclasses.dataclass(frozen=True)
class NetworkCounts:
    """The counts of a piecewise-linear network that its VC-dimension bounds need.

    Attributes:
        num_parameters: W.
        num_layers: L, the affine layers along the chain.
        num_units: U, the non-linear units (units of the layers followed by an activation).
        units_per_layer: k_1, ..., k_L.
        parameters_per_layer: the parameters of each affine layer.
        nonlinear_layers: whether each affine layer is followed by an activation.
        pieces: p + 1, the most pieces of a hidden unit's activation (at least 2).
    """

    num_parameters: int
    num_layers: int
    num_units: int
    units_per_layer: tuple[int, ...]
    parameters_per_layer: tuple[int, ...]
    nonlinear_layers: tuple[bool, ...]
    pieces: int

    @property
    def effective_depth(self) -> float:
        """Lbar = (1/W) sum_i W_i, W_i the parameters of layers 1..i (d = 1)."""
        cumulative = sum(sum(self.parameters_per_layer[: i + 1]) for i in range(self.num_layers))
        return cumulative / self.num_parameters


def network_counts(model: nn.Module, input_shape: Sequence[int]) -> NetworkCounts:
    """W, L, U and the units per layer of a piecewise-linear ``nn.Sequential`` network (see the module).

    Args:
        model: the network (evaluated on a copy in eval mode; the caller's model is untouched).
        input_shape: the shape of one input, without the batch dimension (e.g. (784,)).

    Returns:
        NetworkCounts(num_parameters, num_layers, num_units, units_per_layer, parameters_per_layer,
        nonlinear_layers, pieces).

    Raises:
        InputTypeError: if ``model`` is not an ``nn.Module`` or ``input_shape`` not a sequence of ints.
        ConfigurationError: naming the layer, for an architecture the counts cannot read (a layer
            other than those listed in the module, a non-Sequential container, no affine layer, or an
            activation after the output layer).
        InputDataError: if the model fails on a zero input of ``input_shape``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        >>> counts = network_counts(net, (4,))
        >>> counts.num_parameters, counts.num_layers, counts.num_units, counts.units_per_layer
        (43, 2, 5, (5, 3))
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if not isinstance(input_shape, Sequence) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in input_shape
    ):
        raise InputTypeError(f"input_shape must be a sequence of positive ints; got {input_shape!r}.")
    leaves = _chain(model, "")
    affine = [name for name, module in leaves if isinstance(module, _AFFINE)]
    if not affine:
        raise ConfigurationError(
            f"the VC-dimension counts need at least one affine layer; they read {_SUPPORTED}."
        )
    nonlinear = [False] * len(affine)
    breakpoints = [0] * len(affine)
    layer = -1
    for name, module in leaves:
        if isinstance(module, _AFFINE):
            layer += 1
            continue
        pieces = next((count for kind, count in _PIECES if isinstance(module, kind)), None)
        if pieces is None or layer < 0:
            continue  # a pass-through layer, or an activation of the input (not a unit)
        if layer == len(affine) - 1:
            raise ConfigurationError(
                f"the VC-dimension bounds count the sign of a linear output unit; the output layer "
                f"{affine[-1]!r} is followed by layer {name!r} ({type(module).__name__})."
            )
        nonlinear[layer] = True
        breakpoints[layer] += pieces - 1
    units = _units(model, affine, input_shape)
    modules = dict(model.named_modules())
    per_layer = tuple(sum(p.numel() for p in modules[name].parameters()) for name in affine)
    return NetworkCounts(
        num_parameters=sum(p.numel() for p in model.parameters()),
        num_layers=len(affine),
        num_units=sum(k for k, flag in zip(units, nonlinear, strict=True) if flag),
        units_per_layer=units,
        parameters_per_layer=per_layer,
        nonlinear_layers=tuple(nonlinear),
        pieces=1 + max(1, *breakpoints),
    )


def bartlett2019_vc_bound(counts: NetworkCounts) -> float:
    """Bartlett et al.'s (2019) Theorem 6 with d = 1: L + Lbar W log2(2 r log2 r), r = max(2 e p R, 16).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        >>> round(bartlett2019_vc_bound(network_counts(net, (4,))), 3)  # L=2, Lbar W=25+43, R=5+2*3
        645.509
    """
    p = counts.pieces - 1
    R = sum(i * k for i, k in enumerate(counts.units_per_layer, start=1))
    r = max(2.0 * math.e * p * R, 16.0)
    return counts.num_layers + counts.effective_depth * counts.num_parameters * math.log2(
        2.0 * r * math.log2(r)
    )


def harvey2017_vc_bound(counts: NetworkCounts) -> float:
    """Harvey et al.'s (2017) Theta(W U) rate: W max(U, 1), without the unstated constant.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        >>> harvey2017_vc_bound(network_counts(net, (4,)))  # W = 43, U = 5
        215.0
    """
    return float(counts.num_parameters * max(counts.num_units, 1))


def model_input_shape(op: HessianOperator, options: Mapping[str, Any], name: str) -> tuple[int, ...]:
    """The input shape for a whole-model measure: the option, else the first batch's; raise without a model.

    Raises:
        InputDataError: naming the measure ``name``, if the operator has no model, or no option
            ``input_shape`` is given and the model's inputs are not a single tensor.
    """
    if op.source is None:
        raise InputDataError(f"{name} needs a model; build the operator with HessianOperator.from_model.")
    if "input_shape" in options:
        return options["input_shape"]
    inputs = op.source.batches[0][0]
    if not isinstance(inputs, torch.Tensor):
        raise InputDataError(f"{name} needs models with a single input tensor, or the option input_shape.")
    return tuple(int(s) for s in inputs.shape[1:])


def check_countable(op: HessianOperator, options: Mapping[str, Any], name: str) -> None:
    """Raise the error the VC measure ``name`` would meet on ``op``, before any work."""
    shape = model_input_shape(op, options, name)  # raises first without a model
    network_counts(op.source.model, shape)  # type: ignore[union-attr]


def vc_bartlett2019_measure(
    op: HessianOperator, *, generator: Any, cache: dict, **options: Any
) -> MeasureValue:
    """Registry function of ``vc_bartlett2019`` (deterministic: stderr NaN)."""
    shape = model_input_shape(op, options, "vc_bartlett2019")
    counts = network_counts(op.source.model, shape)  # type: ignore[union-attr]
    return MeasureValue(bartlett2019_vc_bound(counts))


def vc_harvey2017_measure(
    op: HessianOperator, *, generator: Any, cache: dict, **options: Any
) -> MeasureValue:
    """Registry function of ``vc_harvey2017`` (deterministic: stderr NaN)."""
    shape = model_input_shape(op, options, "vc_harvey2017")
    counts = network_counts(op.source.model, shape)  # type: ignore[union-attr]
    return MeasureValue(harvey2017_vc_bound(counts))


def _chain(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """The leaves of a (nested) nn.Sequential in call order; raise for anything the counts cannot read."""
    if type(module) is nn.Sequential:
        leaves = []
        for child_name, child in module.named_children():
            leaves.extend(_chain(child, f"{prefix}.{child_name}" if prefix else child_name))
        return leaves
    if isinstance(module, _AFFINE + _PASS_THROUGH + tuple(kind for kind, _ in _PIECES)):
        return [(prefix, module)]
    where = f"layer {prefix!r}" if prefix else "the model"
    raise ConfigurationError(
        f"the VC-dimension counts read {_SUPPORTED}; {where} is a {type(module).__name__}."
    )


def _units(model: nn.Module, affine: list[str], input_shape: Sequence[int]) -> tuple[int, ...]:
    """Output entries per example of each affine layer, from one forward pass of a zero input (eval mode)."""
    evaluated = copy.deepcopy(model).eval()
    modules = dict(evaluated.named_modules())
    found: dict[str, int] = {}
    handles = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: found.__setitem__(name, math.prod(out.shape[1:]))
        )
        for name in affine
    ]
    first = next(iter(model.parameters()))
    try:
        with torch.no_grad():
            evaluated(torch.zeros((1, *input_shape), dtype=first.dtype, device=first.device))
    except Exception as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise InputDataError(
            f"the model fails on a zero input of shape {tuple(input_shape)}: {reason}"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    return tuple(found[name] for name in affine)
