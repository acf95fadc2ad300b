"""The model as a function of its parameters and the loss in output space, for the curvature matrices.

Every curvature matrix of :mod:`flatminima.curvature.curvature_matrices` has the form

    C = sum_b J_b^T M_b J_b,

J_b the Jacobian of the model's outputs on batch b with respect to the parameters and M_b / N a
positive semi-definite matrix on that batch's outputs, block-diagonal over its examples. This module
evaluates the model functionally (:class:`ModelFunction`) and builds the output-space matrices M_b
(:class:`SoftmaxHessian`, :class:`ScaledIdentity`, :class:`OuterProducts`) for the two supported
mean-reduced losses, with per-example loss l_n(f) on the output f_n of example n:

* cross-entropy on logits f in R^C with class targets: l_n = -log softmax(f)_{y_n}, gradient
  p_n - e_{y_n} and Hessian diag(p_n) - p_n p_n^T, p_n = softmax(f_n);
* squared error on outputs with D entries: l_n = (1/D) ||f_n - y_n||^2 (``mse_loss`` averages over every
  entry), gradient (2/D) (f_n - y_n) and Hessian (2/D) I.

The dataset loss is (1/N) sum_n l_n; the matrices here are per example, and the operators divide by N.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import RandomSampler

from flatminima._checks import check_generator, check_int_in_range
from flatminima.curvature import taylor
from flatminima.curvature._distributed import combine_shards
from flatminima.curvature._model import dropout_modules, resolve_mode, use_batch_statistics
from flatminima.curvature._types import Params
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

Batch = tuple[Any, torch.Tensor]


def loss_kind_of(loss_fn: Any, curvature: str) -> str:
    """The kind, "cross_entropy" or "mse", of a supported mean-reduced loss; raise for any other loss.

    Raises:
        InputTypeError: if ``loss_fn`` is not callable.
        ConfigurationError: if it is not F.cross_entropy / F.mse_loss or nn.CrossEntropyLoss() /
            nn.MSELoss() at their defaults (reduction="mean", no class weights or label smoothing).
    """
    if not callable(loss_fn):
        raise InputTypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
    kind = taylor.loss_kind(loss_fn)
    if kind is None:
        raise ConfigurationError(
            f"curvature={curvature!r} needs loss_fn to be torch.nn.functional.cross_entropy or mse_loss, "
            "or nn.CrossEntropyLoss() or nn.MSELoss() at their defaults (reduction='mean', no class weights "
            f"or label smoothing); got loss_fn={loss_fn!r}. Use curvature='hessian' for any other loss."
        )
    return kind


def _check_batch(index: int, batch: Any, device: torch.device) -> Batch:
    """(inputs, targets) of batch ``index``: tensor targets with a batch axis, tensors on ``device``."""
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise InputDataError(
            f"batches[{index}] must be a pair (inputs, targets); got {type(batch).__name__}."
        )
    inputs, targets = batch
    if not isinstance(targets, torch.Tensor) or targets.ndim == 0:
        raise InputDataError(
            f"batches[{index}][1] (targets) must be a tensor with a leading batch dimension; "
            f"got {type(targets).__name__}."
        )
    tensors = [*inputs] if isinstance(inputs, tuple | list) else [inputs]
    for tensor in [*tensors, targets]:
        if isinstance(tensor, torch.Tensor) and tensor.device != device:
            raise InputDataError(
                f"batches[{index}] must be on the parameters' device {device}; "
                f"got a tensor on {tensor.device}."
            )
    return inputs, targets


class ModelFunction:
    """A deep copy of a model in one mode, evaluated functionally on streamed batches: f_b(w).

    ``batches`` is re-iterated at every product (a list, a ``DataLoader`` without shuffling, or any
    object whose ``__iter__`` returns a fresh iterator); one batch is held at a time. The first pass
    (:meth:`stream`) records the targets, and every later pass must give the same batches in the same
    order, since the output-space matrices are built on the first. In train mode BatchNorm normalizes
    with the statistics of each batch and never updates its running statistics (so f_b couples the
    examples of batch b); dropout is not supported in train mode (its random masks would change every
    product), unlike ``HessianOperator.from_model``, which fixes one mask per batch. If ``mode`` is
    None, eval mode, with a :class:`CurvatureWarning` when the model has BatchNorm or dropout. Under a
    ``process_group`` (resolved, see :mod:`._distributed`) ``batches`` is this rank's shard and N, summed
    over the ranks at the end of the first pass, counts every rank's examples.

    Raises:
        InputTypeError: if ``model`` is not an ``nn.Module`` or ``batches`` is not re-iterable.
        InputDataError: if no parameter requires grad or the parameters mix dtypes or devices.
        ConfigurationError: for an unknown ``mode``, dropout in train mode, or a shuffling DataLoader.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Iterable[Any],
        *,
        mode: str | None,
        curvature: str,
        process_group: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if isinstance(batches, Iterator) or not hasattr(batches, "__iter__"):
            raise InputTypeError(
                "batches must be re-iterable (a list, a DataLoader, or an object whose __iter__ returns a "
                f"fresh iterator), since every product streams over the data; got {type(batches).__name__}."
            )
        sampler = getattr(batches, "sampler", None)
        if isinstance(batches, torch.utils.data.DataLoader) and isinstance(sampler, RandomSampler):
            raise ConfigurationError(
                f"curvature={curvature!r} needs the same batches at every pass; got a DataLoader with "
                "shuffle=True. Use shuffle=False."
            )
        self.mode = resolve_mode(model, mode)
        dropout = dropout_modules(model)
        if self.mode == "train" and dropout:
            raise ConfigurationError(
                f"curvature={curvature!r} in mode='train' cannot fix the masks of the dropout layers "
                f"({', '.join(dropout)}); use mode='eval', or curvature='hessian' (one mask per batch)."
            )
        self.batches = batches
        self.model = copy.deepcopy(model)
        self.model.train(self.mode == "train")
        if self.mode == "train":
            use_batch_statistics(self.model)
        named = dict(self.model.named_parameters())
        self.variables = tuple(name for name, p in named.items() if p.requires_grad)
        if not self.variables:
            raise InputDataError(
                "no parameter of the model requires grad, so there is no curvature to measure; "
                "call requires_grad_(True) on the parameters to measure."
            )
        self.point: Params = {name: p.detach() for name, p in named.items()}
        first = self.point[self.variables[0]]
        for name, tensor in self.point.items():
            if not tensor.is_floating_point() or tensor.dtype != first.dtype or tensor.device != first.device:
                raise InputDataError(
                    f"every parameter must share one floating dtype and device; {self.variables[0]!r} is "
                    f"{first.dtype} on {first.device}, {name!r} is {tensor.dtype} on {tensor.device}."
                )
        self.device = first.device
        self.buffers = dict(self.model.named_buffers())
        self.targets: list[torch.Tensor] = []
        self._recorded = False
        self.process_group = process_group
        self._total: int | None = None

    @property
    def num_examples(self) -> int:
        """N, the number of examples (after the first pass; over every rank's shard under a group)."""
        return self._total if self._total is not None else sum(int(t.shape[0]) for t in self.targets)

    def stream(self) -> Iterator[tuple[int, Any, torch.Tensor]]:
        """One pass over the data: (index, inputs, targets) per batch, checked against the first pass.

        Raises:
            InputDataError: for a malformed batch, no batch at all, or a pass whose batches differ
                from the first (in number or targets, e.g. a reshuffled or augmented dataset).
        """
        count = 0
        for index, batch in enumerate(self.batches):
            inputs, targets = _check_batch(index, batch, self.device)
            if not self._recorded:
                self.targets.append(targets)
            elif index >= len(self.targets) or not torch.equal(targets, self.targets[index]):
                raise InputDataError(
                    f"batches[{index}] differs from the first pass; the batches must be the same, in the "
                    "same order, at every pass (no shuffling or random augmentation)."
                )
            count = index + 1
            yield index, inputs, targets
        if not self._recorded:
            if not self.targets:
                raise InputDataError("batches must hold at least one (inputs, targets) pair; got none.")
            self._recorded = True
            if self.process_group is not None:
                self._total = combine_shards(self.num_examples, self.point, (), self.process_group)[0]
        elif count != len(self.targets):
            raise InputDataError(
                f"batches yielded {count} batches on this pass but {len(self.targets)} on the first; they "
                "must be the same at every pass."
            )

    def forward(self, params: Params, inputs: Any, index: int) -> torch.Tensor:
        """The model's output on the inputs of batch ``index`` with ``params`` (every parameter)."""
        args = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
        output = torch.func.functional_call(self.model, {**params, **self.buffers}, args)
        if not isinstance(output, torch.Tensor):
            raise InputDataError(
                f"the model must return one tensor of outputs; got {type(output).__name__} on batch {index}."
            )
        return output


