"""The base of the curvature matrices beyond the Hessian: :class:`OutputCurvatureOperator`.

It owns what the generalized Gauss-Newton and the two Fisher matrices of
:mod:`~flatminima.curvature.curvature_matrices` share: the model function and its parameter layout,
the structure of ``HessianOperator`` (size, point, parameter groups, :meth:`~OutputCurvatureOperator.select`
for a diagonal block, ``block_scale``) and the products sum_b J_b^T M_b J_b / N and their quadratic forms
(a Jacobian-vector product, the output-space matrix M_b, a vector-Jacobian product, streamed over the
batches). The subclasses only name the matrix and build M_b (see :mod:`.curvature_outputs`). Under a
``torch.distributed`` process group each rank streams its shard and every product is all-reduced
(:mod:`._distributed`).
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from flatminima.curvature._distributed import all_reduce_sum, resolve_group
from flatminima.curvature._layout import LayoutOperator, ParameterLayout
from flatminima.curvature.curvature_outputs import (
    ModelFunction,
    OutputMatrix,
    Params,
    jacobian_products,
    loss_kind_of,
    per_batch,
    transposed_jacobian_products,
)
from flatminima.errors import InputTypeError

LossFunction = Callable[[Any, torch.Tensor], torch.Tensor]


class OutputCurvatureOperator(LayoutOperator):
    """sum_b J_b^T M_b J_b over the trainable parameters of a model (base of the GGN and Fisher operators).

    Vectors are flat like those of ``HessianOperator``: the selected parameters, each flattened,
    concatenated in parameter order. Subclasses set :attr:`curvature` and build each batch's M_b in
    :meth:`_output_matrix` (called once per batch, in order, on a first pass over the data).
    """

    #: the name of the matrix in :data:`~flatminima.curvature.curvature_matrices.CURVATURES`.
    curvature: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        batches: Iterable[Any],
        *,
        mode: str | None = None,
        vectorize: bool = True,
        process_group: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        self.loss_kind = loss_kind_of(loss_fn, self.curvature)
        group = resolve_group(process_group)
        self.function = ModelFunction(
            model, batches, mode=mode, curvature=self.curvature, process_group=group
        )
        self.vectorize = bool(vectorize)
        variables = self.function.variables
        self._layout = ParameterLayout(self.function.point, variables, variables)
        first = self.function.point[variables[0]]
        self._dtype, self._device = first.dtype, first.device
        matrices = per_batch(self.function, self.loss_kind, self._output_matrix)
        self._matrices: tuple[OutputMatrix, ...] = matrices

    @abc.abstractmethod
    def _output_matrix(self, outputs: torch.Tensor, targets: torch.Tensor) -> OutputMatrix:
        """M_b of one batch from the model's outputs at the point and the batch's targets."""

    # ---- structure (names, shapes, size, dtype, device, point, unflatten: LayoutOperator) -----------
    @property
    def mode(self) -> str:
        """The mode the model is evaluated in, "train" or "eval"."""
        return self.function.mode

    @property
    def num_examples(self) -> int:
        """N, the number of examples over all batches (of every rank, under a process group)."""
        return self.function.num_examples

    def select(self, *selectors: str | int) -> OutputCurvatureOperator:
        """The diagonal block C_gg over the parameters matching any selector (see HessianOperator.select)."""
        names = self._layout.selection(selectors)
        selected = copy.copy(self)
        selected._layout = ParameterLayout(self._layout.point, self._layout.variables, names)
        return selected

    def groups(self, level: str = "parameter") -> dict[str, tuple[str, ...]]:
        """Parameter groups of the selection: one per tensor ("parameter") or per layer ("module")."""
        return self._layout.groups(level)

    def block_scale(self, block_weights: Mapping[str, float] | None = None) -> torch.Tensor:
        """The diagonal scale of the block-weighted trace (see ``HessianOperator.block_scale``)."""
        return self._layout.block_scale({}, block_weights or {})

    # ---- products ----------------------------------------------------------------------------------
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        batch = int(V.shape[1])
        tangents = self._layout.unflatten(V.mT)
        total = torch.zeros(batch, self.size, dtype=self.dtype, device=self.device)
        for index, inputs, _ in self.function.stream():
            forward, primal = self._forward(inputs, index), self._selected_point()
            outputs = jacobian_products(forward, primal, tangents, batch, vectorize=self.vectorize)
            weighted = self._matrices[index].apply(outputs.reshape(*outputs.shape[:2], -1))
            pulled = transposed_jacobian_products(
                forward, primal, weighted.reshape(outputs.shape), batch, vectorize=self.vectorize
            )
            total = total + self._layout.flatten_batched(pulled, batch)
        return all_reduce_sum(total.mT / self.num_examples, self.function.process_group).detach()

    def _quadratic_forms(self, V: torch.Tensor) -> torch.Tensor:
        batch = int(V.shape[1])
        tangents = self._layout.unflatten(V.mT)
        total = torch.zeros(batch, dtype=self.dtype, device=self.device)
        for index, inputs, _ in self.function.stream():
            forward, primal = self._forward(inputs, index), self._selected_point()
            outputs = jacobian_products(forward, primal, tangents, batch, vectorize=self.vectorize)
            total = total + self._matrices[index].quadratic(outputs.reshape(*outputs.shape[:2], -1))
        return all_reduce_sum(total / self.num_examples, self.function.process_group).detach()

    def _selected_point(self) -> Params:
        return {name: self._layout.point[name] for name in self.names}

    def _forward(self, inputs: Any, index: int) -> Callable[[Params], torch.Tensor]:
        def forward(selected: Params) -> torch.Tensor:
            return self.function.forward(self._layout.with_selected(selected), inputs, index)

        return forward
