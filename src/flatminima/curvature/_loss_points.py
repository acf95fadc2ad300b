"""The loss at many perturbed weights: chunked, vmapped where the loss allows it, counted.

The loss-perturbation measures (:mod:`.flat_box`, :mod:`.expected_sharpness`) evaluate L at many points
w + d. :class:`LossEvaluator` builds the points a chunk at a time (at most ``chunk_size`` points and about
2^24 entries per chunk, so memory stays bounded for large models) and evaluates a chunk with one
``torch.func.vmap`` of :meth:`HessianOperator.value_at` when ``vectorize`` is set. A loss that vmap cannot
trace (data-dependent control flow, ``.item()``, a distributed all-reduce) is evaluated point by point
from then on, with the same values up to round-off; an operator with a process group is never vmapped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flatminima.curvature.hessian import HessianOperator

#: entries (points x coordinates) of one chunk of perturbed weights.
_CHUNK_ENTRIES = 2**24


class LossEvaluator:
    """Evaluates ``operator``'s loss at batches of flat weight vectors and counts the evaluations.

    Args:
        operator: the loss (over its selected parameters).
        chunk_size: the most points per vmapped call (>= 1; validated by the caller).
        vectorize: try ``torch.func.vmap`` over the points of a chunk.
    """

    def __init__(self, operator: HessianOperator, *, chunk_size: int, vectorize: bool) -> None:
        self.operator = operator
        self.per_chunk = max(1, min(chunk_size, _CHUNK_ENTRIES // max(operator.size, 1)))
        self.vectorize = vectorize and getattr(operator, "process_group", None) is None
        self.num_evaluations = 0

    def values(self, points: torch.Tensor) -> torch.Tensor:
        """L at each row of ``points`` (k, n), as a float64 CPU tensor of shape (k,)."""
        self.num_evaluations += int(points.shape[0])
        if self.vectorize:
            try:
                return torch.func.vmap(self.operator.value_at)(points).detach().to("cpu", torch.float64)
            except (RuntimeError, NotImplementedError):
                self.vectorize = False  # this loss cannot be vmapped: loop from now on
        return torch.stack([self.operator.value_at(x) for x in points]).detach().to("cpu", torch.float64)

    def map(self, count: int, build: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """L at the ``count`` points ``build(indices)`` builds, a chunk at a time; float64 CPU, (count,)."""
        indices = torch.arange(count)
        parts = [self.values(build(chunk)) for chunk in indices.split(self.per_chunk)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