def check_outputs(kind: str, outputs: torch.Tensor, targets: torch.Tensor, index: int) -> None:
    """Check one batch's outputs and targets: (B, C) logits with class indices, or equal shapes for MSE.

    Raises:
        InputDataError: naming the batch, with the shapes and dtypes found.
    """
    if targets.device != outputs.device:
        raise InputDataError(
            f"batch {index}: targets on {targets.device} must be on the outputs' device {outputs.device}."
        )
    if kind == "cross_entropy":
        ok = (
            outputs.ndim == 2
            and targets.shape == outputs.shape[:1]
            and not targets.is_floating_point()
            and not targets.is_complex()
        )
        if ok and targets.numel():
            ok = int(targets.min()) >= 0 and int(targets.max()) < outputs.shape[1]
        if not ok:
            raise InputDataError(
                "cross-entropy curvature needs outputs of shape (batch, classes) and integer class targets "
                f"in 0..classes-1 of shape (batch,); batch {index} has outputs {tuple(outputs.shape)} and "
                f"targets {tuple(targets.shape)} of dtype {targets.dtype}."
            )
    elif outputs.shape != targets.shape or not targets.is_floating_point():
        raise InputDataError(
            f"mse curvature needs floating targets of the outputs' shape; batch {index} has outputs "
            f"{tuple(outputs.shape)} and targets {tuple(targets.shape)} ({targets.dtype})."
        )
    if not bool(torch.isfinite(outputs).all()):
        raise InputDataError(f"the model's outputs must be finite; got NaN or inf on batch {index}.")


