"""The nonconvex solver protocol: hyperparameters in the constructor, ``run(objective, init, *, generator)``.

Every solver iterates on a parameter tuple of a :class:`~flatminima.objectives.Objective`, records the
training loss and the exact (scaled) Hessian trace along the way, and returns a frozen
:class:`~flatminima.solvers.nonconvex.NonconvexResult`. Solvers that draw random numbers (minibatches,
label noise, Langevin noise, Hutchinson probes) require an explicit ``torch.Generator`` and are
reproducible given it; deterministic solvers accept and ignore one, so that sweeps can pass the same
arguments to every solver.

Stopping: after ``max_iterations`` (``MAX_ITERATIONS``), when the elapsed time exceeds ``time_limit``
(``TIME_LIMIT``; tested after every iteration, so a run returns within about one iteration and one
history record of the limit), when an iterate is not finite or its norm exceeds ``divergence_threshold``
(``DIVERGED``; the last finite iterate is returned), or, for deterministic solvers with
``tolerance > 0``, when the norm of the update direction (the gradient the solver descends) is
<= ``tolerance`` (``CONVERGED``). Stochastic solvers never report ``CONVERGED``.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.errors import InputTypeError
from flatminima.objectives import Objective
from flatminima.optim._random import require_generator
from flatminima.problems import Instance
from flatminima.solvers.nonconvex._oracles import check_objective
from flatminima.solvers.nonconvex.result import NonconvexResult
from flatminima.solvers.result import Status

Params = tuple[torch.Tensor, ...]
State = dict[str, Any]

#: number of history records a run keeps when ``record_every`` is not given.
DEFAULT_RECORDS = 100


def total_norm(tensors: Params) -> torch.Tensor:
    """The 2-norm of all entries of a tuple of tensors, as a 0-dim tensor."""
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def axpy(params: Params, direction: Params, scale: float) -> Params:
    """Return params + scale * direction (new tensors)."""
    return tuple(p + scale * d for p, d in zip(params, direction, strict=True))


def check_batch_size_argument(batch_size: Any) -> int | None:
    """``None`` (full batch) or an integer >= 1."""
    if batch_size is None:
        return None
    return check_int_in_range("batch_size", batch_size, low=1)


class NonconvexSolver(abc.ABC):
    """Base class: validation, the iteration loop, stopping rules and the history.

    Subclasses validate their hyperparameters in ``__init__`` (passing them to ``super().__init__``
    for the record) and implement :meth:`_step`; they may override :meth:`_prepare`,
    :meth:`_extras` and :meth:`_final`.

    Args:
        max_iterations: the iteration limit (>= 1).
        tolerance: stop (``CONVERGED``) when the descent direction's norm is <= tolerance; deterministic
            solvers only; 0 disables it.
        record_every: record the history every this many iterations (default: about 100 records).
        time_limit: seconds (None: no limit).
        divergence_threshold: an iterate with norm above this counts as diverged.
    """

    #: registry name.
    name: ClassVar[str]

    def __init__(
        self,
        *,
        max_iterations: int,
        tolerance: float,
        record_every: int | None,
        time_limit: float | None,
        divergence_threshold: float = 1e6,
        **hyperparameters: Any,
    ) -> None:
        self.max_iterations = check_int_in_range("max_iterations", max_iterations, low=1)
        self.tolerance = check_real("tolerance", tolerance, low=0.0)
        self.record_every = (
            None if record_every is None else check_int_in_range("record_every", record_every, low=1)
        )
        self.time_limit = (
            None if time_limit is None else check_real("time_limit", time_limit, low=0.0, low_open=True)
        )
        self.divergence_threshold = check_real(
            "divergence_threshold", divergence_threshold, low=0.0, low_open=True
        )
        self._hyperparameters = {
            **hyperparameters,
            "max_iterations": self.max_iterations,
            "tolerance": self.tolerance,
            "record_every": self.record_every,
            "time_limit": self.time_limit,
            "divergence_threshold": self.divergence_threshold,
        }

    # ---- description ------------------------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        """True if the solver draws random numbers (it then requires a generator)."""
        return False

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments (a copy)."""
        return dict(self._hyperparameters)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters.items())
        return f"{type(self).__name__}({args})"

    # ---- the run ----------------------------------------------------------------------------------
    def run(
        self, objective: Objective, init: Params, *, generator: torch.Generator | None = None
    ) -> NonconvexResult:
        """Iterate from ``init`` on ``objective``; return a :class:`NonconvexResult`.

        Args:
            objective: the loss (e.g. ``BilinearFactorization(instance, width=k)``).
            init: the initial parameter tuple (not modified); its dtype and device are kept.
            generator: the random stream; required by stochastic solvers, ignored otherwise.

        Returns:
            The result; ``params`` have the dtype and device of ``init``.

        Raises:
            InputTypeError: if ``objective`` is not an Objective, ``init`` not a tuple of tensors, or a
                stochastic solver gets no generator.
            InputDataError: if ``init`` does not fit the objective, the objective's instance is invalid
                (:meth:`~flatminima.problems.Instance.validate`: non-finite observations, observations of
                the wrong length, ...), or a hyperparameter does not fit the data (e.g. a batch larger
                than the number of measurements).
        """
        objective = check_objective(objective)
        instance = getattr(objective, "instance", None)
        if isinstance(instance, Instance):
            instance.validate()
        params = tuple(p.detach().clone() for p in objective.check_params(init, label="init"))
        if self.stochastic:
            generator = require_generator(type(self).__name__, generator)
        elif generator is not None:
            check_generator("generator", generator)
        start = time.perf_counter()
        state = self._prepare(objective, params, generator)
        every = self.record_every or max(1, self.max_iterations // DEFAULT_RECORDS)
        history = [self._record(objective, params, state, 0, start)]
        status, message, iteration = Status.MAX_ITERATIONS, "", 0
        for iteration in range(1, self.max_iterations + 1):
            with torch.no_grad():
                candidate = self._step(objective, params, state, iteration - 1, generator)
            norm = float(total_norm(candidate))
            if not math.isfinite(norm) or norm > self.divergence_threshold:
                status = Status.DIVERGED
                message = (
                    f"iterate {iteration} has norm {norm:.3g} (threshold {self.divergence_threshold:.3g}); "
                    "returning the last finite iterate. Try a smaller step_size."
                )
                iteration -= 1
                break
            params = candidate
            direction_norm = self._direction_norm(state)
            if direction_norm <= self.tolerance:
                status = Status.CONVERGED
                message = f"descent direction norm {direction_norm:.3g} <= tolerance {self.tolerance:g}"
                break
            if self.time_limit is not None and time.perf_counter() - start > self.time_limit:
                status = Status.TIME_LIMIT
                message = f"time limit {self.time_limit:g} s reached after {iteration} iterations"
                break
            if iteration % every == 0 or iteration == self.max_iterations:
                history.append(self._record(objective, params, state, iteration, start))
        else:
            message = f"{self.max_iterations} iterations"
        final = self._final(objective, params, state)
        if int(history[-1]["iteration"]) != iteration or final is not params:
            history.append(self._record(objective, final, state, iteration, start))
        return NonconvexResult(
            params=final,
            status=status,
            iterations=iteration,
            wall_time=time.perf_counter() - start,
            history=tuple(history),
            solver=self.name,
            hyperparameters=self.hyperparameters,
            message=message,
        )

    def _direction_norm(self, state: State) -> float:
        """The norm the stopping rule tests (inf when the rule does not apply)."""
        value = state.get("direction_norm")
        if self.stochastic or self.tolerance == 0.0 or value is None:
            return math.inf
        return float(value)

    def _record(
        self, objective: Objective, params: Params, state: State, iteration: int, start: float
    ) -> Mapping[str, float]:
        with torch.no_grad():
            traces = objective.block_traces(params)
            scaled = sum(w * float(t) for w, t in zip(objective.block_weights, traces, strict=True))
            record = {
                "iteration": float(iteration),
                "time": time.perf_counter() - start,
                "loss": float(objective.value(params)),
                "scaled_trace": scaled,
                "hessian_trace": sum(float(t) for t in traces),
                "gradient_norm": float(total_norm(objective.grad(params))),
                "parameter_norm": float(total_norm(params)),
            }
            record.update(self._extras(objective, params, state))
        return record

    # ---- hooks ------------------------------------------------------------------------------------
    def _prepare(self, objective: Objective, params: Params, generator: torch.Generator | None) -> State:
        """Check that the solver fits the objective and build the initial state."""
        return {}

    @abc.abstractmethod
    def _step(
        self,
        objective: Objective,
        params: Params,
        state: State,
        iteration: int,
        generator: torch.Generator | None,
    ) -> Params:
        """Return the next iterate (new tensors); may set ``state["direction_norm"]``."""

    def _extras(self, objective: Objective, params: Params, state: State) -> dict[str, float]:
        """Solver-specific history entries."""
        return {}

    def _final(self, objective: Objective, params: Params, state: State) -> Params:
        """The parameters to return (default: the last iterate)."""
        return params


def require_stochastic_generator(owner: str, generator: torch.Generator | None) -> torch.Generator:
    """The generator of a stochastic step (the run already checked it; this narrows the type)."""
    if generator is None:
        raise InputTypeError(f"{owner} needs a generator.")
    return generator
