"""Streaming (inputs, targets) batches: a model's data, re-read at every pass and never stored.

The dataset loss of a model is the example-weighted mean of its batch losses,

    L(w) = sum_b (n_b / N) L_b(w),   N = sum_b n_b,   L_b(w) = loss_fn(model(x_b; w), y_b),

where each L_b is the mean over the n_b examples of batch b, so L is the mean over all N examples.
Every loss value, gradient, Hessian-vector product and quadratic form of L is such a sum, so it needs
one batch at a time: :class:`BatchStream` re-iterates ``batches`` at every pass (a list, a
``torch.utils.data.DataLoader``, or any object whose ``__iter__`` returns a fresh iterator) and
validates each batch as it arrives. The first pass counts the n_b; every later pass must yield the same
number of batches with the same sizes, or the weights n_b / N would be wrong. A one-shot iterator (a
generator object, ``zip(...)``, ``iter(a_list)``) cannot be re-read and is rejected.

The weights are only right when ``loss_fn`` averages over its batch (``reduction="mean"``): a
summing loss would weight batch b by n_b^2 / N. :func:`check_reduction` reads ``reduction`` of torch
loss modules; :func:`check_mean` tests any other callable on the first batch by splitting it into
halves: a mean-reduced, example-separable loss satisfies L(x, y) = (k L_1 + (n - k) L_2) / n.

References:
    Z. Yao, A. Gholami, K. Keutzer, M. Mahoney. PyHessian: Neural Networks Through the Lens of the
    Hessian. IEEE Big Data 2020 (Hessian-vector products accumulated over a data loader).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

Batch = tuple[Any, torch.Tensor]

_MEAN_REDUCTIONS = ("mean", "batchmean")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _shape(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_shape(v) for v in value) + ")"
    return type(value).__name__


def check_batch(index: int, batch: Any, *, dtype: torch.dtype, device: torch.device) -> tuple[Batch, int]:
    """Return ``((inputs, targets), n)`` for batch ``index`` after checking its structure.

    Inputs are a tensor or a tuple/list of tensors (the model's positional arguments) and targets a
    tensor; all share the leading (batch) dimension n. Floating inputs must have the parameters'
    dtype, and every tensor their device.

    Raises:
        InputDataError: naming the batch index, for a malformed batch, mismatched batch sizes, or a
            dtype or device that differs from the parameters'.
    """
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
            f"got {type(targets).__name__}"
            + (" of shape ()" if isinstance(targets, torch.Tensor) else "")
            + "."
        )
    tensors = list(inputs) if isinstance(inputs, tuple | list) else [inputs]
    if not tensors or not all(isinstance(t, torch.Tensor) and t.ndim > 0 for t in tensors):
        kinds = ", ".join(type(t).__name__ for t in tensors) if isinstance(inputs, tuple | list) else ""
        raise InputDataError(
            f"batches[{index}][0] (inputs) must be a tensor or a tuple of tensors, each with a leading "
            f"batch dimension; got {type(inputs).__name__}" + (f" of ({kinds})" if kinds else "") + "."
        )
    size = int(targets.shape[0])
    for position, tensor in enumerate(tensors):
        name = f"batches[{index}][0]" + (f"[{position}]" if isinstance(inputs, tuple | list) else "")
        if int(tensor.shape[0]) != size:
            raise InputDataError(
                f"{name} (inputs) and batches[{index}][1] (targets) must share the leading batch "
                f"dimension; got inputs of shape {tuple(tensor.shape)} and targets of shape "
                f"{tuple(targets.shape)}."
            )
        if tensor.is_floating_point() and tensor.dtype != dtype:
            raise InputDataError(
                f"{name} (inputs) must have the model parameters' dtype {dtype}; got {tensor.dtype} "
                f"(convert the data or the model, e.g. model.to({dtype}))."
            )
    for name, tensor in [(f"batches[{index}][0]", t) for t in tensors] + [(f"batches[{index}][1]", targets)]:
        if tensor.device != device:
            raise InputDataError(
                f"{name} must be on the model parameters' device {device}; got {tensor.device} (have the "
                f"loader yield batches moved with .to({str(device)!r}))."
            )
    return (inputs, targets), size


def check_reduction(loss_fn: Any) -> None:
    """Reject a torch loss module whose ``reduction`` is not a mean over the batch.

    Raises:
        ConfigurationError: if ``loss_fn`` is an ``nn.Module`` whose ``reduction`` is neither "mean"
            nor "batchmean".
    """
    reduction = getattr(loss_fn, "reduction", None)
    if isinstance(loss_fn, nn.Module) and isinstance(reduction, str) and reduction not in _MEAN_REDUCTIONS:
        raise ConfigurationError(
            f"loss_fn must average over its batch (reduction='mean') because the dataset loss is the "
            f"mean over all examples; got {type(loss_fn).__name__}(reduction={reduction!r})."
        )


def check_mean(loss_fn: Any, index: int, outputs: Any, targets: torch.Tensor, value: torch.Tensor) -> bool:
    """Check on batch ``index`` that ``loss_fn`` averages over the batch; False if it cannot tell.

    Splits outputs and targets into halves of k and n - k examples and compares ``value`` (the loss
    on the whole batch) with (k L_1 + (n - k) L_2) / n. Loss modules with a ``reduction`` are checked by
    :func:`check_reduction` instead.

    Raises:
        ConfigurationError: if the whole-batch loss is not the example-weighted mean of the halves'.
    """
    if isinstance(loss_fn, nn.Module) and isinstance(getattr(loss_fn, "reduction", None), str):
        return True
    size = int(targets.shape[0])
    if size < 2 or not isinstance(outputs, torch.Tensor) or outputs.ndim == 0 or outputs.shape[0] != size:
        return False
    half = size // 2
    with torch.no_grad():
        first = loss_fn(outputs[:half], targets[:half])
        second = loss_fn(outputs[half:], targets[half:])
    if not all(isinstance(t, torch.Tensor) and t.ndim == 0 for t in (first, second)):
        return False
    whole, mean = float(value), float((half * first + (size - half) * second) / size)
    tolerance = math.sqrt(torch.finfo(value.dtype).eps) if value.is_floating_point() else 1e-6
    if abs(whole - mean) <= tolerance * max(abs(whole), abs(mean), 1e-30):
        return True
    total = float(first + second)
    summed = abs(whole - total) <= tolerance * max(abs(total), 1e-30)
    raise ConfigurationError(
        f"loss_fn must average over its batch (reduction='mean') because the dataset loss is the mean "
        f"over all examples; on batches[{index}] it gives {whole:.6g} for the whole batch but {mean:.6g} "
        "as the example-weighted mean of its two halves"
        + (f" and {total:.6g} as their sum, as with reduction='sum'." if summed else ".")
    )


def loss_error(index: int, outputs: Any, targets: torch.Tensor, error: BaseException) -> InputDataError:
    """The error for a ``loss_fn`` that fails on batch ``index`` (e.g. targets not matching outputs)."""
    return InputDataError(
        f"loss_fn(outputs, targets) failed on batches[{index}]: the model's outputs have shape "
        f"{_shape(outputs)} and the targets {_shape(targets)}; {_first_line(error)}"
    )


def forward_error(index: int, inputs: Any, error: BaseException) -> InputDataError:
    """The error for a model whose forward pass fails on batch ``index``."""
    return InputDataError(
        f"the model failed on batches[{index}] with inputs of shape {_shape(inputs)}: {_first_line(error)}"
    )


def check_order(batches: Any, mode: str) -> None:
    """In train mode, reject a shuffling ``DataLoader`` (every pass must see the same batches).

    Raises:
        ConfigurationError: if ``mode`` is "train" and ``batches`` samples in random order.
    """
    shuffled = isinstance(getattr(batches, "sampler", None), torch.utils.data.RandomSampler)
    if mode == "train" and isinstance(batches, torch.utils.data.DataLoader) and shuffled:
        raise ConfigurationError(
            "mode='train' needs the same batches at every pass (BatchNorm statistics and dropout "
            "masks are per batch); got a DataLoader with shuffle=True. Use shuffle=False."
        )


class BatchStream:
    """The batches of a dataset, re-iterated and validated at every pass; at most one batch is held.

    Args:
        batches: a re-iterable of (inputs, targets) pairs.
        dtype: the model parameters' dtype (floating inputs must match it).
        device: the model parameters' device (every tensor must be on it).

    Raises:
        InputTypeError: if ``batches`` is not iterable, or is a one-shot iterator.

    Example:
        >>> x, y = torch.zeros(5, 2, dtype=torch.float64), torch.zeros(5)
        >>> stream = BatchStream([(x[:3], y[:3]), (x[3:], y[3:])], dtype=x.dtype, device=x.device)
        >>> [index for index, _, _ in stream.stream()], stream.sizes, stream.num_examples
        ([0, 1], [3, 2], 5)
    """

    def __init__(self, batches: Any, *, dtype: torch.dtype, device: torch.device) -> None:
        if isinstance(batches, Iterator):
            raise InputTypeError(
                "batches must be re-iterable (a list, a DataLoader, or an object whose __iter__ returns "
                "a fresh iterator), because every Hessian-vector product streams over the data again; "
                f"got a one-shot {type(batches).__name__} that is exhausted after one pass."
            )
        if not hasattr(batches, "__iter__"):
            raise InputTypeError(
                f"batches must be an iterable of (inputs, targets) pairs; got {type(batches).__name__}."
            )
        self.batches = batches
        self.dtype, self.device = dtype, device
        self.sizes: list[int] = []
        self.counted = False
        self._cursor: tuple[int, Iterator[tuple[int, Any, torch.Tensor]], Batch] | None = None

    @property
    def num_examples(self) -> int:
        """N, the number of examples (counted on the first pass)."""
        if not self.counted:
            for _ in self.stream():
                pass
        return sum(self.sizes)

    def stream(self) -> Iterator[tuple[int, Any, torch.Tensor]]:
        """One pass: (index, inputs, targets) for every batch, each validated as it arrives.

        Raises:
            InputDataError: if a batch is malformed (see :func:`check_batch`), the data is empty, or a
                later pass differs in its number of batches or their sizes from the first.
        """
        first = not self.counted
        if first:
            self.sizes = []
        count = 0
        for index, batch in enumerate(self.batches):
            (inputs, targets), size = check_batch(index, batch, dtype=self.dtype, device=self.device)
            if first:
                self.sizes.append(size)
            elif index >= len(self.sizes) or size != self.sizes[index]:
                had = f"{self.sizes[index]} examples" if index < len(self.sizes) else "no such batch"
                raise InputDataError(
                    f"batches[{index}] has {size} examples on this pass but {had} on the first; the "
                    "batches must be the same at every pass (e.g. a DataLoader with a fixed batch size)."
                )
            count = index + 1
            yield index, inputs, targets
        if first:
            if not self.sizes:
                raise InputDataError("batches must hold at least one (inputs, targets) pair; got none.")
            self.counted = True
        elif count != len(self.sizes):
            raise InputDataError(
                f"batches yielded {count} batches on this pass but {len(self.sizes)} on the first; they "
                "must be re-iterable and the same at every pass (an IterableDataset must restart)."
            )

    def __iter__(self) -> Iterator[Batch]:
        for _, inputs, targets in self.stream():
            yield inputs, targets

    def __len__(self) -> int:
        if not self.counted:
            self.num_examples  # noqa: B018 - counts the batches
        return len(self.sizes)

    def __getitem__(self, index: int) -> Batch:
        """Batch ``index``, streamed to; consecutive indices continue one pass (one batch is cached)."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} is out of range for {len(self)} batches.")
        cursor = self._cursor
        if cursor is None or cursor[0] > index:
            cursor = (-1, self.stream(), (None, torch.empty(0)))
        position, iterator, batch = cursor
        while position < index:
            position, inputs, targets = next(iterator)
            batch = (inputs, targets)
        self._cursor = (position, iterator, batch)
        return batch