# ---- output-space matrices M_b: apply to U (b, B, K) and quadratic forms (b,) --------------------------
class SoftmaxHessian:
    """M U = p * U - p (p . U) per example: the cross-entropy Hessian diag(p) - p p^T, p of shape (B, C)."""

    def __init__(self, probabilities: torch.Tensor) -> None:
        self.probabilities = probabilities

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        """M U for U of shape (b, B, C)."""
        p = self.probabilities
        return p * U - p * (p * U).sum(dim=-1, keepdim=True)

    def quadratic(self, U: torch.Tensor) -> torch.Tensor:
        """(u_j^T M u_j)_j for U of shape (b, B, C), shape (b,)."""
        p = self.probabilities
        return (p * U.square()).sum(dim=(1, 2)) - (p * U).sum(dim=-1).square().sum(dim=1)


class ScaledIdentity:
    """M U = scale * U: the squared-error Hessian (2/D) I."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        """M U for U of shape (b, B, K)."""
        return self.scale * U

    def quadratic(self, U: torch.Tensor) -> torch.Tensor:
        """(u_j^T M u_j)_j, shape (b,)."""
        return self.scale * U.square().sum(dim=(1, 2))


class OuterProducts:
    """M U = sum_s r_s (r_s . U) per example, for factors R of shape (B, S, K)."""

    def __init__(self, factors: torch.Tensor) -> None:
        self.factors = factors

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        """M U for U of shape (b, B, K)."""
        coefficients = torch.einsum("jbk,bsk->jbs", U, self.factors)
        return torch.einsum("jbs,bsk->jbk", coefficients, self.factors)

    def quadratic(self, U: torch.Tensor) -> torch.Tensor:
        """(u_j^T M u_j)_j = sum (r_s . u_j)^2, shape (b,)."""
        return torch.einsum("jbk,bsk->jbs", U, self.factors).square().sum(dim=(1, 2))


OutputMatrix = SoftmaxHessian | ScaledIdentity | OuterProducts


def output_hessian(kind: str, outputs: torch.Tensor) -> OutputMatrix:
    """The Hessians of the examples' losses in their outputs, blockdiag(H_n), for one batch."""
    if kind == "cross_entropy":
        return SoftmaxHessian(torch.softmax(outputs, dim=-1))
    return ScaledIdentity(2.0 / math.prod(outputs.shape[1:]))


