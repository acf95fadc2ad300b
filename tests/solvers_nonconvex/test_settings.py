"""One implementation of each algorithm: the solvers run the flatminima.optim optimizers, with their
stopping and recording settings in one dataclass (RunSettings); the old keywords keep working."""

from __future__ import annotations

import doctest
from collections.abc import Callable
from typing import Any

import pytest
import torch
from nonconvex_cases import make_generator, sensing_objective

from flatminima.errors import InputDataError, InputTypeError
from flatminima.optim import SWA
from flatminima.solvers.nonconvex import (
    NONCONVEX_SOLVERS,
    EntropySGD,
    GradientDescent,
    RunSettings,
    StochasticGradientDescent,
    StochasticWeightAveraging,
)


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_keywords_are_shorthands_for_the_settings() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    loose = GradientDescent(step_size=0.05, max_iterations=30, record_every=5, tolerance=0.0)
    settings = RunSettings(max_iterations=30, record_every=5, tolerance=0.0)
    packed = GradientDescent(step_size=0.05, settings=settings)
    assert loose.settings == packed.settings == settings
    assert loose.hyperparameters == packed.hyperparameters
    assert loose.max_iterations == 30 and loose.record_every == 5 and loose.tolerance == 0.0
    assert loose.time_limit is None and loose.divergence_threshold == 1e6
    a, b = loose.run(objective, init), packed.run(objective, init)
    assert _same(a.params, b.params) and [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    # keywords override the given settings; the settings object is not changed
    override = GradientDescent(settings=settings, max_iterations=7)
    assert override.max_iterations == 7 and settings.max_iterations == 30
    assert override.run(objective, init).iterations == 7


def test_setting_attributes_read_and_write_the_settings() -> None:
    solver = GradientDescent(max_iterations=10)
    solver.max_iterations = 4
    solver.time_limit = 2.5
    assert solver.settings == RunSettings(max_iterations=4, time_limit=2.5)
    assert solver.hyperparameters["max_iterations"] == 4
    with pytest.raises(InputDataError, match=r"^max_iterations must be >= 1; got max_iterations=0\.$"):
        solver.max_iterations = 0
    assert solver.max_iterations == 4


def test_class_defaults_and_hyperparameter_records() -> None:
    assert EntropySGD().max_iterations == 200 and GradientDescent().max_iterations == 1000
    # solvers without a stopping rule keep no tolerance in their record (as before the settings class)
    assert "tolerance" not in StochasticGradientDescent().hyperparameters
    assert StochasticGradientDescent().tolerance == 0.0
    record = GradientDescent(step_size=0.1).hyperparameters
    assert record == {
        "step_size": 0.1,
        "momentum": 0.0,
        "nesterov": False,
        "max_iterations": 1000,
        "tolerance": 1e-10,
        "record_every": None,
        "time_limit": None,
        "divergence_threshold": 1e6,
    }


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (
            lambda: RunSettings(max_iterations=0),
            InputDataError,
            r"^max_iterations must be >= 1; got max_iterations=0\.$",
        ),
        (lambda: RunSettings(tolerance=-1.0), InputDataError, r"^tolerance must satisfy 0\.0 <= tolerance"),
        (
            lambda: RunSettings(record_every=0),
            InputDataError,
            r"^record_every must be >= 1; got record_every=0\.$",
        ),
        (lambda: RunSettings(time_limit=0), InputDataError, r"^time_limit must satisfy 0\.0 < time_limit"),
        (
            lambda: RunSettings(divergence_threshold=-1.0),
            InputDataError,
            r"^divergence_threshold must satisfy 0\.0 < divergence_threshold; "
            r"got divergence_threshold=-1\.0\.$",
        ),
        (
            lambda: RunSettings(schedule="sawtooth"),
            InputDataError,
            r"^schedule must be one of 'burst', 'constant', 'cyclic', 'step_decay', 'warm_restarts'; "
            r"got schedule='sawtooth'\.$",
        ),
        (lambda: RunSettings(schedule=3), InputTypeError, r"^schedule must be a callable .*; got int\.$"),
        (
            lambda: GradientDescent(settings={"max_iterations": 3}),
            InputTypeError,
            r"^settings must be a RunSettings or None; got dict\.$",
        ),
        (
            lambda: GradientDescent(max_iter=3),
            InputTypeError,
            r"^GradientDescent got unexpected keyword argument\(s\) max_iter; "
            r"the run settings it accepts are ",
        ),
        (
            lambda: StochasticGradientDescent(tolerance=1e-3),
            InputTypeError,
            r"^StochasticGradientDescent got unexpected keyword argument\(s\) tolerance; .* max_iterations, "
            r"record_every, time_limit, divergence_threshold, schedule\.$",
        ),
    ],
)
def test_settings_errors(factory: Callable[[], Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match) as caught:
        factory()
    assert "\n" not in str(caught.value)


def test_swa_optimizer_uses_torch_swa_utils_averaging() -> None:
    """The SWA wrapper's average equals torch.optim.swa_utils.AveragedModel over the same snapshots."""
    g = make_generator(2)
    x, y = torch.randn(20, 3, generator=g), torch.randn(20, 1, generator=g)
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    averaged = torch.optim.swa_utils.AveragedModel(model)
    swa = SWA(torch.optim.SGD(model.parameters(), lr=0.1), swa_start=2, swa_frequency=2)
    for _ in range(9):
        swa.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        swa.step()
        if swa.snapshot_due():
            averaged.update_parameters(model)
    assert swa.num_averaged == int(averaged.n_averaged) == 4
    for mine, theirs in zip(swa.averaged_parameters(), averaged.module.parameters(), strict=True):
        assert torch.equal(mine, theirs.detach())


def test_swa_solver_average_is_the_swa_optimizer_average() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    solver = StochasticWeightAveraging(step_size=0.02, batch_size=None, swa_start=2, max_iterations=8)
    result = solver.run(objective, init)
    params = [p.clone() for p in init]
    swa = SWA(torch.optim.SGD(params, lr=0.02), swa_start=2)
    for _ in range(8):
        for p, grad in zip(params, objective.grad(tuple(params)), strict=True):
            p.grad = grad
        swa.step()
    assert _same(result.params, tuple(swa.averaged_parameters()))


@pytest.mark.parametrize("name", sorted(NONCONVEX_SOLVERS))
def test_every_solver_accepts_the_settings_object(name: str) -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    cls = NONCONVEX_SOLVERS[name]
    packed = cls(settings=RunSettings(max_iterations=6, record_every=3))
    loose = cls(max_iterations=6, record_every=3)
    a = packed.run(objective, init, generator=make_generator(4))
    b = loose.run(objective, init, generator=make_generator(4))
    assert _same(a.params, b.params) and a.iterations == 6
    assert [int(r["iteration"]) for r in a.history][:3] == [0, 3, 6]
    assert all(p.grad is None for p in a.params)  # the optimizer's gradients do not leak into the result


@pytest.mark.parametrize(
    "name",
    [
        "flatminima.optim.schedules",
        "flatminima.optim.replicated",
        "flatminima.solvers.nonconvex.base",
        "flatminima.solvers.nonconvex.replicated",
    ],
)
def test_new_docstring_examples(name: str, docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples(name)
    assert result.attempted > 0 and result.failed == 0
