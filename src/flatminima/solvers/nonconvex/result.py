"""The outcome of a nonconvex (factor-space) solver run: final parameters, status and history."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

from flatminima.errors import InputDataError
from flatminima.solvers.result import Status

Params = tuple[torch.Tensor, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class NonconvexResult:
    """Where a factor-space solver stopped and how it got there.

    Attributes:
        params: the returned parameter tuple (for SWA the running average; for a diverged run the last
            finite iterate), same dtype and device as the initial point.
        status: ``CONVERGED`` (the stopping rule of a deterministic solver was met), ``MAX_ITERATIONS``,
            ``TIME_LIMIT`` or ``DIVERGED`` (non-finite or exploding iterates).
        iterations: the number of (outer) iterations taken.
        wall_time: seconds spent in ``run``.
        history: records taken every ``record_every`` iterations and at the end: ``iteration``, ``loss``
            (the full training loss f), ``scaled_trace`` and ``hessian_trace`` (exact, from the objective),
            ``gradient_norm`` (of f), ``parameter_norm`` and solver-specific entries (e.g. ``sharpness``,
            ``gamma``, ``averaged_loss``).
        solver: the registry name of the solver.
        hyperparameters: the solver's constructor arguments.
        message: a one-line account of how the run ended.
    """

    params: Params
    status: Status
    iterations: int
    wall_time: float
    history: tuple[Mapping[str, float], ...]
    solver: str
    hyperparameters: Mapping[str, Any]
    message: str = ""

    @property
    def converged(self) -> bool:
        """True iff the status is ``CONVERGED``."""
        return self.status is Status.CONVERGED

    @property
    def diverged(self) -> bool:
        """True iff the status is ``DIVERGED``."""
        return self.status is Status.DIVERGED

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the returned parameters."""
        return self.params[0].dtype

    def trace(self, key: str) -> tuple[list[int], list[float]]:
        """Return (iterations, values) of one history entry, skipping records without it.

        Raises:
            InputDataError: if no record has ``key``.
        """
        steps = [int(r["iteration"]) for r in self.history if key in r]
        if not steps:
            known = sorted({k for r in self.history for k in r})
            raise InputDataError(f"key must be one of {known}; got key={key!r}.")
        return steps, [float(r[key]) for r in self.history if key in r]

    def final(self, key: str) -> float:
        """The last recorded value of ``key`` (nan if the history is empty)."""
        if not self.history:
            return math.nan
        return self.trace(key)[1][-1]
