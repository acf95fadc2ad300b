"""Step-size schedules (issue 16, item 7): values, torch's lr schedulers, every solver's schedule option."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from nonconvex_cases import make_generator, quadratic, sensing_objective

from flatminima.errors import InputDataError, InputTypeError
from flatminima.optim import (
    SCHEDULES,
    BurstSchedule,
    ConstantSchedule,
    CyclicSchedule,
    StepDecaySchedule,
    WarmRestartSchedule,
    make_schedule,
)
from flatminima.solvers.nonconvex import NONCONVEX_SOLVERS, GradientDescent

F64 = torch.float64


def test_schedule_values_on_known_iterations() -> None:
    assert [ConstantSchedule()(t) for t in (0, 1, 10**6)] == [1.0, 1.0, 1.0]
    cyclic = CyclicSchedule(half_period=4, minimum=0.5, maximum=2.5)
    assert [cyclic(t) for t in (0, 2, 4, 6, 8, 12, 16)] == pytest.approx([0.5, 1.5, 2.5, 1.5, 0.5, 2.5, 0.5])
    restarts = WarmRestartSchedule(period=4, period_factor=2, minimum=0.2)
    expected = [0.2 + 0.8 * (1 + math.cos(math.pi * k / n)) / 2 for n, k in ((4, 0), (4, 2), (8, 0), (8, 4))]
    assert [restarts(t) for t in (0, 2, 4, 8)] == pytest.approx(expected)  # restarts at t = 4 and t = 12
    assert restarts(12) == pytest.approx(1.0) and restarts(11) < 0.25
    burst = BurstSchedule(start=10, length=5, factor=3.0)
    assert [burst(t) for t in (9, 10, 14, 15)] == [1.0, 3.0, 3.0, 1.0]
    ramped = BurstSchedule(start=10, length=6, factor=5.0, ramp=4)
    assert [ramped(t) for t in (9, 10, 11, 13, 15, 16)] == [1.0, 2.0, 3.0, 5.0, 5.0, 1.0]
    assert set(SCHEDULES) == {"constant", "step_decay", "cyclic", "warm_restarts", "burst"}
    assert make_schedule("cyclic") == CyclicSchedule()


def test_step_decay_matches_multistep_lr_and_checks_its_arguments() -> None:
    base = 0.3
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = torch.zeros(2)
    sgd = torch.optim.SGD([w], lr=base)
    decay = StepDecaySchedule((3, 5, 5, 9), 0.5)  # a repeated milestone applies the factor twice
    torch_decay = torch.optim.lr_scheduler.MultiStepLR(sgd, milestones=[3, 5, 5, 9], gamma=0.5)
    assert _lrs(sgd, torch_decay, 12) == pytest.approx([base * decay(t) for t in range(12)])
    assert make_schedule("step_decay", milestones=(2,), factor=0.25)(2) == 0.25
    with pytest.raises(
        InputDataError, match=r"^milestones must be non-decreasing; got milestones\[1\]=2 after 4\.$"
    ):
        StepDecaySchedule((4, 2))
    with pytest.raises(
        InputDataError, match=r"^factor must satisfy 0\.0 < factor <= 1\.0; got factor=0\.0\.$"
    ):
        StepDecaySchedule((1,), 0.0)
    with pytest.raises(InputDataError, match=r"^milestones\[0\] must be >= 0; got milestones\[0\]=-1\.$"):
        StepDecaySchedule((-1,))


def _lrs(optimizer: torch.optim.Optimizer, scheduler: Any, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_match_torch_lr_schedulers_and_work_with_lambda_lr() -> None:
    base = 0.2
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = torch.zeros(2)
    sgd = torch.optim.SGD([w], lr=base)
    cyclic = CyclicSchedule(half_period=3, minimum=0.25, maximum=1.0)
    torch_cyclic = torch.optim.lr_scheduler.CyclicLR(
        sgd, base_lr=0.25 * base, max_lr=base, step_size_up=3, cycle_momentum=False
    )
    assert _lrs(sgd, torch_cyclic, 14) == pytest.approx([base * cyclic(t) for t in range(14)])
    sgd = torch.optim.SGD([w], lr=base)
    restarts = WarmRestartSchedule(period=3, period_factor=2, minimum=0.1)
    torch_restarts = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        sgd, T_0=3, T_mult=2, eta_min=0.1 * base
    )
    assert _lrs(sgd, torch_restarts, 20) == pytest.approx([base * restarts(t) for t in range(20)])
    for schedule in (cyclic, restarts, BurstSchedule(start=2, length=3, factor=4.0, ramp=2)):
        sgd = torch.optim.SGD([w], lr=base)
        lambda_lr = torch.optim.lr_scheduler.LambdaLR(sgd, schedule)
        assert _lrs(sgd, lambda_lr, 12) == pytest.approx([base * schedule(t) for t in range(12)])


@pytest.mark.parametrize("name", sorted(NONCONVEX_SOLVERS))
def test_a_constant_schedule_equals_no_schedule(name: str) -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    cls = NONCONVEX_SOLVERS[name]
    plain = cls(max_iterations=12, record_every=4).run(objective, init, generator=make_generator(2))
    for schedule in (ConstantSchedule(), "constant", lambda t: 1.0):
        scheduled = cls(max_iterations=12, record_every=4, schedule=schedule)
        result = scheduled.run(objective, init, generator=make_generator(2))
        assert all(torch.equal(a, b) for a, b in zip(plain.params, result.params, strict=True))
        assert "schedule" in scheduled.hyperparameters and "schedule" not in plain.hyperparameters


def test_gd_with_a_schedule_takes_the_scaled_steps() -> None:
    objective, A, b = quadratic(3)
    w = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=F64)
    schedule = BurstSchedule(start=2, length=3, factor=4.0, ramp=2)
    eta = 0.02
    result = GradientDescent(step_size=eta, schedule=schedule, max_iterations=7).run(
        objective, objective.split(w)
    )
    for t in range(7):
        w = w - eta * schedule(t) * (A @ w - b)
    assert torch.allclose(torch.cat(result.params), w, rtol=1e-13, atol=1e-13)


def test_large_step_gd_multiplies_warmup_and_schedule() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    solver = NONCONVEX_SOLVERS["large_step_gd"](
        step_size=0.1, warmup_iterations=4, max_iterations=6, record_every=1, schedule=lambda t: 0.5
    )
    steps = solver.run(objective, init).trace("step_size")[1]
    assert steps == pytest.approx([0.1 * 0.5 * min(1.0, (t + 1) / 4) for t in [0, 0, 1, 2, 3, 4, 5]])


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: make_schedule("triangle"), InputDataError, r"got schedule='triangle'\.$"),
        (lambda: make_schedule(lambda t: 1.0, start=3), InputTypeError, r"with parameters \['start'\]\.$"),
        (
            lambda: CyclicSchedule(half_period=0),
            InputDataError,
            r"^half_period must be >= 1; got half_period=0\.$",
        ),
        (
            lambda: CyclicSchedule(minimum=2.0, maximum=1.0),
            InputDataError,
            r"^maximum must satisfy 2\.0 <= maximum; got maximum=1\.0\.$",
        ),
        (lambda: WarmRestartSchedule(period_factor=0), InputDataError, r"^period_factor must be >= 1"),
        (
            lambda: WarmRestartSchedule(minimum=1.5),
            InputDataError,
            r"^minimum must satisfy 0\.0 <= minimum <= 1\.0",
        ),
        (
            lambda: BurstSchedule(factor=0.0),
            InputDataError,
            r"^factor must satisfy 0\.0 < factor; got factor=0\.0\.$",
        ),
        (lambda: BurstSchedule(ramp=-1), InputDataError, r"^ramp must be >= 0; got ramp=-1\.$"),
        (
            lambda: make_schedule("burst", length=-2),
            InputDataError,
            r"^length must be >= 0; got length=-2\.$",
        ),
    ],
)
def test_schedule_errors(factory: Callable[[], Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


def test_a_negative_multiplier_is_an_error_at_run_time() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    solver = GradientDescent(max_iterations=5, schedule=lambda t: 1.0 if t < 2 else -0.5)
    with pytest.raises(
        InputDataError, match=r"^schedule\(2\) must be a finite step-size multiplier >= 0; got -0\.5\.$"
    ):
        solver.run(objective, init)
