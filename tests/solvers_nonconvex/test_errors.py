"""Bad input gives one-line errors from flatminima.errors that name the argument and show the value."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from nonconvex_cases import make_generator, quadratic, sensing_objective

from flatminima.errors import InputDataError, InputTypeError, SolverError
from flatminima.optim import SAM, SWA, EntropySGD, hutchinson_trace_penalty, perturb_labels, sam_perturbation
from flatminima.solvers.nonconvex import (
    NONCONVEX_SOLVERS,
    GradientDescent,
    LabelNoiseSGD,
    SharpnessAwareMinimization,
    StochasticGradientDescent,
    StochasticWeightAveraging,
)

EntropySolver = NONCONVEX_SOLVERS["entropy_sgd"]


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SharpnessAwareMinimization(rho=-0.1), r"rho must satisfy 0\.0 <= rho; got rho=-0\.1\."),
        (lambda: NONCONVEX_SOLVERS["asam"](rho=-1.0), r"rho must satisfy 0\.0 <= rho; got rho=-1\.0\."),
        (lambda: NONCONVEX_SOLVERS["asam"](eta=-1.0), r"eta must satisfy 0\.0 <= eta; got eta=-1\.0\."),
        (
            lambda: GradientDescent(step_size=-0.1),
            r"step_size must satisfy 0\.0 < step_size; got step_size=-0\.1\.",
        ),
        (
            lambda: GradientDescent(step_size=0.0),
            r"step_size must satisfy 0\.0 < step_size; got step_size=0\.0\.",
        ),
        (lambda: StochasticGradientDescent(step_size=-1.0), r"step_size must satisfy 0\.0 < step_size"),
        (
            lambda: LabelNoiseSGD(noise_level=-0.5),
            r"noise_level must satisfy 0\.0 <= noise_level; got noise_level=-0\.5\.",
        ),
        (lambda: EntropySolver(thermal_noise=-1e-3), r"thermal_noise must satisfy 0\.0 <= thermal_noise"),
        (lambda: EntropySolver(inner_step_size=-1.0), r"inner_step_size must satisfy 0\.0 < inner_step_size"),
        (
            lambda: EntropySolver(averaging=1.5),
            r"averaging must satisfy 0\.0 < averaging <= 1\.0; got averaging=1\.5\.",
        ),
        (
            lambda: EntropySolver(gamma=0.5, gamma_max=0.1),
            r"gamma_max must be >= gamma = 0\.5; got gamma_max=0\.1\.",
        ),
        (lambda: EntropySolver(inner_steps=0), r"inner_steps must be >= 1; got inner_steps=0\."),
        (
            lambda: GradientDescent(momentum=1.0),
            r"momentum must satisfy 0\.0 <= momentum < 1\.0; got momentum=1\.0\.",
        ),
        (lambda: GradientDescent(max_iterations=0), r"max_iterations must be >= 1; got max_iterations=0\."),
        (lambda: GradientDescent(tolerance=-1.0), r"tolerance must satisfy 0\.0 <= tolerance"),
        (lambda: StochasticGradientDescent(batch_size=0), r"batch_size must be >= 1; got batch_size=0\."),
        (lambda: SharpnessAwareMinimization(batch_size=0), r"batch_size must be >= 1; got batch_size=0\."),
        (
            lambda: LabelNoiseSGD(distribution="uniform"),
            r"distribution must be one of 'rademacher', 'gaussian'; got distribution='uniform'\.",
        ),
        (lambda: LabelNoiseSGD(anneal_iterations=-1), r"anneal_iterations must be >= 0"),
        (lambda: StochasticWeightAveraging(swa_start=-1), r"swa_start must be >= 0; got swa_start=-1\."),
        (lambda: StochasticWeightAveraging(swa_frequency=0), r"swa_frequency must be >= 1"),
        (lambda: NONCONVEX_SOLVERS["trace_penalty"](penalty=-1.0), r"penalty must satisfy 0\.0 <= penalty"),
        (lambda: NONCONVEX_SOLVERS["hutchinson_penalty"](num_probes=0), r"num_probes must be >= 1"),
        (lambda: NONCONVEX_SOLVERS["large_step_gd"](warmup_iterations=-2), r"warmup_iterations must be >= 0"),
    ],
)
def test_bad_hyperparameters(factory: Any, match: str) -> None:
    with pytest.raises(InputDataError, match=match):
        factory()


def test_non_numeric_hyperparameter_is_a_type_error() -> None:
    with pytest.raises(InputTypeError, match=r"rho must be a real number; got '0\.1' of type str\."):
        SharpnessAwareMinimization(rho="0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "solver",
    [
        NONCONVEX_SOLVERS["sgd"](),
        NONCONVEX_SOLVERS["label_noise_sgd"](),
        NONCONVEX_SOLVERS["entropy_sgd"](),
        NONCONVEX_SOLVERS["swa"](),
        NONCONVEX_SOLVERS["hutchinson_penalty"](),
        SharpnessAwareMinimization(batch_size=8),
        NONCONVEX_SOLVERS["trace_penalty"](batch_size=8),
    ],
    ids=lambda s: s.name,
)
def test_stochastic_solvers_require_a_generator(solver: Any) -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(0))
    assert solver.stochastic
    name = type(solver).__name__
    with pytest.raises(
        InputTypeError,
        match=rf"{name} is stochastic and needs generator=torch\.Generator .*; got generator=None\.",
    ):
        solver.run(objective, init)


def test_wrong_generator_type() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(0))
    with pytest.raises(InputTypeError, match=r"generator must be a torch\.Generator .*; got int\."):
        GradientDescent().run(objective, init, generator=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["sgd", "label_noise_sgd", "swa"])
def test_batch_larger_than_the_data(name: str) -> None:
    objective = sensing_objective(m=40)
    init = objective.random_params(generator=make_generator(0))
    with pytest.raises(
        InputDataError, match=r"batch_size must be <= the number of measurements m = 40; got batch_size=41\."
    ):
        NONCONVEX_SOLVERS[name](batch_size=41).run(objective, init, generator=make_generator(1))


def test_sam_minibatch_larger_than_the_data() -> None:
    objective = sensing_objective(m=40)
    init = objective.random_params(generator=make_generator(0))
    with pytest.raises(InputDataError, match=r"batch_size must be <= the number of measurements m = 40"):
        SharpnessAwareMinimization(batch_size=64).run(objective, init, generator=make_generator(1))


def test_objective_and_init_validation() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(0))
    with pytest.raises(
        InputTypeError, match=r"objective must be a flatminima\.objectives\.Objective .*; got str\."
    ):
        GradientDescent().run("loss", init)  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match=r"init\[0\] \(L\) must have shape \(4, 3\); got \(4, 2\)\."):
        GradientDescent().run(objective, (init[0][:, :2], init[1]))
    with pytest.raises(InputDataError, match=r"init\[1\] \(R\) must have finite entries"):
        GradientDescent().run(objective, (init[0], init[1] * float("nan")))


def test_measurement_sampling_needs_a_least_squares_objective() -> None:
    objective, _, _ = quadratic()
    init = objective.split(torch.ones(5, dtype=torch.float64))
    with pytest.raises(
        InputTypeError,
        match=r"StochasticGradientDescent samples measurements and needs a least-squares objective .*"
        r"got QuadraticObjective",
    ):
        StochasticGradientDescent(batch_size=2).run(objective, init, generator=make_generator(0))
    with pytest.raises(InputTypeError, match=r"LabelNoiseSGD samples measurements"):
        LabelNoiseSGD(batch_size=None).run(objective, init, generator=make_generator(0))


def test_result_trace_unknown_key() -> None:
    objective = sensing_objective()
    result = GradientDescent(max_iterations=2).run(
        objective, objective.random_params(generator=make_generator(0))
    )
    with pytest.raises(InputDataError, match=r"key must be one of \[.*'loss'.*\]; got key='sharpness'\."):
        result.trace("sharpness")


# ---- torch.optim wrappers and functions --------------------------------------------------------------
def _param() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.ones(3))


def test_optim_errors() -> None:
    w = _param()
    with pytest.raises(InputDataError, match=r"rho must satisfy 0\.0 <= rho; got rho=-0\.05\."):
        SAM(torch.optim.SGD([w], lr=0.1), rho=-0.05)
    with pytest.raises(
        InputTypeError, match=r"base_optimizer must be a constructed torch\.optim\.Optimizer .*; got type\."
    ):
        SAM(torch.optim.SGD, rho=0.05)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match=r"model must be a torch\.nn\.Module or None; got str\."):
        SAM(torch.optim.SGD([w], lr=0.1), model="net")  # type: ignore[arg-type]
    with pytest.raises(
        InputDataError,
        match=r"lr must satisfy 0\.0 < lr; got lr=-1\.0\.",
    ):
        EntropySGD([w], generator=make_generator(0), lr=-1.0)
    with pytest.raises(
        InputDataError, match=r"thermal_noise must satisfy 0\.0 <= thermal_noise; got thermal_noise=-1\.0\."
    ):
        EntropySGD([w], generator=make_generator(0), thermal_noise=-1.0)
    with pytest.raises(
        InputTypeError, match=r"EntropySGD is stochastic and needs generator=torch\.Generator"
    ):
        EntropySGD([w], generator=None)  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match=r"EntropySGD\.step needs a closure"):
        EntropySGD([w], generator=make_generator(0)).step()
    with pytest.raises(InputDataError, match=r"swa_start must be >= 0; got swa_start=-3\."):
        SWA(torch.optim.SGD([w], lr=0.1), swa_start=-3)
    with pytest.raises(
        SolverError,
        match=r"no SWA snapshot yet: the first is taken at step max\(swa_start, 1\) = 5; "
        r"0 steps were taken\.",
    ):
        SWA(torch.optim.SGD([w], lr=0.1), swa_start=5).averaged_parameters()


def test_first_step_twice_is_an_error() -> None:
    w = _param()
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    (w**2).sum().backward()
    sam.first_step()
    with pytest.raises(SolverError, match=r"first_step was called twice without second_step/restore"):
        sam.first_step()


def test_label_noise_and_penalty_function_errors() -> None:
    y = torch.zeros(4)
    with pytest.raises(
        InputDataError, match=r"noise_level must satisfy 0\.0 <= noise_level; got noise_level=-1\.0\."
    ):
        perturb_labels(y, noise_level=-1.0, generator=make_generator(0))
    with pytest.raises(InputTypeError, match=r"perturb_labels is stochastic and needs generator"):
        perturb_labels(y, noise_level=0.1, generator=None)  # type: ignore[arg-type]
    x = torch.ones(3, requires_grad=True)
    loss = (x**3).sum()
    with pytest.raises(InputDataError, match=r"num_probes must be >= 1; got num_probes=0\."):
        hutchinson_trace_penalty(loss, [x], generator=make_generator(0), num_probes=0)
    with pytest.raises(InputDataError, match=r"loss must be a 0-dim tensor; got shape \(3,\)\."):
        hutchinson_trace_penalty(x**2, [x], generator=make_generator(0))
    with pytest.raises(InputTypeError, match=r"params\[0\] must be a tensor with requires_grad=True\."):
        hutchinson_trace_penalty(loss, [torch.ones(3)], generator=make_generator(0))
    with pytest.raises(InputDataError, match=r"weights must have one entry per parameter \(1\); got 2\."):
        hutchinson_trace_penalty(loss, [x], generator=make_generator(0), weights=[1.0, 1.0])
    with pytest.raises(
        InputDataError, match=r"weights\[0\] must satisfy 0\.0 <= weights\[0\]; got weights\[0\]=-1\.0\."
    ):
        hutchinson_trace_penalty(loss, [x], generator=make_generator(0), weights=[-1.0])
    with pytest.raises(InputDataError, match=r"params and grads must have one entry each; got 1 and 2\."):
        sam_perturbation([x], [x, x], rho=0.1)
