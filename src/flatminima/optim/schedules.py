r"""Step-size schedules, monotone or not: callables iteration t (from 0) -> multiplier s(t) >= 0.

The step at iteration t is eta_t = eta s(t). Every schedule here is a plain callable, so it serves three
ways: as ``schedule=`` of every nonconvex solver (:class:`~flatminima.solvers.nonconvex.RunSettings`), as
``torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)`` for any ``torch.optim`` optimizer (LambdaLR
multiplies each group's initial rate by ``schedule(t)``), or by hand.

* :class:`ConstantSchedule`: s(t) = 1.
* :class:`StepDecaySchedule`: s(t) = factor ** (milestones passed): the monotone baseline (torch's
  ``MultiStepLR``).
* :class:`CyclicSchedule` (triangular cyclical rates, Smith 2017): s rises linearly from ``minimum`` to
  ``maximum`` over ``half_period`` iterations and falls back over the next ``half_period``;
  with c = floor(1 + t / (2 h)) and x = |t / h - 2 c + 1|, s(t) = minimum + (maximum - minimum) max(0, 1 - x).
* :class:`WarmRestartSchedule` (SGDR, Loshchilov & Hutter 2017): cosine annealing restarted every
  T_i iterations, T_0 = ``period``, T_{i+1} = ``period_factor`` T_i;
  s(t) = minimum + (1 - minimum) (1 + cos(pi T_cur / T_i)) / 2, T_cur the iterations since the last restart
  (torch's ``CosineAnnealingWarmRestarts`` with eta_min = minimum eta).
* :class:`BurstSchedule`: s(t) = ``factor`` for ``start`` <= t < ``start + length``, 1 otherwise
  (optionally reached by a linear ramp): one large-rate burst. A minimum theta* is linearly stable for GD
  only if lambda_max(grad^2 f(theta*)) <= 2/eta, so a burst to eta' = factor eta makes every minimum
  sharper than 2/eta' unstable; the iterate leaves it and, once the rate drops back, settles near a
  minimum that the large rate tolerated.

Non-monotonic schedules are the flatness argument of Seong et al. (2018): raising the rate again after it
has decayed lets the iterate escape minima that are sharp on the scale of the raised rate, guiding it
towards flatter regions.

References:
    S. Seong, Y. Lee, Y. Kee, D. Han, J. Kim. Towards flatter loss surface via nonmonotonic learning rate
    scheduling. UAI 2018.
    L. N. Smith. Cyclical learning rates for training neural networks. WACV 2017.
    I. Loshchilov, F. Hutter. SGDR: stochastic gradient descent with warm restarts. ICLR 2017.
    J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar. Gradient descent on neural networks typically
    occurs at the edge of stability. ICLR 2021.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import InputDataError, InputTypeError

#: anything accepted where a schedule is expected: a callable t -> s(t), or a name of :data:`SCHEDULES`.
ScheduleLike = Callable[[int], float] | str


@dataclasses.dataclass(frozen=True)
class ConstantSchedule:
    """s(t) = 1: the constant step (a solver with it equals the solver without a schedule).

    Example:
        >>> ConstantSchedule()(7)
        1.0
    """

    def __call__(self, iteration: int) -> float:
        """Return 1.0."""
        return 1.0


@dataclasses.dataclass(frozen=True)
class CyclicSchedule:
    r"""Triangular cyclical step sizes (Smith 2017): up from ``minimum`` to ``maximum`` and back.

    s(t) = minimum + (maximum - minimum) max(0, 1 - |t / h - 2 c + 1|), c = floor(1 + t / (2 h)), h =
    ``half_period``: s(0) = minimum, s(h) = maximum, s(2 h) = minimum, period 2 h.

    Args:
        half_period: h >= 1 iterations from the bottom to the top of a cycle.
        minimum: s at the bottom, >= 0.
        maximum: s at the top, >= minimum.

    Raises:
        InputDataError: if ``half_period < 1``, ``minimum < 0`` or ``maximum < minimum``.

    Example:
        >>> s = CyclicSchedule(half_period=2, minimum=1.0, maximum=3.0)
        >>> [s(t) for t in range(5)]
        [1.0, 2.0, 3.0, 2.0, 1.0]

    References:
        Smith, Cyclical learning rates for training neural networks (WACV 2017), the triangular policy.
    """

    half_period: int = 50
    minimum: float = 0.1
    maximum: float = 1.0

    def __post_init__(self) -> None:
        check_int_in_range("half_period", self.half_period, low=1)
        minimum = check_real("minimum", self.minimum, low=0.0)
        object.__setattr__(self, "minimum", minimum)
        object.__setattr__(self, "maximum", check_real("maximum", self.maximum, low=minimum))

    def __call__(self, iteration: int) -> float:
        """Return s(iteration)."""
        h = self.half_period
        cycle = math.floor(1 + iteration / (2 * h))
        x = abs(iteration / h - 2 * cycle + 1)
        return self.minimum + (self.maximum - self.minimum) * max(0.0, 1.0 - x)


@dataclasses.dataclass(frozen=True)
class WarmRestartSchedule:
    r"""Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017).

    s(t) = minimum + (1 - minimum) (1 + cos(pi T_cur / T_i)) / 2, where the i-th run lasts
    T_i = ``period`` ``period_factor``^i iterations and T_cur counts the iterations since its start: s = 1
    right after each restart and decays towards ``minimum``.

    Args:
        period: T_0 >= 1.
        period_factor: T_mult >= 1 (integer), the growth of the period after each restart.
        minimum: the floor of s, in [0, 1].

    Raises:
        InputDataError: on a period < 1, a period factor < 1 or a minimum outside [0, 1].

    Example:
        >>> s = WarmRestartSchedule(period=4)
        >>> [round(s(t), 3) for t in range(6)]
        [1.0, 0.854, 0.5, 0.146, 1.0, 0.854]

    References:
        Loshchilov & Hutter, SGDR: stochastic gradient descent with warm restarts (ICLR 2017).
    """

    period: int = 100
    period_factor: int = 1
    minimum: float = 0.0

    def __post_init__(self) -> None:
        check_int_in_range("period", self.period, low=1)
        check_int_in_range("period_factor", self.period_factor, low=1)
        object.__setattr__(self, "minimum", check_real("minimum", self.minimum, low=0.0, high=1.0))

    def __call__(self, iteration: int) -> float:
        """Return s(iteration)."""
        length, elapsed = self.period, iteration
        while elapsed >= length:
            elapsed -= length
            length *= self.period_factor
        return self.minimum + (1.0 - self.minimum) * (1.0 + math.cos(math.pi * elapsed / length)) / 2.0


@dataclasses.dataclass(frozen=True)
class BurstSchedule:
    r"""One large-rate burst: s(t) = ``factor`` for start <= t < start + length, 1 otherwise.

    With ``ramp`` = R > 0 the burst rises linearly instead of jumping: s(t) = 1 + (factor - 1)
    min(1, (t - start + 1) / R) inside the burst. An abrupt jump from a sharp minimum with
    eta' lambda_max well above 2 can diverge; along a ramp the sharpness can follow the rising rate down
    to about 2 / eta' (gradient descent at the edge of stability, Cohen et al. 2021).

    Args:
        start: the first iteration of the burst (>= 0).
        length: its number of iterations (>= 0; 0: no burst).
        factor: s during the burst (> 0; > 1 for a burst, < 1 for a pause).
        ramp: R >= 0 iterations of linear rise (0: abrupt).

    Raises:
        InputDataError: on a negative start, length or ramp, or a factor <= 0.

    Example:
        >>> s = BurstSchedule(start=2, length=2, factor=5.0)
        >>> [s(t) for t in range(5)]
        [1.0, 1.0, 5.0, 5.0, 1.0]
        >>> [BurstSchedule(start=1, length=3, factor=5.0, ramp=2)(t) for t in range(5)]
        [1.0, 3.0, 5.0, 5.0, 1.0]

    References:
        Seong et al., Towards flatter loss surface via nonmonotonic learning rate scheduling (UAI 2018).
    """

    start: int = 500
    length: int = 100
    factor: float = 4.0
    ramp: int = 0

    def __post_init__(self) -> None:
        check_int_in_range("start", self.start, low=0)
        check_int_in_range("length", self.length, low=0)
        object.__setattr__(self, "factor", check_real("factor", self.factor, low=0.0, low_open=True))
        check_int_in_range("ramp", self.ramp, low=0)

    def __call__(self, iteration: int) -> float:
        """Return s(iteration)."""
        if not self.start <= iteration < self.start + self.length:
            return 1.0
        if self.ramp == 0:
            return self.factor
        return 1.0 + (self.factor - 1.0) * min(1.0, (iteration - self.start + 1) / self.ramp)


@dataclasses.dataclass(frozen=True)
class StepDecaySchedule:
    """s(t) = factor ** (number of milestones <= t): the classic monotone step decay.

    torch's ``MultiStepLR(optimizer, milestones, gamma=factor)``.

    Args:
        milestones: the iterations at which the rate is multiplied by ``factor`` (non-negative integers,
            non-decreasing; a repeated milestone applies the factor twice, as in ``MultiStepLR``).
        factor: the multiplier per milestone, in (0, 1].

    Raises:
        InputDataError: on a negative or decreasing milestone, or ``factor`` outside (0, 1].
        InputTypeError: if a milestone is not an integer.

    Example:
        >>> [StepDecaySchedule((2, 3), 0.5)(t) for t in range(4)]
        [1.0, 1.0, 0.5, 0.25]
    """

    milestones: tuple[int, ...] = (100, 150)
    factor: float = 0.1

    def __post_init__(self) -> None:
        milestones = tuple(self.milestones)
        for index, milestone in enumerate(milestones):
            check_int_in_range(f"milestones[{index}]", milestone, low=0)
            if index and milestone < milestones[index - 1]:
                raise InputDataError(
                    f"milestones must be non-decreasing; got milestones[{index}]={milestone} after "
                    f"{milestones[index - 1]}."
                )
        object.__setattr__(self, "milestones", milestones)
        object.__setattr__(
            self, "factor", check_real("factor", self.factor, low=0.0, high=1.0, low_open=True)
        )

    def __call__(self, iteration: int) -> float:
        """Return s(iteration)."""
        return float(self.factor ** sum(iteration >= m for m in self.milestones))


#: name -> schedule class (every class has defaults, so a name alone is a schedule).
SCHEDULES: dict[str, type[Any]] = {
    "constant": ConstantSchedule,
    "step_decay": StepDecaySchedule,
    "cyclic": CyclicSchedule,
    "warm_restarts": WarmRestartSchedule,
    "burst": BurstSchedule,
}


def make_schedule(schedule: Any, **parameters: Any) -> Callable[[int], float]:
    """Return a schedule: ``schedule`` itself if callable, else the named class built with ``parameters``.

    Args:
        schedule: a callable t -> s(t) (returned as it is; ``parameters`` must then be empty) or a name of
            :data:`SCHEDULES`.
        parameters: the named schedule's arguments (e.g. ``half_period=20`` for ``"cyclic"``).

    Raises:
        InputDataError: on an unknown name (or bad parameters of the named schedule).
        InputTypeError: if ``schedule`` is neither callable nor a string, or parameters come with a callable.

    Example:
        >>> make_schedule("burst", start=1, length=1, factor=3.0)(1)
        3.0
    """
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            names = ", ".join(repr(n) for n in sorted(SCHEDULES))
            raise InputDataError(f"schedule must be one of {names}; got schedule={schedule!r}.")
        built: Callable[[int], float] = SCHEDULES[schedule](**parameters)
        return built
    if not callable(schedule) or parameters:
        raise InputTypeError(
            "schedule must be a callable iteration -> step-size multiplier or a schedule name "
            f"({', '.join(sorted(SCHEDULES))}) without extra parameters; got {type(schedule).__name__}"
            + (f" with parameters {sorted(parameters)}." if parameters else ".")
        )
    return schedule


def schedule_value(schedule: Callable[[int], float], iteration: int) -> float:
    """Return s(iteration) as a float, checked to be finite and >= 0.

    Raises:
        InputDataError: naming the iteration and the value, when s(t) is negative or not finite.
    """
    value = schedule(iteration)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InputDataError(
            f"schedule({iteration}) must be a finite step-size multiplier >= 0; got {value!r}."
        )
    return float(value)
