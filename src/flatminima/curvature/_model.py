"""Functional evaluation of an ``nn.Module`` over a fixed dataset, in an explicit train or eval mode.

The Hessian of a network with BatchNorm or dropout depends on the mode: in train mode BatchNorm
normalizes with the statistics of the batch and dropout masks units; in eval mode both are fixed
maps. PyHessian silently forces eval mode. Here the mode is an argument; when it is omitted for a model
whose mode matters, eval mode is used with a :class:`CurvatureWarning`.

The module is deep-copied once and never mutated afterwards: in train mode the copy's BatchNorm
layers stop tracking running statistics (so measuring never changes the user's model), and each
``nn.Dropout`` draws one mask per batch from an explicit generator when the operator is built, so
every Hessian-vector product sees the same loss.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_generator
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

MODES: tuple[str, ...] = ("train", "eval")


class CurvatureWarning(UserWarning):
    """A curvature measurement made a choice on the caller's behalf (e.g. the train/eval mode)."""


def batch_norm_modules(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``model``."""
    return [
        name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]


def dropout_modules(model: nn.Module) -> list[str]:
    """Names of the dropout layers of ``model`` with a positive drop probability."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0
    ]


def resolve_mode(model: nn.Module, mode: str | None) -> str:
    """Return the mode to measure in; warn when it is omitted and BatchNorm or dropout make it matter.

    Raises:
        ConfigurationError: if ``mode`` is not None, "train" or "eval".
    """
    if mode is not None:
        if mode not in MODES:
            raise ConfigurationError(f"mode must be 'train' or 'eval'; got mode={mode!r}.")
        return mode
    layers = batch_norm_modules(model) + dropout_modules(model)
    if layers:
        warnings.warn(
            f"the model has BatchNorm/dropout layers ({', '.join(layers)}), so its Hessian differs "
            "between train and eval mode; measuring in eval mode. Pass mode='eval' or mode='train' "
            "to choose explicitly and silence this warning.",
            CurvatureWarning,
            stacklevel=3,
        )
    return "eval"


@dataclasses.dataclass
class _BatchContext:
    """Which batch the functional model is evaluating (read by fixed-mask dropout layers)."""

    batch: int = 0
    recording: bool = False


class _FixedMaskDropout(nn.Module):
    """Inverted dropout with one mask per batch, drawn once from an explicit generator."""

    def __init__(self, p: float, context: _BatchContext, generator: torch.Generator) -> None:
        super().__init__()
        self.p = p
        self.context = context
        self.generator = generator
        self.masks: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.masks.get(self.context.batch)
        if mask is None:
            if not self.context.recording:  # pragma: no cover - masks are drawn at construction
                raise ConfigurationError("internal: a dropout mask was requested for an unseen batch.")
            keep = torch.rand(x.shape, generator=self.generator, device=self.generator.device) >= self.p
            mask = keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p)
            self.masks[self.context.batch] = mask
        return x * mask


Batch = tuple[Any, torch.Tensor]


def _check_batches(batches: Iterable[Any]) -> tuple[Batch, ...]:
    """Materialize ``batches`` as a tuple of (inputs, targets) pairs and validate them."""
    try:
        listed = list(batches)
    except TypeError as error:
        raise InputTypeError(
            f"batches must be an iterable of (inputs, targets) pairs; got {type(batches).__name__}."
        ) from error
    if not listed:
        raise InputDataError("batches must hold at least one (inputs, targets) pair; got none.")
    checked = []
    for index, batch in enumerate(listed):
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise InputDataError(
                f"batches[{index}] must be a pair (inputs, targets); got {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, tuple | list) else "")
                + "."
            )
        inputs, targets = batch
        if not isinstance(targets, torch.Tensor) or targets.ndim == 0:
            raise InputDataError(
                f"batches[{index}][1] (targets) must be a tensor with a leading batch dimension; "
                f"got {type(targets).__name__}."
            )
        checked.append((inputs, targets))
    return tuple(checked)


class ModelSource:
    """A deep copy of a model prepared for functional calls in one mode, with its dataset and loss.

    The dataset loss is the example-weighted average of the batch losses (``loss_fn`` must average
    over its batch, as ``reduction="mean"`` does), so it equals the mean loss over the whole dataset
    whenever the batch losses do not interact (always in eval mode).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
        batches: Iterable[Any],
        *,
        mode: str,
        generator: torch.Generator | None,
    ) -> None:
        if not callable(loss_fn):
            raise InputTypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
        self.batches = _check_batches(batches)
        self.loss_fn = loss_fn
        self.mode = mode
        self.context = _BatchContext()
        self.model = copy.deepcopy(model)
        self.model.train(mode == "train")
        if mode == "train":
            self._freeze_train_mode(generator)
        self.buffers = {name: b for name, b in self.model.named_buffers()}
        sizes = [int(targets.shape[0]) for _, targets in self.batches]
        self.num_examples = sum(sizes)
        self.weights = tuple(size / self.num_examples for size in sizes)

    def _freeze_train_mode(self, generator: torch.Generator | None) -> None:
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.track_running_stats = False
                module.running_mean = None
                module.running_var = None
                module.num_batches_tracked = None
        names = dropout_modules(self.model)
        if not names:
            return
        if generator is None:
            raise InputTypeError(
                f"mode='train' with dropout layers ({', '.join(names)}) needs generator= "
                "(a torch.Generator) to draw one fixed dropout mask per batch."
            )
        check_generator("generator", generator)
        for name in names:
            module = self.model.get_submodule(name)
            if type(module) is not nn.Dropout:
                raise ConfigurationError(
                    f"mode='train' supports nn.Dropout only; layer {name!r} is "
                    f"{type(module).__name__}. Use mode='eval'."
                )
            parent_name, _, child = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, _FixedMaskDropout(module.p, self.context, generator))

    def forward(self, params: dict[str, torch.Tensor], index: int) -> Any:
        """The model's output on batch ``index`` with the given parameters."""
        inputs, _ = self.batches[index]
        self.context.batch = index
        args = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
        return torch.func.functional_call(self.model, {**params, **self.buffers}, args)

    def loss(self, params: dict[str, torch.Tensor], index: int) -> torch.Tensor:
        """The loss on batch ``index``."""
        return self.loss_fn(self.forward(params, index), self.batches[index][1])

    def record_masks(self, params: dict[str, torch.Tensor]) -> list[torch.Size | None]:
        """Evaluate every batch once so that fixed dropout masks are drawn in a fixed order.

        Returns the shape of the output on each batch (None where the output is not a tensor).
        """
        self.context.recording = True
        shapes: list[torch.Size | None] = []
        try:
            with torch.no_grad():
                for index in range(len(self.batches)):
                    output = self.forward(params, index)
                    shapes.append(output.shape if isinstance(output, torch.Tensor) else None)
        finally:
            self.context.recording = False
        return shapes

    def example_loss(
        self, params: dict[str, torch.Tensor], inputs: Any, target: torch.Tensor
    ) -> torch.Tensor:
        """The loss on one example (inputs and target without their batch dimension)."""
        args = (
            tuple(x.unsqueeze(0) for x in inputs)
            if isinstance(inputs, tuple | list)
            else (inputs.unsqueeze(0),)
        )
        output = torch.func.functional_call(self.model, {**params, **self.buffers}, args)
        return self.loss_fn(output, target.unsqueeze(0))
