"""The exact trace of the generalized Gauss-Newton matrix by per-example vector-Jacobian products.

tr G = (1/N) sum_n ||J_n^T S_n||_F^2 for any factor Lambda_n = S_n S_n^T of the loss's Hessian in the
outputs (the square-root trick of BackPACK's exact GGN diagonal, Dangel, Kunstner, Hennig 2020). For
cross-entropy, Lambda = diag(p) - p p^T has the null vector 1, so Lambda = P Lambda P with P = B B^T the
projection onto 1^perp (B an orthonormal basis of it, C x (C - 1)); with M = B^T Lambda B = V diag(m) V^T,
S = B V diag(sqrt m): C - 1 columns, one per-example product fewer than the C columns
sqrt(p_c) (e_c - p) of diag(sqrt p) - p sqrt(p)^T (half the work for two classes). For the squared
error over D outputs, S = sqrt(2/D) I: D columns. The products run under ``torch.func.vmap`` over the
examples of a batch (one forward pass and a vector-Jacobian product per example, vmapped over its
columns), in chunks sized to a memory budget for the per-example gradients, streamed over the batches
and all-reduced over a process group.

References:
    F. Dangel, F. Kunstner, P. Hennig. BackPACK: packing more into backprop. ICLR 2020.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flatminima.curvature._distributed import all_reduce_sum
from flatminima.curvature._model import ModelSource
from flatminima.curvature._types import Params
from flatminima.curvature.curvature_outputs import check_outputs
from flatminima.curvature.hessian import HessianOperator
from flatminima.errors import ConfigurationError, InputDataError

#: Memory for the per-example gradients of one vmapped call (examples x columns x parameters).
CHUNK_BYTES_CPU = 384 * 2**20
CHUNK_BYTES_ACCELERATOR = 2 * 2**30


def ggn_trace(
    operator: HessianOperator, source: ModelSource, kind: str, chunk_size: int | None
) -> tuple[float, int]:
    """(tr G over the selection, the number of columns of S_n) by per-example products, streamed."""
    point = operator.parameters()
    selected = {name: point[name] for name in operator.names}
    element = selected[operator.names[0]].element_size()
    budget = CHUNK_BYTES_CPU if operator.device.type == "cpu" else CHUNK_BYTES_ACCELERATOR
    total = torch.zeros((), dtype=torch.float64, device=operator.device)
    columns = 0
    for index, inputs, targets in source.batches.stream():
        with torch.no_grad():
            outputs = source.forward_on(point, index, inputs)
        if not isinstance(outputs, torch.Tensor):
            raise InputDataError(
                f"the model must return one tensor of outputs; got {type(outputs).__name__} on batch {index}."
            )
        check_outputs(kind, outputs, targets, index)
        factors = factor_columns(kind, outputs)  # (B, K, *output shape)
        columns = int(factors.shape[1])
        per_column = operator.size * element
        inner = None if columns * per_column <= budget else max(1, budget // per_column)
        chunk = chunk_size if chunk_size is not None else max(1, budget // (columns * per_column))
        norms = per_example_norms(source, point, selected, index, inputs, factors, outputs, chunk, inner)
        total = total + norms.to(torch.float64).sum()
    value = all_reduce_sum(total, operator.process_group) / source.num_examples
    return float(value), columns


def factor_columns(kind: str, outputs: torch.Tensor) -> torch.Tensor:
    """The columns of S_n (Lambda_n = S_n S_n^T) as rows, shape (B, K, *output shape).

    Example:
        >>> p = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
        >>> S = factor_columns("cross_entropy", p.log()).mT  # C - 1 = 2 columns
        >>> bool(torch.allclose(S @ S.mT, torch.diag_embed(p) - p[:, :, None] * p[:, None, :]))
        True
    """
    batch = outputs.shape[0]
    if kind == "cross_entropy":
        p = torch.softmax(outputs, dim=-1)
        classes = p.shape[1]
        if classes == 1:  # one class: the loss is 0 everywhere
            return p.new_zeros(batch, 1, 1)
        spanning = torch.eye(classes, dtype=torch.float64, device=p.device)
        spanning[:, 0] = 1.0  # (1, e_2, ..., e_C): its QR gives 1 / sqrt(C), then a basis of 1^perp
        basis = torch.linalg.qr(spanning).Q[:, 1:].to(p.dtype)  # (C, C - 1)
        projected = basis.mT @ (p[:, :, None] * basis) - (p @ basis)[:, :, None] * (p @ basis)[:, None, :]
        values, vectors = torch.linalg.eigh(projected)
        return ((basis @ vectors) * values.clamp(min=0.0).sqrt()[:, None, :]).mT  # row j: column j of S
    entries = math.prod(outputs.shape[1:])
    eye = torch.eye(entries, dtype=outputs.dtype, device=outputs.device) * math.sqrt(2.0 / entries)
    rows = eye.reshape(entries, *outputs.shape[1:])
    return rows.expand(batch, *rows.shape)


def per_example_norms(
    source: ModelSource,
    point: Params,
    selected: Params,
    index: int,
    inputs: Any,
    factors: torch.Tensor,
    outputs: torch.Tensor,
    chunk: int,
    inner: int | None,
) -> torch.Tensor:
    """(||J_n^T S_n||_F^2)_n over the selected parameters for one batch, shape (B,)."""

    def one(example: Any, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        single = (
            tuple(t.unsqueeze(0) for t in example) if isinstance(example, tuple) else example.unsqueeze(0)
        )

        def output(params: Params) -> torch.Tensor:
            return source.forward_on({**point, **params}, index, single)[0]

        transformed = torch.func.vjp(output, selected)
        value, pull = transformed[0], transformed[1]
        grads = torch.func.vmap(lambda u: pull(u)[0], chunk_size=inner)(columns)
        return sum((g.square().sum() for g in grads.values()), value.new_zeros(())), value

    args = tuple(inputs) if isinstance(inputs, tuple | list) else inputs
    try:
        norms, single_outputs = torch.func.vmap(one, chunk_size=chunk)(args, factors)
    except (RuntimeError, ValueError, NotImplementedError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigurationError(
            f"ggn_control_trace needs per-example products (torch.func.vmap over the examples), which "
            f"failed on batch {index}: {first}. Use hutchinson_trace for this model."
        ) from error
    tolerance = math.sqrt(torch.finfo(outputs.dtype).eps) * max(1.0, float(outputs.abs().max()))
    if float((single_outputs - outputs).abs().max()) > tolerance:
        raise ConfigurationError(
            f"ggn_control_trace needs independent examples, but on batch {index} the model's output "
            "for an example alone differs from its output within the batch (a layer mixes the "
            "examples, e.g. batch statistics); use mode='eval' or hutchinson_trace."
        )
    return norms.detach()
