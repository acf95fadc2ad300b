"""Functional evaluation of an ``nn.Module`` over a streamed dataset, in an explicit train or eval mode.

The Hessian of a network with BatchNorm or dropout depends on the mode: in train mode BatchNorm
normalizes with the statistics of the batch and dropout masks units; in eval mode both are fixed
maps. PyHessian silently forces eval mode. Here the mode is an argument; when it is omitted for a model
whose mode matters, eval mode is used with a :class:`CurvatureWarning`.

The module is deep-copied once and never mutated afterwards: in train mode the copy's BatchNorm
layers stop tracking running statistics (so measuring never changes the user's model), and each
``nn.Dropout`` uses one fixed mask per batch, so every Hessian-vector product sees the same loss.
The data is streamed (:mod:`._data`), never stored, so the masks are not stored either: one seed s is
drawn from the caller's generator when the operator is built, and the mask of the l-th dropout layer
on batch b is drawn from a fresh generator seeded with a hash of (s, b, l); every pass over the data
draws the same masks, and only the current batch's masks are held.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_generator
from flatminima.curvature import _data
from flatminima.curvature._arch import (
    check_train_mode_layers,
    find_random_layer,
    math_attention,
    prepare_copy,
)
from flatminima.curvature._types import LossClosure, Params
from flatminima.errors import ConfigurationError, FlatminimaError, InputDataError, InputTypeError

MODES: tuple[str, ...] = ("train", "eval")
Batch = tuple[Any, torch.Tensor]


class CurvatureWarning(UserWarning):
    """A curvature measurement made a choice on the caller's behalf (e.g. the train/eval mode)."""


