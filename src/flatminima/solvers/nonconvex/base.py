"""The nonconvex solver protocol: hyperparameters in the constructor, ``run(objective, init, *, generator)``.

Every solver runs one of the ``torch.optim`` optimizers (``torch.optim.SGD`` or one of
:mod:`flatminima.optim`) on a parameter tuple of a :class:`~flatminima.objectives.Objective`: the one loop
of :meth:`NonconvexSolver.run` hands the optimizer a closure that puts the objective's gradient (full
batch, a minibatch of measurements or with label noise) into ``.grad``, steps it, and records the training
loss and the exact (scaled) Hessian trace along the way; it returns a frozen
:class:`~flatminima.solvers.nonconvex.NonconvexResult`. Solvers that draw random numbers (minibatches,
label noise, Langevin noise, Hutchinson probes, replica offsets) require an explicit ``torch.Generator``
and are reproducible given it; deterministic solvers accept and ignore one, so that sweeps can pass the
same arguments to every solver.

When to stop and what to record is one small dataclass shared by every solver, :class:`RunSettings`
(``settings=``; the loose keywords ``max_iterations=``, ``tolerance=``, ... are shorthands that fill it).
Stopping: after ``max_iterations`` (``MAX_ITERATIONS``), when the elapsed time exceeds ``time_limit``
(``TIME_LIMIT``; tested after every iteration, so a run returns within about one iteration and one
history record of the limit), when an iterate is not finite or its norm exceeds ``divergence_threshold``
(``DIVERGED``; the last finite iterate is returned), or, for deterministic solvers with
``tolerance > 0``, when the norm of the update direction (the gradient the solver descends) is
<= ``tolerance`` (``CONVERGED``). Stochastic solvers never report ``CONVERGED``. A ``schedule`` s(t)
multiplies the step size of iteration t (t from 0): eta_t = eta s(t) (:mod:`flatminima.optim.schedules`).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypedDict

import torch

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.errors import InputTypeError
from flatminima.objectives import Objective
from flatminima.optim._random import require_generator
from flatminima.optim.schedules import ScheduleLike, make_schedule, schedule_value
from flatminima.problems import Instance
from flatminima.solvers.nonconvex._oracles import BatchDraw, GradientOracle, check_objective
from flatminima.solvers.nonconvex.result import NonconvexResult
from flatminima.solvers.result import Status

Params = tuple[torch.Tensor, ...]

#: number of history records a run keeps when ``record_every`` is not given.
DEFAULT_RECORDS = 100


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """When a nonconvex solver stops, what it records, and the step-size schedule (shared by all solvers).

    Attributes:
        max_iterations: the iteration limit (>= 1).
        tolerance: stop (``CONVERGED``) when the descent direction's norm is <= tolerance; deterministic
            solvers only; 0 disables it.
        record_every: record the history every this many iterations (None: about 100 records).
        time_limit: seconds (> 0; None: no limit).
        divergence_threshold: an iterate with norm above this counts as diverged (> 0).
        schedule: the step-size multiplier s(t) of iteration t (t from 0): a callable, or a name of
            :data:`flatminima.optim.schedules.SCHEDULES` (its default parameters); None: constant.

    Raises:
        InputDataError: on an out-of-range value or an unknown schedule name (naming the field).
        InputTypeError: on a value of the wrong type.

    Example:
        >>> from flatminima.optim.schedules import BurstSchedule
        >>> settings = RunSettings(max_iterations=500, schedule=BurstSchedule(start=100, length=50))
        >>> settings.replace(record_every=10).record_every
        10
    """

    max_iterations: int = 1000
    tolerance: float = 1e-10
    record_every: int | None = None
    time_limit: float | None = None
    divergence_threshold: float = 1e6
    schedule: ScheduleLike | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "max_iterations", check_int_in_range("max_iterations", self.max_iterations, low=1))
        put(self, "tolerance", check_real("tolerance", self.tolerance, low=0.0))
        if self.record_every is not None:
            put(self, "record_every", check_int_in_range("record_every", self.record_every, low=1))
        if self.time_limit is not None:
            put(self, "time_limit", check_real("time_limit", self.time_limit, low=0.0, low_open=True))
        threshold = check_real("divergence_threshold", self.divergence_threshold, low=0.0, low_open=True)
        put(self, "divergence_threshold", threshold)
        if self.schedule is not None:
            put(self, "schedule", make_schedule(self.schedule))

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def multiplier(self, iteration: int) -> float:
        """s(iteration): 1 without a schedule."""
        if self.schedule is None:
            return 1.0
        return schedule_value(typing.cast(Callable[[int], float], self.schedule), iteration)


class StochasticRunOptions(TypedDict, total=False):
    """The :class:`RunSettings` fields a solver without a stopping tolerance accepts as keywords."""

    max_iterations: int
    record_every: int | None
    time_limit: float | None
    divergence_threshold: float
    schedule: ScheduleLike | None


class RunOptions(StochasticRunOptions, total=False):
    """The :class:`RunSettings` fields accepted as keywords by every solver constructor."""

    tolerance: float


_FIELDS = tuple(f.name for f in dataclasses.fields(RunSettings))


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


@dataclasses.dataclass
class Run:
    """One call of :meth:`NonconvexSolver.run`: what the hooks see.

    Attributes:
        objective: the objective.
        params: the live parameter tensors the optimizer moves in place.
        generator: the random stream (None for a deterministic run without one).
        oracle: the gradient oracle (full batch, minibatches, label noise).
        optimizer: the ``torch.optim`` optimizer built by :meth:`NonconvexSolver._optimizer`.
        iteration: the number of steps taken.
        state: solver-specific scratch space (e.g. the power iteration's warm start).
    """

    objective: Objective
    params: Params
    generator: torch.Generator | None
    oracle: GradientOracle
    optimizer: torch.optim.Optimizer | None = None
    iteration: int = 0
    state: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def last_step(self) -> int:
        """The index t (from 0) of the last step taken (0 before the first)."""
        return max(self.iteration - 1, 0)


_NO_LOSS = torch.zeros(())
_T = typing.TypeVar("_T")


class _Setting(typing.Generic[_T]):
    """A solver attribute that reads (and writes, validated) one field of the solver's ``settings``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, solver: Any, owner: type | None = None) -> _T:
        return self if solver is None else getattr(solver.settings, self.name)  # type: ignore[return-value]

    def __set__(self, solver: Any, value: _T) -> None:
        solver.settings = solver.settings.replace(**{self.name: value})


class NonconvexSolver(abc.ABC):
    """Base class: validation, the one loop that steps the optimizer, stopping rules and the history.

    Subclasses validate their hyperparameters in ``__init__`` (storing them in ``self._hyperparameters``)
    and implement :meth:`_optimizer` (the ``torch.optim`` optimizer over the live parameters, with the
    step size as its groups' ``lr``); they may override :meth:`_gradient` (what the closure puts into
    ``.grad``), :meth:`_oracle`, :meth:`_extras` and :meth:`_final`.

    Args:
        settings: the :class:`RunSettings` (default: the class's ``default_settings``).
        options: :class:`RunSettings` fields given as keywords (``max_iterations=``, ``tolerance=``,
            ``record_every=``, ``time_limit=``, ``divergence_threshold=``, ``schedule=``); they override
            ``settings``. Solvers without a stopping tolerance (``uses_tolerance = False``) reject
            ``tolerance``.

    Raises:
        InputTypeError: on an unknown keyword or a ``settings`` that is not a :class:`RunSettings`.
        InputDataError: on an out-of-range setting.
    """

    #: registry name.
    name: ClassVar[str]
    #: the settings used when none are given.
    default_settings: ClassVar[RunSettings] = RunSettings()
    #: False for solvers that are stochastic by construction: no ``tolerance`` (the run never converges).
    uses_tolerance: ClassVar[bool] = True
    #: True when every closure call draws its own minibatch (inner loops, replicas); else one per step.
    _fresh_draws: ClassVar[bool] = False
    #: True when the direction norm is the displacement / step size rather than the gradient in ``.grad``.
    _displacement_direction: ClassVar[bool] = False
    #: the minibatch size b (None: full batch); solvers that sample measurements set it.
    batch_size: int | None = None
    #: the step size eta (the ``lr`` of the optimizer before the schedule).
    step_size: float

    def __init__(self, *, settings: RunSettings | None = None, **options: Any) -> None:
        allowed = _FIELDS if self.uses_tolerance else tuple(f for f in _FIELDS if f != "tolerance")
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise InputTypeError(
                f"{type(self).__name__} got unexpected keyword argument(s) {', '.join(unknown)}; the run "
                f"settings it accepts are {', '.join(allowed)}."
            )
        if settings is not None and not isinstance(settings, RunSettings):
            raise InputTypeError(f"settings must be a RunSettings or None; got {type(settings).__name__}.")
        base = settings if settings is not None else self.default_settings
        if not self.uses_tolerance:
            options["tolerance"] = 0.0
        self.settings = base.replace(**options) if options else base
        self._hyperparameters: dict[str, Any] = {}

    # ---- description ------------------------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        """True if the solver draws random numbers (it then requires a generator)."""
        return self.batch_size is not None

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments and the run settings (a copy)."""
        settings = {name: getattr(self.settings, name) for name in _FIELDS}
        if not self.uses_tolerance:
            del settings["tolerance"]
        if settings["schedule"] is None:
            del settings["schedule"]
        return {**self._hyperparameters, **settings}

    # the settings as attributes (read and write; a write replaces ``settings``, validated)
    max_iterations: _Setting[int] = _Setting()
    tolerance: _Setting[float] = _Setting()
    record_every: _Setting[int | None] = _Setting()
    time_limit: _Setting[float | None] = _Setting()
    divergence_threshold: _Setting[float] = _Setting()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
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
        settings = self.settings
        start = time.perf_counter()
        run = Run(objective, params, generator, self._oracle(objective))
        optimizer = run.optimizer = self._optimizer(list(params), run)
        base_rates = [float(group["lr"]) for group in optimizer.param_groups]
        every = settings.record_every or max(1, settings.max_iterations // DEFAULT_RECORDS)
        history = [self._record(run, params, start)]
        status, message, iteration = Status.MAX_ITERATIONS, "", 0
        for iteration in range(1, settings.max_iterations + 1):
            factor = self._rate_factor(iteration - 1)
            for group, rate in zip(optimizer.param_groups, base_rates, strict=True):
                group["lr"] = rate * factor
            before = tuple(p.clone() for p in params)
            optimizer.step(self._closure(run, iteration - 1))  # type: ignore[arg-type]
            run.iteration = iteration
            norm = float(total_norm(params))
            if not math.isfinite(norm) or norm > settings.divergence_threshold:
                status = Status.DIVERGED
                message = (
                    f"iterate {iteration} has norm {norm:.3g} (threshold "
                    f"{settings.divergence_threshold:.3g}); returning the last finite iterate. "
                    "Try a smaller step_size."
                )
                with torch.no_grad():
                    for p, old in zip(params, before, strict=True):
                        p.copy_(old)
                iteration = run.iteration = iteration - 1
                break
            direction_norm = self._direction_norm(run, before, factor)
            if direction_norm <= settings.tolerance:
                status = Status.CONVERGED
                message = f"descent direction norm {direction_norm:.3g} <= tolerance {settings.tolerance:g}"
                break
            if settings.time_limit is not None and time.perf_counter() - start > settings.time_limit:
                status = Status.TIME_LIMIT
                message = f"time limit {settings.time_limit:g} s reached after {iteration} iterations"
                break
            if iteration % every == 0 or iteration == settings.max_iterations:
                history.append(self._record(run, params, start))
        else:
            message = f"{settings.max_iterations} iterations"
        for p in params:
            p.grad = None
        final = self._final(run, params)
        if int(history[-1]["iteration"]) != iteration or final is not params:
            history.append(self._record(run, final, start))
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

    def _rate_factor(self, iteration: int) -> float:
        """The step-size multiplier of step ``iteration`` (from 0): the schedule's s(t)."""
        return self.settings.multiplier(iteration)

    def _closure(self, run: Run, iteration: int) -> Callable[[], torch.Tensor]:
        """The closure of step ``iteration``: it puts :meth:`_gradient` at the current params into ``.grad``.

        One minibatch (and label noise) is drawn per step and shared by every call of the closure in that
        step (SAM's two gradients), unless ``_fresh_draws`` asks for one per call (inner loops, replicas).
        """
        oracle, generator = run.oracle, run.generator
        fixed = None
        if not self._fresh_draws:
            fixed = oracle.draw(generator, noise_factor=self.noise_factor(iteration))

        def closure() -> torch.Tensor:
            draw = fixed if fixed is not None else oracle.draw(generator)
            for p, g in zip(run.params, self._gradient(run, run.params, draw), strict=True):
                p.grad = g
            return _NO_LOSS

        return closure

    def _direction_norm(self, run: Run, before: Params, factor: float) -> float:
        """The norm the stopping rule tests (inf when the rule does not apply)."""
        if self.stochastic or self.settings.tolerance == 0.0:
            return math.inf
        if self._displacement_direction:
            rate = self.step_size * factor
            moved = tuple(b - p for b, p in zip(before, run.params, strict=True))
            return float(total_norm(moved)) / rate if rate > 0 else math.inf
        grads = tuple(torch.zeros_like(p) if p.grad is None else p.grad for p in run.params)
        return float(total_norm(grads))

    def _record(self, run: Run, params: Params, start: float) -> Mapping[str, float]:
        objective = run.objective
        with torch.no_grad():
            traces = objective.block_traces(params)
            scaled = sum(w * float(t) for w, t in zip(objective.block_weights, traces, strict=True))
            record = {
                "iteration": float(run.iteration),
                "time": time.perf_counter() - start,
                "loss": float(objective.value(params)),
                "scaled_trace": scaled,
                "hessian_trace": sum(float(t) for t in traces),
                "gradient_norm": float(total_norm(objective.grad(params))),
                "parameter_norm": float(total_norm(params)),
            }
            record.update(self._extras(run, params))
        return record

    # ---- hooks ------------------------------------------------------------------------------------
    def _oracle(self, objective: Objective) -> GradientOracle:
        """The gradient oracle (checks that the solver fits the objective, e.g. b <= m)."""
        return GradientOracle(objective, batch_size=self.batch_size, owner=type(self).__name__)

    @abc.abstractmethod
    def _optimizer(self, params: list[torch.Tensor], run: Run) -> torch.optim.Optimizer:
        """The optimizer over ``params``, each group's ``lr`` the step size (the loop applies a schedule)."""

    def _gradient(self, run: Run, params: Params, draw: BatchDraw) -> Params:
        """The gradient the closure puts into ``.grad`` (default: the oracle's, for ``draw``)."""
        return run.oracle.gradient(params, draw)

    def noise_factor(self, iteration: int) -> float:
        """The label-noise multiplier sigma_t / sigma of step ``iteration`` (1: no annealing)."""
        return 1.0

    def _extras(self, run: Run, params: Params) -> dict[str, float]:
        """Solver-specific history entries."""
        return {}

    def _final(self, run: Run, params: Params) -> Params:
        """The parameters to return (default: the last iterate)."""
        return params