def true_label_gradients(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """r_n = dl_n/df_n at the true targets, shape (B, K): p_n - e_{y_n} or (2/D) (f_n - y_n)."""
    flat = outputs.reshape(outputs.shape[0], -1)
    if kind == "cross_entropy":
        one_hot = nn.functional.one_hot(targets.long(), flat.shape[1]).to(flat.dtype)
        return torch.softmax(flat, dim=-1) - one_hot
    return 2.0 / flat.shape[1] * (flat - targets.reshape(flat.shape).to(flat.dtype))


def sample_labels(
    kind: str, outputs: torch.Tensor, num_samples: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels sampled from the model's predictive distribution and their scores r in the outputs.

    Cross-entropy: y ~ Categorical(softmax(f_n)), labels (B, S), r = p_n - e_y, so
    E[r r^T] = diag(p_n) - p_n p_n^T. Squared error: the unit-variance Gaussian y = f_n + eps,
    eps ~ N(0, I), targets (B, S, *output shape); its negative log-likelihood (1/2) ||f - y||^2 has score
    f_n - y = -eps, and the loss (1/D) ||f - y||^2 is c = 2/D times it, so the Fisher of the loss is c
    times that of the likelihood: r = sqrt(c) eps (the sign is immaterial) and E[r r^T] = (2/D) I, the
    loss's Hessian. The scores have shape (B, S, K). Draws are made in float64 on the generator's
    device, then moved to the outputs' device and dtype.
    """
    check_generator("generator", generator)
    check_int_in_range("num_samples", num_samples, low=1)
    flat = outputs.reshape(outputs.shape[0], -1)
    batch, entries = flat.shape
    if kind == "cross_entropy":
        probabilities = torch.softmax(flat.to(torch.float64), dim=-1).to(generator.device)
        labels = torch.multinomial(probabilities, num_samples, replacement=True, generator=generator)
        labels = labels.to(flat.device)
        one_hot = nn.functional.one_hot(labels, entries).to(flat.dtype)
        return labels, torch.softmax(flat, dim=-1)[:, None, :] - one_hot
    noise = torch.randn(
        (batch, num_samples, entries), generator=generator, device=generator.device, dtype=torch.float64
    ).to(device=flat.device, dtype=flat.dtype)
    targets = (flat[:, None, :] + noise).reshape(batch, num_samples, *outputs.shape[1:])
    return targets, math.sqrt(2.0 / entries) * noise


def outer_products(factors: torch.Tensor) -> OuterProducts:
    """(1/S) sum_s r_s r_s^T per example from scores r of shape (B, S, K)."""
    return OuterProducts(factors / math.sqrt(factors.shape[1]))


def per_batch(
    function: ModelFunction, kind: str, build: Callable[[torch.Tensor, torch.Tensor], OutputMatrix]
) -> tuple[OutputMatrix, ...]:
    """``build(outputs, targets)`` for every batch, in order, on a first pass over the data at the point.

    Raises:
        InputDataError: for malformed batches, outputs or targets (see :func:`check_outputs`).
    """
    matrices = []
    for index, inputs, targets in function.stream():
        with torch.no_grad():
            outputs = function.forward(function.point, inputs, index)
        check_outputs(kind, outputs, targets, index)
        matrices.append(build(outputs, targets))
    return tuple(matrices)


# ---- Jacobian products through the model, for blocks of b vectors -------------------------------------
Forward = Callable[[Params], torch.Tensor]


def jacobian_products(
    forward: Forward, primal: Params, tangents: Params, batch: int, *, vectorize: bool
) -> torch.Tensor:
    """J v for the b tangents (each entry of shape (b, *parameter shape)), shape (b, *output shape)."""

    def single(tangent: Params) -> torch.Tensor:
        return torch.func.jvp(forward, (primal,), (tangent,))[1]

    with warnings.catch_warnings():
        # torch scripts its forward-AD decompositions on first use and warns that
        # torch.jit.script is deprecated; that concerns torch internals, not the caller.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        return batched(single, tangents, batch, vectorize=vectorize)


def transposed_jacobian_products(
    forward: Forward, primal: Params, cotangents: torch.Tensor, batch: int, *, vectorize: bool
) -> Params:
    """J^T u for the b cotangents of shape (b, *output shape): one forward pass with its graph."""
    vjp = torch.func.vjp(forward, primal)[1]

    def single(cotangent: torch.Tensor) -> Params:
        return vjp(cotangent)[0]

    return batched(single, cotangents, batch, vectorize=vectorize)


def batched(single: Callable[[Any], Any], inputs: Any, batch: int, *, vectorize: bool) -> Any:
    """``single`` over the leading axis of ``inputs``, a tensor or dict of tensors (so is its result)."""
    if batch > 1 and vectorize:
        return torch.func.vmap(single)(inputs)
    columns = [single(_take(inputs, j)) for j in range(batch)]
    if isinstance(columns[0], dict):
        return {key: torch.stack([column[key] for column in columns]) for key in columns[0]}
    return torch.stack(columns)


def _take(inputs: Any, index: int) -> Any:
    if isinstance(inputs, dict):
        return {key: tensor[index] for key, tensor in inputs.items()}
    return inputs[index]
