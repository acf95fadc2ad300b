"""A deterministic minibatch SGD trainer for classifiers, stopping at a target training loss.

Each epoch visits the training set in the order of ``torch.randperm(n, generator=generator)`` in
batches of ``batch_size`` (the last, smaller batch is kept); each step is heavy-ball SGD on the mean
cross-entropy of its batch plus (weight_decay / 2) ||w||^2,

    v <- momentum v + grad,   w <- w - learning_rate v.

After every epoch the full training loss (cross-entropy, without the decay term) is evaluated; training
stops as soon as it is <= ``target_loss`` (Keskar et al. train both batch sizes to the same loss), when it
stops being finite (``diverged``), or after ``max_epochs``. Nothing touches the global RNG, so a run is
reproducible from the generator's seed.

References:
    N. S. Keskar et al. On large-batch training for deep learning: generalization gap and sharp minima.
    ICLR 2017.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.networks.data import Dataset
from flatminima.networks.models import parameter_count


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    """The trained model (a copy; the input model is untouched) and how training went.

    Attributes:
        model: the trained network.
        epochs: epochs run.
        steps: SGD steps taken.
        train_loss: the final full training cross-entropy.
        reached_target: whether ``train_loss <= target_loss`` (False without a target).
        diverged: whether the loss became NaN or infinite.
        history: the full training loss after each epoch.
    """

    model: nn.Module
    epochs: int
    steps: int
    train_loss: float
    reached_target: bool
    diverged: bool
    history: tuple[float, ...]


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy of ``model`` on (x, y), without gradient tracking."""
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y)


def evaluate(model: nn.Module, data: Dataset) -> dict[str, float]:
    """Train/test cross-entropy and 0-1 error, and the generalization gaps (test minus train).

    Returns:
        A dict with train_loss, test_loss, train_error, test_error, gap_loss = test_loss - train_loss and
        gap_error = test_error - train_error (Jiang et al.'s generalization gap).
    """
    out: dict[str, float] = {}
    with torch.no_grad():
        for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
            logits = model(x)
            out[f"{split}_loss"] = float(nn.functional.cross_entropy(logits, y))
            out[f"{split}_error"] = float((logits.argmax(1) != y).double().mean())
    out["gap_loss"] = out["test_loss"] - out["train_loss"]
    out["gap_error"] = out["test_error"] - out["train_error"]
    return out


def train_classifier(
    model: nn.Module,
    data: Dataset,
    *,
    learning_rate: float,
    batch_size: int,
    generator: torch.Generator,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    target_loss: float | None = None,
    max_epochs: int = 500,
    callback: Callable[[int, float], None] | None = None,
) -> TrainingResult:
    """Train a copy of ``model`` on ``data`` by minibatch SGD (see the module).

    Args:
        model: the network (copied; never modified).
        data: the training data (``x_train``, ``y_train``) in the model's dtype.
        learning_rate: the step size (> 0).
        batch_size: examples per step, 1 <= batch_size <= the number of training examples.
        generator: draws the batch order of every epoch (required).
        weight_decay: the l2 coefficient (>= 0).
        momentum: heavy-ball momentum in [0, 1).
        target_loss: stop once the full training loss is <= this (> 0), or None to run max_epochs.
        max_epochs: at most this many epochs (>= 1).
        callback: called as ``callback(epoch, train_loss)`` after each epoch (progress bars).

    Returns:
        A :class:`TrainingResult`.

    Raises:
        InputTypeError: if ``generator`` is missing or ``model`` is not an ``nn.Module``.
        InputDataError: for hyperparameters out of range (e.g. a batch larger than the data set) or a
            model without trainable parameters.

    Example:
        >>> from flatminima.networks.data import xor_split
        >>> from flatminima.networks.models import mlp
        >>> g = torch.Generator().manual_seed(0)
        >>> data = xor_split(64, 16, generator=g)
        >>> net = mlp(2, [16], 2, generator=g)
        >>> result = train_classifier(net, data, learning_rate=0.5, batch_size=16, generator=g, max_epochs=5)
        >>> result.epochs, result.steps
        (5, 20)
    """
    generator = check_generator("generator", generator)
    parameter_count(model)
    n = data.num_train
    lr = check_real("learning_rate", learning_rate, low=0.0, low_open=True)
    check_int_in_range(
        "batch_size", batch_size, low=1, high=n, high_name=f"the number of training examples {n}"
    )
    decay = check_real("weight_decay", weight_decay, low=0.0)
    beta = check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    if target_loss is not None:
        check_real("target_loss", target_loss, low=0.0, low_open=True)
    check_int_in_range("max_epochs", max_epochs, low=1)
    net = copy.deepcopy(model).train()
    params = [p for p in net.parameters() if p.requires_grad]
    velocity = [torch.zeros_like(p) for p in params]
    history: list[float] = []
    steps, diverged, reached = 0, False, False
    loss = float(cross_entropy(net, data.x_train, data.y_train))
    for _ in range(max_epochs):
        order = torch.randperm(n, generator=generator, device=generator.device).cpu()
        for batch in order.split(batch_size):
            objective = nn.functional.cross_entropy(net(data.x_train[batch]), data.y_train[batch])
            grads = torch.autograd.grad(objective, params)
            with torch.no_grad():
                for p, g, v in zip(params, grads, velocity, strict=True):
                    g = g + decay * p if decay else g
                    v.mul_(beta).add_(g)
                    p.sub_(lr * v)
            steps += 1
        loss = float(cross_entropy(net, data.x_train, data.y_train))
        history.append(loss)
        if callback is not None:
            callback(len(history), loss)
        if not math.isfinite(loss):
            diverged = True
            break
        if target_loss is not None and loss <= target_loss:
            reached = True
            break
    return TrainingResult(net.eval(), len(history), steps, loss, reached, diverged, tuple(history))
