"""Curvature across processes: the batches sharded over ``torch.distributed`` ranks, the products summed.

The dataset loss is a sum over batches, L(w) = sum_b (n_b / N) L_b(w), and so is everything an operator
computes from it: the loss, its gradient, the Hessian-vector products H V = sum_b (n_b / N) H_b V, the
quadratic forms, and the products sum_b J_b^T M_b J_b V / N of the Gauss-Newton and Fisher matrices. With
the batches split into disjoint shards S_0, ..., S_{P-1}, one per rank r of a process group,

    H V = sum_r [ sum_{b in S_r} (n_b / N) H_b V ],      N = sum_r sum_{b in S_r} n_b,

so each rank streams only its own shard, weights its batches with the global N (summed over the ranks
once, when the operator is built), and one ``all_reduce(SUM)`` of each result gives every rank the
product over the whole dataset: data-parallel curvature, as data-parallel training all-reduces its
gradients (Li et al. 2020). The reduced tensor is the same, bit for bit, on every rank (gloo and NCCL
send every rank the same reduced buffer), so every estimator (``hutchinson_trace``,
``lanczos_eigenvalues``, ``lanczos_spectral_density``, ...) runs unchanged and takes the same steps on
every rank, provided the ranks follow one contract:

* each rank passes its own shard as ``batches``: the same list sliced by rank,
  ``batches[rank::world_size]`` (exact for any split, even or not), or a ``DataLoader`` with
  ``DistributedSampler(dataset, shuffle=False)``, which is exact only when the dataset's size is a
  multiple of the world size (otherwise it repeats examples, or drops them with ``drop_last=True``).
  Every rank needs at least one batch;
* every rank holds the same model parameters (checked when the operator is built) and makes the same
  operator calls in the same order, with probe generators seeded identically (the probes are drawn on
  every rank, never communicated); a call made on one rank only waits forever for the others;
* randomness tied to the data (the dropout masks of ``mode="train"``, the sampled labels of the Fisher)
  is drawn by each rank for its own batches: seed those construction generators differently per rank
  (e.g. ``seed + rank``), or the ranks draw correlated masks or labels.

Code that streams the batches itself instead of calling the operator must all-reduce its own sums
(``gradient_variance`` does).

An operator holds its group. Release the operators (return from the function that built them, or
``del`` them) and meet at ``barrier()`` before ``destroy_process_group()``: a gloo group that outlives
its destruction is torn down at interpreter exit, where it can abort the process (SIGABRT, "terminate
called without an active exception") after the work is done.

``process_group=None`` means the default group when ``torch.distributed`` is initialized (the
convention of ``torch.distributed`` collectives), ``"local"`` this process alone even then (e.g. an
operator built on rank 0 only), and a ``ProcessGroup`` that group.

References:
    S. Li et al. PyTorch Distributed: Experiences on Accelerating Data Parallel Training. VLDB 2020.
    Z. Yao, A. Gholami, K. Keutzer, M. Mahoney. PyHessian: Neural Networks Through the Lens of the
    Hessian. IEEE Big Data 2020 (Hessian-vector products over data-parallel workers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import distributed

from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

#: ``process_group`` value for one process, even when torch.distributed is initialized.
LOCAL = "local"


def resolve_group(process_group: Any) -> Any:
    """The process group to sum over, or None for one process (nothing to communicate).

    Args:
        process_group: None (the default group when ``torch.distributed`` is initialized, else one
            process), ``"local"`` (this process alone) or a ``torch.distributed.ProcessGroup``. A group
            of one process is treated as one process.

    Raises:
        InputTypeError: if ``process_group`` is none of these.
        ConfigurationError: for a ProcessGroup while ``torch.distributed`` is not initialized, or one
            that this process does not belong to.
    """
    available = distributed.is_available()
    initialized = available and distributed.is_initialized()
    if process_group is None:
        group = distributed.group.WORLD if initialized else None
    elif isinstance(process_group, str) and process_group == LOCAL:
        return None
    elif available and isinstance(process_group, distributed.ProcessGroup):
        if not initialized:
            raise ConfigurationError(
                "process_group needs torch.distributed to be initialized "
                "(torch.distributed.init_process_group); it is not."
            )
        if distributed.get_rank(process_group) < 0:
            raise ConfigurationError(
                f"process_group must contain this process (rank {distributed.get_rank()}); it does not."
            )
        group = process_group
    else:
        raise InputTypeError(
            f"process_group must be None, {LOCAL!r} or a torch.distributed.ProcessGroup; "
            f"got {process_group!r}."
        )
    if group is None or distributed.get_world_size(group) == 1:
        return None
    return group


def all_reduce_sum(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks of ``group`` (a new tensor; ``tensor`` itself when None)."""
    if group is None:
        return tensor
    total = tensor.detach().clone(memory_format=torch.contiguous_format)
    distributed.all_reduce(total, op=distributed.ReduceOp.SUM, group=group)
    return total


def combine_shards(
    num_examples: int, point: Mapping[str, torch.Tensor], flags: tuple[bool, ...], group: Any
) -> tuple[int, tuple[bool, ...]]:
    """N summed over the ranks and every flag and-ed over them, after checking the ranks' parameters.

    Two collectives on the parameters' device, made once when an operator is built: one
    ``all_reduce(SUM)`` of the counts (the rank-local N and the number of ranks where each flag is
    False) and one ``all_reduce(MAX)`` of a fingerprint of the parameters and its negation, which
    gives every rank the fingerprint's maximum and minimum over the ranks, equal only if the ranks agree.

    Args:
        num_examples: this rank's number of examples.
        point: this rank's parameters (every tensor, selected or not).
        flags: conditions that hold on this rank (e.g. that its batches allow Taylor-mode forms).
        group: the process group (from :func:`resolve_group`, not None).

    Raises:
        InputDataError: on every rank at once, if the ranks' parameters differ (in count, number of
            entries, sum or sum of squares).
    """
    tensors = [t.detach() for t in point.values()]
    device = tensors[0].device
    counts = torch.tensor([num_examples, *(not flag for flag in flags)], dtype=torch.int64, device=device)
    counts = all_reduce_sum(counts, group)
    fingerprint = torch.zeros(4, dtype=torch.float64, device=device)
    fingerprint[0], fingerprint[1] = len(tensors), sum(t.numel() for t in tensors)
    for tensor in tensors:
        fingerprint[2] += tensor.to(torch.float64).sum()
        fingerprint[3] += tensor.to(torch.float64).square().sum()
    fingerprint = fingerprint.nan_to_num()
    extremes = torch.cat([fingerprint, -fingerprint])
    distributed.all_reduce(extremes, op=distributed.ReduceOp.MAX, group=group)
    largest, smallest = extremes[:4], -extremes[4:]
    if not torch.equal(largest, smallest):
        raise InputDataError(
            "every rank must hold the same model parameters (e.g. broadcast them from rank 0 before "
            f"measuring); their sums range over [{float(smallest[2]):.17g}, {float(largest[2]):.17g}] and "
            f"their entries over [{int(smallest[1])}, {int(largest[1])}] across the ranks."
        )
    return int(counts[0]), tuple(int(count) == 0 for count in counts[1:].tolist())
