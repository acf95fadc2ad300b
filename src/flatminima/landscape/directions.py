"""Directions in parameter space for loss-landscape plots: random (filter-normalized) and Hessian.

Parameters are dicts of named tensors (a model's trainable ``named_parameters`` or any mapping).
:func:`random_direction` draws d with i.i.d. N(0, 1) entries from an explicit generator and rescales it:

* ``"filter"`` (Li et al. 2018): for every tensor of dimension >= 2, each filter (slice along the first
  dimension: an output unit of a ``Linear`` layer, an output channel of a convolution) is rescaled to the
  norm of the corresponding weight filter, d_{i,j} <- d_{i,j} ||w_{i,j}|| / ||d_{i,j}||;
* ``"layer"``: each tensor is rescaled to the norm of its weight tensor, d_i <- d_i ||w_i|| / ||d_i||;
* ``"none"``: the Gaussian draw as is.

For ``"filter"`` and ``"layer"``, tensors of dimension <= 1 (biases, BatchNorm) are set to zero
(``one_dim="zero"``, Li et al.'s default "biasbn") or to the weights themselves (``one_dim="copy"``).
Filter normalization removes the scale symmetry of ReLU networks: the slice of a rescaled network
(Dinh et al. 2017) along a filter-normalized direction is the same as that of the original.
:func:`hessian_directions` gives the top eigenvectors of the Hessian (Lanczos, from the curvature API).

References:
    H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein. Visualizing the loss landscape of neural nets.
    NeurIPS 2018, Section 4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from flatminima._checks import check_generator, check_int_in_range
from flatminima.curvature import HessianOperator, lanczos_eigenvalues
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

Params = dict[str, torch.Tensor]
NORMALIZATIONS = ("filter", "layer", "none")


def as_params(model_or_params: nn.Module | Mapping[str, torch.Tensor]) -> Params:
    """Detached copies of a model's trainable parameters (or of a mapping's tensors), by name.

    Raises:
        InputTypeError: if the argument is neither an ``nn.Module`` nor a mapping of floating tensors.
        InputDataError: if there is no parameter.
    """
    if isinstance(model_or_params, nn.Module):
        params = {n: p.detach().clone() for n, p in model_or_params.named_parameters() if p.requires_grad}
        if not params:
            raise InputDataError(
                f"the model ({type(model_or_params).__name__}) has no trainable parameters; a landscape "
                "needs at least one."
            )
        return params
    if not isinstance(model_or_params, Mapping):
        raise InputTypeError(
            "model_or_params must be an nn.Module or a mapping of tensors; "
            f"got {type(model_or_params).__name__}."
        )
    if not model_or_params:
        raise InputDataError("model_or_params must hold at least one tensor; got an empty mapping.")
    out = {}
    for name, tensor in model_or_params.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise InputTypeError(f"model_or_params[{name!r}] must be a floating tensor; got {tensor!r}.")
        out[str(name)] = tensor.detach().clone()
    return out


def _rescaled(d: torch.Tensor, w: torch.Tensor, normalization: str, one_dim: str) -> torch.Tensor:
    if normalization == "none":
        return d
    if w.ndim <= 1:
        return torch.zeros_like(w) if one_dim == "zero" else w.clone()
    if normalization == "layer":
        return d * (torch.linalg.vector_norm(w) / torch.linalg.vector_norm(d))
    D, W = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
    scale = torch.linalg.vector_norm(W, dim=1) / torch.linalg.vector_norm(D, dim=1)
    return (D * scale[:, None]).reshape(d.shape)


def random_direction(
    model_or_params: nn.Module | Mapping[str, torch.Tensor],
    *,
    generator: torch.Generator,
    normalization: str = "filter",
    one_dim: str = "zero",
) -> Params:
    """A Gaussian direction, normalized per filter, per layer or not at all (see the module).

    Args:
        model_or_params: the point w (a model's trainable parameters or a mapping of tensors).
        generator: draws the Gaussian entries, tensor by tensor in parameter order (required).
        normalization: "filter", "layer" or "none".
        one_dim: for "filter"/"layer": "zero" (ignore biases, Li et al.'s default) or "copy" (d = w).

    Returns:
        The direction, a dict with the names, shapes, dtype and device of the parameters.

    Raises:
        InputTypeError: if ``generator`` is missing or the point is not a model or a mapping of tensors.
        InputDataError: if there is no parameter.
        ConfigurationError: for an unknown ``normalization`` or ``one_dim``.

    Example:
        >>> w = {"weight": torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)}
        >>> d = random_direction(w, generator=torch.Generator().manual_seed(0))
        >>> torch.linalg.vector_norm(d["weight"], dim=1).round(decimals=12)  # the filter norms of w
        tensor([5., 1.], dtype=torch.float64)

    References:
        Li et al. (2018), Section 4.
    """
    generator = check_generator("generator", generator)
    if normalization not in NORMALIZATIONS:
        raise ConfigurationError(
            f"normalization must be one of {', '.join(NORMALIZATIONS)}; got normalization={normalization!r}."
        )
    if one_dim not in ("zero", "copy"):
        raise ConfigurationError(f"one_dim must be 'zero' or 'copy'; got one_dim={one_dim!r}.")
    params = as_params(model_or_params)
    out = {}
    for name, w in params.items():
        z = torch.randn(w.shape, generator=generator, device=generator.device, dtype=torch.float64)
        d = z.to(device=w.device, dtype=w.dtype)
        out[name] = _rescaled(d, w, normalization, one_dim)
    return out


def hessian_directions(
    operator: HessianOperator, num_directions: int = 2, *, generator: torch.Generator
) -> list[Params]:
    """The eigenvectors of the ``num_directions`` largest Hessian eigenvalues, as parameter dicts.

    Args:
        operator: the Hessian at the point (e.g. ``HessianOperator.from_model``).
        num_directions: how many (1 <= k <= n).
        generator: draws Lanczos' start vector (required).

    Returns:
        k unit-norm directions (dicts over the operator's selected parameters), largest eigenvalue first.

    Raises:
        InputDataError: if ``num_directions`` is out of range.
        InputTypeError: if ``operator`` is not a HessianOperator or ``generator`` is missing.
    """
    if not isinstance(operator, HessianOperator):
        raise InputTypeError(f"operator must be a HessianOperator; got {type(operator).__name__}.")
    k = check_int_in_range("num_directions", num_directions, low=1, high=operator.size, high_name="n")
    result = lanczos_eigenvalues(operator, k, which="largest", generator=generator)
    return [operator.unflatten(result.eigenvectors[:, j].contiguous()) for j in range(k)]


def direction_norm(direction: Mapping[str, torch.Tensor]) -> float:
    """The Euclidean norm of a direction over all its tensors."""
    return math.sqrt(sum(float(t.pow(2).sum()) for t in direction.values()))
