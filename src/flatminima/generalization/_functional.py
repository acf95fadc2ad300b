"""Flat parameter vectors of an ``nn.Module`` and functional evaluation at such vectors (private).

The generalization tools move whole weight vectors around (a Gaussian posterior over them, two SGD runs
side by side, per-example Hessians), so they work with the flat concatenation of the trainable
parameters in ``named_parameters`` order and evaluate the model at any such vector with
``torch.func.functional_call``; the model itself is never modified.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from flatminima.errors import InputDataError, InputTypeError
from flatminima.networks.models import parameter_count


@dataclasses.dataclass(frozen=True)
class FlatModel:
    """A model with its trainable parameters laid out as one flat vector.

    Attributes:
        model: the module (evaluated functionally, never modified).
        names: the trainable parameters' names, in order.
        shapes: their shapes.
        point: the flat vector of their current values (detached).
    """

    model: nn.Module
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    point: torch.Tensor

    @classmethod
    def of(cls, model: object, name: str = "model") -> FlatModel:
        """Lay out ``model``'s trainable parameters.

        Raises:
            InputTypeError: if ``model`` is not an ``nn.Module``.
            InputDataError: if it has no trainable parameters, or they mix dtypes or devices.
        """
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"{name} must be a torch.nn.Module; got {type(model).__name__}.")
        try:
            parameter_count(model)
        except InputDataError:
            raise InputDataError(
                f"{name} has no trainable parameters; give a model with at least one."
            ) from None
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        dtypes = {p.dtype for _, p in params}
        devices = {p.device for _, p in params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise InputDataError(
                f"{name} must have one parameter dtype and device; got dtypes {sorted(map(str, dtypes))} "
                f"and devices {sorted(map(str, devices))}."
            )
        if not all(p.is_floating_point() for _, p in params):
            raise InputTypeError(f"{name} must have floating parameters.")
        point = torch.cat([p.detach().reshape(-1) for _, p in params])
        return cls(model, tuple(n for n, _ in params), tuple(p.shape for _, p in params), point)

    @property
    def size(self) -> int:
        """The number of trainable scalars."""
        return int(self.point.numel())

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named parameter tensors of a flat vector (views, so gradients flow)."""
        sizes = [math.prod(shape) for shape in self.shapes]
        parts = flat.split(sizes)
        return {n: part.view(shape) for n, part, shape in zip(self.names, parts, self.shapes, strict=True)}

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x`` with its trainable parameters set to ``flat``."""
        return torch.func.functional_call(self.model, self.unflatten(flat), (x,))

    def same_layout(self, other: FlatModel) -> bool:
        """Whether ``other`` has the same parameter names and shapes."""
        return self.names == other.names and self.shapes == other.shapes