def batch_norm_modules(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``model``."""
    return [
        name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]


def use_batch_statistics(model: nn.Module) -> None:
    """Make every BatchNorm layer of ``model`` (a private copy) normalize by its batch's statistics only.

    Train mode without running statistics: the loss at the point is a function of the parameters and
    the batch alone, and no pass over the data moves a buffer.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None
            module.num_batches_tracked = None


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


def mask_seed(seed: int, batch: int, layer: int) -> int:
    """The seed of the mask of dropout layer ``layer`` on batch ``batch``: a 63-bit hash of the three."""
    digest = hashlib.blake2b(f"{seed}:{batch}:{layer}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclasses.dataclass
class DropoutMasks:
    """Fixed inverted-dropout masks, keep ~ Bernoulli(1 - p) / (1 - p), redrawn from (seed, batch, layer).

    ``shapes[layer][batch]`` records the (shape, dtype, device) of the layer's input on each batch
    (from the first pass), so the masks of a batch can be drawn before the batch enters any
    ``torch.func`` transform (random operations are not allowed under ``vmap``).
    """

    seed: int
    device: torch.device
    probabilities: dict[int, float] = dataclasses.field(default_factory=dict)
    shapes: dict[int, dict[int, tuple[torch.Size, torch.dtype, torch.device]]] = dataclasses.field(
        default_factory=dict
    )

    def draw(self, layer: int, batch: int) -> torch.Tensor:
        """The mask of dropout layer ``layer`` on batch ``batch`` (the same at every call)."""
        shape, dtype, device = self.shapes[layer][batch]
        generator = torch.Generator(device=self.device).manual_seed(mask_seed(self.seed, batch, layer))
        uniform = torch.rand(shape, generator=generator, device=self.device, dtype=torch.float32)
        probability = self.probabilities[layer]
        scale = 1.0 / (1.0 - probability) if probability < 1.0 else 0.0  # p = 1 drops every unit
        return (uniform >= probability).to(device=device, dtype=dtype) * scale

    def for_batch(self, batch: int) -> dict[int, torch.Tensor]:
        """Every dropout layer's mask on batch ``batch``, by layer position."""
        return {layer: self.draw(layer, batch) for layer, shapes in self.shapes.items() if batch in shapes}


@dataclasses.dataclass
class _BatchContext:
    """Which batch the functional model evaluates and its dropout masks (read by fixed-mask layers)."""

    batch: int = 0
    recording: bool = False
    masks: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)


class _FixedMaskDropout(nn.Module):
    """Inverted dropout with one fixed mask per batch (see :class:`DropoutMasks`)."""

    def __init__(self, name: str, layer: int, context: _BatchContext, table: DropoutMasks) -> None:
        super().__init__()
        self.name, self.layer, self.context, self.table = name, layer, context, table

    @property
    def masks(self) -> dict[int, torch.Tensor]:
        """The layer's mask on every batch, by batch index, redrawn now (for inspection: it holds all)."""
        return {batch: self.table.draw(self.layer, batch) for batch in self.table.shapes.get(self.layer, {})}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.context.recording:
            if self.layer in self.context.masks:
                raise ConfigurationError(
                    f"mode='train' needs each nn.Dropout to be applied once per forward pass (one fixed "
                    f"mask per batch); layer {self.name!r} is applied more than once. Use one module per use."
                )
            shapes = self.table.shapes.setdefault(self.layer, {})
            shapes[self.context.batch] = (x.shape, x.dtype, x.device)
            self.context.masks[self.layer] = self.table.draw(self.layer, self.context.batch)
        mask = self.context.masks.get(self.layer)
        if mask is None or mask.shape != x.shape:
            raise InputDataError(
                f"batches[{self.context.batch}] reaches dropout layer {self.name!r} with shape "
                f"{tuple(x.shape)}, unlike on the first pass; the batches must be the same at every pass."
            )
        return x * mask


class ModelSource:
    """A deep copy of a model prepared for functional calls in one mode, with its streamed data and loss.

    The dataset loss is the example-weighted average of the batch losses (``loss_fn`` must average
    over its batch, as ``reduction="mean"`` does), so it equals the mean loss over the whole dataset
    whenever the batch losses do not interact (always in eval mode). The batches are re-read at every
    pass (see :mod:`._data`); :meth:`scan` is the first pass, which validates and counts them.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
        batches: Any,
        *,
        mode: str,
        generator: torch.Generator | None,
    ) -> None:
        if not callable(loss_fn):
            raise InputTypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
        _data.check_reduction(loss_fn)
        first = next(iter(model.parameters()), None)
        dtype = first.dtype if first is not None else torch.get_default_dtype()
        device = first.device if first is not None else torch.device("cpu")
        self.batches = _data.BatchStream(batches, dtype=dtype, device=device)
        _data.check_order(batches, mode)
        self.loss_fn = loss_fn
        self.mode = mode
        self.context = _BatchContext()
        self.dropout_masks: DropoutMasks | None = None
        self.model = copy.deepcopy(model)
        prepare_copy(self.model)
        self.model.train(mode == "train")
        if mode == "train":
            check_train_mode_layers(self.model)
            self._freeze_train_mode(generator)
        self.buffers = {name: b for name, b in self.model.named_buffers()}
        self.weights: list[float] = []
        self.num_examples = 0

    def _freeze_train_mode(self, generator: torch.Generator | None) -> None:
        use_batch_statistics(self.model)
        names = dropout_modules(self.model)
        if not names:
            return
        if generator is None:
            raise InputTypeError(
                f"mode='train' with dropout layers ({', '.join(names)}) needs generator= "
                "(a torch.Generator) to draw one fixed dropout mask per batch."
            )
        check_generator("generator", generator)
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        self.dropout_masks = DropoutMasks(seed, generator.device)
        for layer, name in enumerate(names):
            module = self.model.get_submodule(name)
            if type(module) is not nn.Dropout:
                raise ConfigurationError(
                    f"mode='train' supports nn.Dropout only; layer {name!r} is "
                    f"{type(module).__name__}. Use mode='eval'."
                )
            self.dropout_masks.probabilities[layer] = float(module.p)
            parent_name, _, child = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, _FixedMaskDropout(name, layer, self.context, self.dropout_masks))

    # ---- evaluation ------------------------------------------------------------------------------
    def _call(self, params: Params, inputs: Any, index: int, masks: dict[int, torch.Tensor]) -> Any:
        self.context.batch, self.context.masks = index, masks
        args = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
        with math_attention():
            return torch.func.functional_call(self.model, {**params, **self.buffers}, args)

    def _masks(self, index: int) -> dict[int, torch.Tensor]:
        return self.dropout_masks.for_batch(index) if self.dropout_masks is not None else {}

    def batch_loss(self, index: int, inputs: Any, targets: torch.Tensor) -> LossClosure:
        """The loss closure params -> L_b(params) of batch ``index`` (its dropout masks drawn now)."""
        masks = self._masks(index)

        def loss(params: Params) -> torch.Tensor:
            return self.loss_fn(self._call(params, inputs, index, masks), targets)

        return loss

    def terms(self) -> Iterator[tuple[float, LossClosure]]:
        """One pass: (n_b / N, params -> L_b(params)) for every batch b, streamed."""
        for index, inputs, targets in self.batches.stream():
            yield self.weights[index], self.batch_loss(index, inputs, targets)

    def forward(self, params: Params, index: int) -> Any:
        """The model's output on batch ``index`` with the given parameters."""
        inputs, _ = self.batches[index]
        return self.forward_on(params, index, inputs)

    def forward_on(self, params: Params, index: int, inputs: Any) -> Any:
        """The model's output on ``inputs``, the inputs of batch ``index`` (whose dropout masks it uses)."""
        return self._call(params, inputs, index, self._masks(index))

    def loss(self, params: Params, index: int) -> torch.Tensor:
        """The loss on batch ``index``."""
        inputs, targets = self.batches[index]
        return self.batch_loss(index, inputs, targets)(params)

    def example_loss(self, params: Params, inputs: Any, target: torch.Tensor) -> torch.Tensor:
        """The loss on one example (inputs and target without their batch dimension)."""
        args = (
            tuple(x.unsqueeze(0) for x in inputs)
            if isinstance(inputs, tuple | list)
            else (inputs.unsqueeze(0),)
        )
        with math_attention():
            output = torch.func.functional_call(self.model, {**params, **self.buffers}, args)
        return self.loss_fn(output, target.unsqueeze(0))

    # ---- the first pass --------------------------------------------------------------------------
    def scan(self, params: Params) -> Iterator[tuple[int, Any, torch.Tensor, Any]]:
        """The first pass: validate every batch, count the examples and record the dropout shapes.

        Yields (index, inputs, targets, outputs) per batch; when it is exhausted, :attr:`weights` and
        :attr:`num_examples` are set. The loss is checked on every batch (it must be a finite scalar;
        a failure, e.g. targets that do not match the outputs, names the batch), the mean reduction
        on the first batch of two or more examples, and in train mode that the forward pass is
        deterministic on the first batch.

        Raises:
            InputDataError: for a malformed batch, a failing forward pass or loss, or a non-finite or
                non-scalar loss, naming the batch index.
            ConfigurationError: if ``loss_fn`` does not average over its batch, or a layer is random
                in train mode.
        """
        mean_checked = False
        for index, inputs, targets in self.batches.stream():
            outputs = self._record(params, index, inputs)
            value = self._checked_loss(index, outputs, targets)
            if not mean_checked:
                mean_checked = _data.check_mean(self.loss_fn, index, outputs, targets, value)
            if index == 0 and self.mode == "train":
                self._check_deterministic(params, inputs)
            yield index, inputs, targets, outputs
        self.num_examples = self.batches.num_examples
        self.weights = [size / self.num_examples for size in self.batches.sizes]

    def _check_deterministic(self, params: Params, inputs: Any) -> None:
        random = find_random_layer(self.model, lambda: self._record(params, 0, inputs))
        if random is not None:
            raise ConfigurationError(
                f"mode='train' needs the same loss at every pass, but {random} gives different outputs "
                "on the same batch (a random layer, e.g. functional dropout). Use mode='eval'."
            )

    def _record(self, params: Params, index: int, inputs: Any) -> Any:
        self.context.recording = True
        try:
            with torch.no_grad():
                return self._call(params, inputs, index, {})
        except FlatminimaError:
            raise
        except (RuntimeError, ValueError, IndexError) as error:
            raise _data.forward_error(index, inputs, error) from error
        finally:
            self.context.recording = False

    def _checked_loss(self, index: int, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # mse_loss & co. warn, then broadcast, when the target size differs from the input size
                warnings.filterwarnings("error", message=r".*target size.*", category=UserWarning)
                value = self.loss_fn(outputs, targets)
        except FlatminimaError:
            raise
        except (RuntimeError, ValueError, IndexError, UserWarning) as error:
            raise _data.loss_error(index, outputs, targets, error) from error
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputDataError(
                f"loss_fn must return a scalar (0-dim) tensor, the mean over its batch; got {shape} on "
                f"batches[{index}]."
            )
        if not bool(torch.isfinite(value)):
            raise InputDataError(
                f"loss must be finite at the given parameters; got {float(value)} on batches[{index}]."
            )
        return value
