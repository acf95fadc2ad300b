"""Which parameters a Hessian operator differentiates, and how they map to flat vectors.

A point w is a dict of named tensors. Its *variables* are the names that require grad; a *selection*
is a subset of them, in the variables' order. A flat vector of the selection concatenates each selected
tensor, flattened, in that order, so the operator restricted to the selection is the diagonal block
H_gg of the Hessian with the other parameters held fixed. Blocks of k vectors are (n, k) matrices
whose columns are flat vectors.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from flatminima.curvature._types import Params
from flatminima.curvature.linear_operator import LinearOperator
from flatminima.errors import InputDataError, InputTypeError


@dataclass(frozen=True)
class ParameterLayout:
    """The point, its variables and the selected names, with flattening in selection order.

    Args:
        point: every parameter at the point, by name (detached tensors of one dtype and device).
        variables: the names that are variables (require grad), in order.
        names: the selected variables, in the variables' order.
    """

    point: Params
    variables: tuple[str, ...]
    names: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]] = field(init=False)
    numels: list[int] = field(init=False)

    def __post_init__(self) -> None:
        shapes = {name: tuple(self.point[name].shape) for name in self.names}
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "numels", [math.prod(shapes[name]) for name in self.names])

    @property
    def size(self) -> int:
        """n, the number of selected scalar parameters."""
        return sum(self.numels)

    # ---- flat vectors ------------------------------------------------------------------------------
    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate the selected entries of ``params`` into a flat (n,) vector."""
        return torch.cat([params[name].reshape(-1) for name in self.names])

    def flatten_batched(self, params: Mapping[str, torch.Tensor], batch: int) -> torch.Tensor:
        """Concatenate a batch of selected tensors, each (batch, *shape), into a (batch, n) matrix."""
        return torch.cat([params[name].reshape(batch, -1) for name in self.names], dim=1)

    def unflatten(self, vector: torch.Tensor) -> Params:
        """Split the last axis of (..., n) into the selected shapes, each (..., *shape); unchecked."""
        pieces = vector.split(self.numels, dim=-1)
        lead = tuple(vector.shape[:-1])
        return {
            name: piece.reshape(*lead, *self.shapes[name])
            for name, piece in zip(self.names, pieces, strict=True)
        }

    def with_selected(self, selected: Params) -> Params:
        """The point with the selected entries replaced by ``selected``."""
        return {**self.point, **selected}

    def all_variables(self, tangents: Params, lead: tuple[int, ...] = ()) -> Params:
        """Tangents of every variable: ``tangents`` on the selection, zeros elsewhere (held fixed)."""
        full = {}
        for name in self.variables:
            fixed = self.point[name]
            full[name] = tangents[name] if name in tangents else fixed.new_zeros(*lead, *fixed.shape)
        return full

    # ---- parameter groups ------------------------------------------------------------------------
    def selection(self, selectors: tuple[str | int, ...]) -> tuple[str, ...]:
        """The variables matching any selector (name, glob pattern or position), in order.

        Raises:
            InputDataError: if no selector is given, a selector matches nothing (naming a frozen
                parameter when it matches one), or an index is out of range.
            InputTypeError: if a selector is neither a string nor an integer.
        """
        if not selectors:
            raise InputDataError("select needs at least one parameter name, pattern or index.")
        chosen: set[str] = set()
        for selector in selectors:
            chosen.update(self._match(selector))
        return tuple(name for name in self.variables if name in chosen)

    def _match(self, selector: str | int) -> list[str]:
        listing = ", ".join(self.variables)
        if isinstance(selector, int) and not isinstance(selector, bool):
            if not -len(self.variables) <= selector < len(self.variables):
                raise InputDataError(
                    f"parameter index {selector} is out of range for {len(self.variables)} "
                    f"parameters ({listing})."
                )
            return [self.variables[selector]]
        if not isinstance(selector, str):
            raise InputTypeError(f"selectors must be names, glob patterns or integers; got {selector!r}.")
        matched = [name for name in self.variables if fnmatch.fnmatchcase(name, selector)]
        if not matched:
            frozen = [n for n in self.point if n not in self.variables and fnmatch.fnmatchcase(n, selector)]
            if frozen:
                raise InputDataError(
                    f"parameter {', '.join(map(repr, frozen))} does not require grad, so it is held "
                    "fixed and has no Hessian block; call requires_grad_(True) on it to measure it."
                )
            raise InputDataError(f"no parameter matches {selector!r}; parameters are: {listing}.")
        return matched

    def groups(self, level: str) -> dict[str, tuple[str, ...]]:
        """One group per selected tensor ("parameter") or per module prefix before the last "." ("module")."""
        if level == "parameter":
            return {name: (name,) for name in self.names}
        if level == "module":
            grouped: dict[str, list[str]] = {}
            for name in self.names:
                grouped.setdefault(name.rpartition(".")[0] or name, []).append(name)
            return {key: tuple(value) for key, value in grouped.items()}
        raise InputDataError(f"level must be 'parameter' or 'module'; got level={level!r}.")

    def block_scale(self, defaults: Mapping[str, float], block_weights: Mapping[str, float]) -> torch.Tensor:
        """The scale s with s_i^2 = the weight of the block holding coordinate i, shape (n,).

        A block's weight is ``block_weights[name]``, else ``defaults[name]``, else 1 / rows for a
        block of shape (rows, ...).

        Raises:
            InputDataError: if a weight is negative or ``block_weights`` names an unselected parameter.
        """
        unknown = sorted(set(block_weights) - set(self.names))
        if unknown:
            raise InputDataError(
                f"block_weights names unselected parameters {unknown}; selected: {self.names}."
            )
        weights = {**defaults, **block_weights}
        first = self.point[self.names[0]]
        pieces = []
        for name, numel in zip(self.names, self.numels, strict=True):
            shape = self.shapes[name]
            weight = float(weights.get(name, 1.0 / shape[0] if shape else 1.0))
            if not weight >= 0.0:
                raise InputDataError(f"block_weights[{name!r}] must be >= 0; got {weight}.")
            pieces.append(torch.full((numel,), math.sqrt(weight), dtype=first.dtype, device=first.device))
        return torch.cat(pieces)


class LayoutOperator(LinearOperator):
    """A linear operator on (a selection of) named parameters: its structure read from a ParameterLayout.

    The shared base of ``HessianOperator`` and the output-curvature operators (GGN, Fisher): subclasses
    set ``_layout`` (the parameters, their point and the selection), ``_dtype`` and ``_device``; vectors
    are the selected parameters, each flattened, concatenated in parameter order.
    """

    _layout: ParameterLayout
    _dtype: torch.dtype
    _device: torch.device

    @property
    def names(self) -> tuple[str, ...]:
        """The selected parameter names, in order."""
        return self._layout.names

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The selected parameters' shapes, by name."""
        return self._layout.shapes

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Every selectable parameter name, in order (the selection is :attr:`names`)."""
        return self._layout.variables

    @property
    def size(self) -> int:
        """n, the number of selected scalar parameters."""
        return self._layout.size

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The parameters' device."""
        return self._device

    @property
    def point(self) -> torch.Tensor:
        """The selected parameters at the point, flattened, shape (n,)."""
        return self._layout.flatten(self._layout.point)

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat (n,) vector into the selected parameters' shapes."""
        self._check_vectors("vector", vector, ndim=1)
        return self._layout.unflatten(vector)
