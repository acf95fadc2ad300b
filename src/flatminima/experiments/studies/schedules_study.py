"""Do non-monotone learning-rate schedules find flatter minima than monotone ones? (Seong et al. 2018).

**Question.** Seong et al. (2018) argue that raising the learning rate again after it has decayed (cyclic
rates, warm restarts, a large-rate burst) lets SGD escape minima that are sharp at the raised rate and
settle in flatter ones that generalize better, and that monotone schedules (constant, step decay) cannot.

**Method.** Six schedules s(t) of the step eta_t = eta_high s(t) share the same largest rate eta_high and
(except the constant one) the same final rate eta_low = eta_high / ``peak`` over the same budget of N steps:

* monotone: ``constant`` (s = 1), ``step_decay`` (1, then peak^(-1/2) at N/2, then 1 / peak at 3N/4),
  ``cosine`` (one cosine from 1 to 1 / peak);
* non-monotone: ``cyclic`` (triangular between 1 / peak and 1, ``cycles`` cycles, ending at the bottom),
  ``warm_restarts`` (SGDR: ``cycles`` cosines from 1 to 1 / peak), ``burst`` (1 / peak except a burst to
  1 from N/2 to 7N/10, reached by a ramp of N/10; :mod:`flatminima.optim.schedules`).

The schedules that start at eta_high warm up linearly from eta_low over the first ``warmup`` N steps.

* ``digits``: one ReLU MLP per (schedule, seed) trained by plain SGD on the cross-entropy from the same
  initialization with the same batch order; at the final point the top Hessian eigenvalue (Lanczos), the
  trace (Hutchinson), training loss and test accuracy.
* ``sensing``: Gaussian matrix sensing (d x d, rank r, width k = d) from a small and a large
  initialization, by GD and minibatch SGD (batch m / 5) of :mod:`flatminima.solvers.nonconvex` with
  ``RunSettings(schedule=...)``, eta_high = 0.9 eta*, eta* the largest rate at which the solver is
  linearly stable at the flat solution (:func:`critical_rate`; GD: eta* = 2 / lambda_max, so eta_high =
  1.8 / lambda_max as in the flat-algorithms study), so that no rate of a schedule can expel the iterate
  from the flat solution itself; the final scaled trace relative
  to the flat solution's (``str_ratio`` >= 1 at zero loss, 1 exactly at the flat solutions; Ding et al.
  2024), the final loss and the recovery error.

Each training is one stored trial (an interrupted run resumes). Nothing is tuned; the caption reports the
means of monotone against non-monotone schedules, whatever they are.

References:
    S. Seong, Y. Lee, Y. Kee, D. Han, J. Kim. Towards flatter loss surface via nonmonotonic learning rate
    scheduling. UAI 2018.
    L. N. Smith. Cyclical learning rates for training neural networks. WACV 2017.
    I. Loshchilov, F. Hutter. SGDR: stochastic gradient descent with warm restarts. ICLR 2017.
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies._stored_trials import make_trial, records_frame, run_units
from flatminima.experiments.study import StudyOutput
from flatminima.optim.schedules import StepDecaySchedule, make_schedule
from flatminima.random import child_generators

MONOTONE = ("constant", "step_decay", "cosine")
NON_MONOTONE = ("cyclic", "warm_restarts", "burst")
SCHEDULE_NAMES = (*MONOTONE, *NON_MONOTONE)


@dataclasses.dataclass(frozen=True)
class ShapedSchedule:
    """s(t) = scale * inner(t), capped during the first ``warmup`` steps by a ramp from ``floor`` to 1."""

    inner: Callable[[int], float]
    scale: float = 1.0
    warmup: int = 0
    floor: float = 1.0

    def __call__(self, iteration: int) -> float:
        """Return s(iteration)."""
        value = self.scale * float(self.inner(iteration))
        if iteration < self.warmup:
            value = min(value, self.floor + (1.0 - self.floor) * (iteration + 1) / self.warmup)
        return value


def schedule(name: str, steps: int, *, peak: float, cycles: int, warmup: float) -> ShapedSchedule:
    """The multiplier s(t) of eta_high for schedule ``name`` over ``steps`` steps (see the module)."""
    low = 1.0 / peak
    inner: Callable[[int], float]
    scale = 1.0
    if name == "constant":
        inner = make_schedule("constant")
    elif name == "step_decay":
        inner = StepDecaySchedule((steps // 2, (3 * steps) // 4), math.sqrt(low))
    elif name == "cosine":
        inner = make_schedule("warm_restarts", period=steps, minimum=low)
    elif name == "cyclic":
        inner = make_schedule("cyclic", half_period=max(1, steps // (2 * cycles)), minimum=low, maximum=1.0)
    elif name == "warm_restarts":
        inner = make_schedule("warm_restarts", period=max(1, steps // cycles), minimum=low)
    elif name == "burst":
        inner = make_schedule(
            "burst", start=steps // 2, length=steps // 5, factor=peak, ramp=max(1, steps // 10)
        )
        scale = low
    else:
        raise ConfigurationError(f"schedules must name schedules of {SCHEDULE_NAMES}; got {name!r}.")
    return ShapedSchedule(inner, scale, int(warmup * steps), low)


@dataclasses.dataclass(frozen=True)
class SchedulesConfig:
    """Settings of the study (see the module)."""

    schedules: tuple[str, ...] = SCHEDULE_NAMES
    peak: float = 4.0
    cycles: int = 4
    warmup: float = 0.05
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    hidden: tuple[int, ...] = (32,)
    learning_rate: float = 0.2
    batch_size: int = 32
    epochs: int = 60
    num_train: int | None = None
    sensing_seeds: tuple[int, ...] = (0, 1, 2)
    sensing_dim: int = 10
    sensing_rank: int = 2
    sensing_measurements: int = 60
    sensing_inits: tuple[float, float] = (1e-3, 0.2)
    sensing_iterations: int = 3000

    def __post_init__(self) -> None:
        if not self.schedules:
            raise ConfigurationError("schedules must hold at least one value; got schedules=().")
        for name in self.schedules:
            if name not in SCHEDULE_NAMES:
                raise ConfigurationError(f"schedules must name schedules of {SCHEDULE_NAMES}; got {name!r}.")
        check_real("peak", self.peak, low=1.0, low_open=True)
        check_int_in_range("cycles", self.cycles, low=1)
        check_real("warmup", self.warmup, low=0.0, high=1.0, high_open=True)
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        common.check_grid("hidden", self.hidden, check_int_in_range, low=1)
        check_real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_int_in_range("batch_size", self.batch_size, low=1)
        check_int_in_range("epochs", self.epochs, low=1)
        common.check_grid("sensing_seeds", self.sensing_seeds, check_int_in_range, low=0)
        check_int_in_range("sensing_dim", self.sensing_dim, low=2)
        check_int_in_range(
            "sensing_rank", self.sensing_rank, low=1, high=self.sensing_dim, high_name="sensing_dim"
        )
        check_int_in_range("sensing_measurements", self.sensing_measurements, low=5)
        if len(self.sensing_inits) != 2:
            raise ConfigurationError(f"sensing_inits must be (small, large); got {self.sensing_inits!r}.")
        for scale in self.sensing_inits:
            check_real("sensing_inits[i]", scale, low=0.0, low_open=True)
        check_int_in_range("sensing_iterations", self.sensing_iterations, low=10)


QUICK = SchedulesConfig(
    seeds=(0, 1, 2),
    epochs=30,
    num_train=600,
    sensing_seeds=(0, 1),
    sensing_dim=8,
    sensing_rank=1,
    sensing_measurements=40,
    sensing_iterations=1500,
)
FULL = SchedulesConfig()


def train_digits(config: SchedulesConfig, seed: int, name: str) -> dict[str, Any]:
    """Train one MLP with schedule ``name`` and measure it at the final point."""
    from flatminima.networks import evaluate, mlp

    data = common.digits(seed, config.num_train)
    if config.batch_size > data.num_train:
        raise ConfigurationError(
            f"batch_size must be <= the training set size {data.num_train}; "
            f"got batch_size={config.batch_size}."
        )
    gens = common.streams(seed)
    model = mlp(data.num_features, list(config.hidden), data.num_classes, generator=gens["init"])
    params = list(model.parameters())
    steps = config.epochs * math.ceil(data.num_train / config.batch_size)
    s = schedule(name, steps, peak=config.peak, cycles=config.cycles, warmup=config.warmup)
    step, diverged = 0, False
    for _ in range(config.epochs):
        for batch in torch.randperm(data.num_train, generator=gens["batches"]).split(config.batch_size):
            loss = nn.functional.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.sub_(config.learning_rate * s(step) * g)
            step += 1
        if not all(bool(torch.isfinite(p).all()) for p in params):
            diverged = True
            break
    row: dict[str, Any] = {
        "steps": step,
        "diverged": diverged,
        "final_rate": config.learning_rate * s(steps - 1),
    }
    if not diverged:
        model.eval()
        row.update(evaluate(model, data))
        row["test_accuracy"] = 1.0 - row["test_error"]
        row.update(common.curvature(common.hessian(model, data), gens["measure"]))
    return row


def critical_rate(
    objective: Any, params: tuple[torch.Tensor, ...], batch: int, *, iterations: int = 12
) -> float:
    """The largest step eta at which SGD(eta, batch) is linearly stable at the zero-loss point ``params``.

    The per-example Hessians of f_j = res_j^2 at zero loss are 2 g_j g_j^T (g_j = grad res_j), taken in an
    orthonormal basis of their span (see :mod:`.stability_escape`); {eta : rho(T_eta) <= 1} is an interval
    [0, eta*] (lambda_max(T_eta) is a maximum of convex quadratics in eta, equal to 1 at 0) inside
    [0, 2 / lambda_max(H)], found by bisection in log eta (``iterations`` halvings of the ratio; GD: 2 / a).
    """
    from flatminima.generalization import linear_stability

    sizes = [p.numel() for p in params]

    def residual(w: torch.Tensor) -> torch.Tensor:
        return objective.residual(
            tuple(c.reshape(p.shape) for c, p in zip(w.split(sizes), params, strict=True))
        )

    J = torch.func.jacrev(residual)(torch.cat([p.reshape(-1) for p in params]))
    U, sv, _ = torch.linalg.svd(J.T, full_matrices=False)
    G = J @ U[:, sv > sv.max() * 1e-10]
    hessians = 2.0 * G[:, :, None] * G[:, None, :]
    high = 2.0 / float(torch.linalg.eigvalsh(hessians.mean(0)).max())
    if batch >= J.shape[0]:
        return high
    low = high / 2.0**iterations
    for _ in range(iterations):
        middle = math.sqrt(low * high)
        if linear_stability(hessians, learning_rate=middle, batch_size=batch).stable:
            low = middle
        else:
            high = middle
    return low


@functools.cache
def _sensing_instance(config: SchedulesConfig, seed: int) -> tuple[Any, Any, float, float, dict[str, float]]:
    """(instance, objective, scaled trace and lambda_max of the flat solution, critical rate per solver)."""
    from flatminima.objectives import BilinearFactorization
    from flatminima.problems import MatrixSensing
    from flatminima.solvers import ConvexResult, solve_flat
    from flatminima.solvers.nonconvex.descent import top_hessian_eigenvalue

    d = config.sensing_dim
    key = "sensing/instance"
    problem = MatrixSensing(
        shape=(d, d), rank=config.sensing_rank, num_measurements=config.sensing_measurements
    )
    instance = problem.sample(generator=child_generators(seed, key)[key])
    objective = BilinearFactorization(instance, width=d)
    solution = solve_flat(instance)
    if not isinstance(solution, ConvexResult):  # pragma: no cover - matrix sensing gives a ConvexResult
        raise TypeError(f"expected a ConvexResult from solve_flat; got {type(solution).__name__}.")
    flat = solution.factors(d)
    sharpness, _ = top_hessian_eigenvalue(objective, flat, iterations=300)
    rates = {"gd": 2.0 / sharpness, "sgd": critical_rate(objective, flat, _sgd_batch(config))}
    return instance, objective, float(objective.scaled_trace(flat)), sharpness, rates


def _sgd_batch(config: SchedulesConfig) -> int:
    return max(1, config.sensing_measurements // 5)


def train_sensing(
    config: SchedulesConfig, seed: int, init: str, solver_name: str, name: str
) -> dict[str, Any]:
    """Run GD or SGD with schedule ``name`` from the ``init`` initialization of sensing seed ``seed``."""
    from flatminima.solvers.nonconvex.descent import (
        GradientDescent,
        StochasticGradientDescent,
        top_hessian_eigenvalue,
    )

    instance, objective, flat_str, flat_sharpness, rates = _sensing_instance(config, seed)
    n = config.sensing_iterations
    eta = 0.9 * rates[solver_name]
    s = schedule(name, n, peak=config.peak, cycles=config.cycles, warmup=config.warmup)
    common_args: dict[str, Any] = {"step_size": eta, "schedule": s, "max_iterations": n, "record_every": n}
    if solver_name == "gd":
        solver: Any = GradientDescent(tolerance=0.0, **common_args)
    else:
        solver = StochasticGradientDescent(batch_size=_sgd_batch(config), **common_args)
    gens = child_generators(seed, f"sensing/init/{init}", f"sensing/{init}/{solver_name}/{name}")
    scale = config.sensing_inits[0 if init == "small" else 1]
    start = objective.random_params(generator=gens[f"sensing/init/{init}"], scale=scale)
    result = solver.run(objective, start, generator=gens[f"sensing/{init}/{solver_name}/{name}"])
    X, M = objective.end_to_end(result.params), instance.ground_truth
    sharpness, _ = top_hessian_eigenvalue(objective, result.params, iterations=300)
    return {
        "status_solver": result.status.value,
        "diverged": result.status.value == "diverged",
        "final_loss": float(objective.value(result.params)),
        "str_ratio": float(objective.scaled_trace(result.params)) / flat_str,
        "lambda_max": sharpness,
        "lambda_max_ratio": sharpness / flat_sharpness,
        "recovery_error": float(torch.linalg.matrix_norm(X - M) / torch.linalg.matrix_norm(M)),
        "learning_rate": eta,
        "critical_rate": rates[solver_name],
    }


def run(
    config: SchedulesConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train every (schedule, seed) on digits and sensing (resuming from the store), draw; see the module."""
    import pandas

    from flatminima.experiments.studies import _schedules_figure as figure

    shared = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in ("schedules", "seeds", "sensing_seeds")
    }
    units = []
    for seed in config.seeds:
        for label in config.schedules:
            params = {"setting": "digits", "schedule": label, "seed": seed, "init": "-", "solver": "sgd"}
            trial = make_trial(sweep, "digits", {**params, "config": shared}, method="schedule", seed=seed)
            units.append((trial, functools.partial(train_digits, config, seed, label)))
    for seed in config.sensing_seeds:
        for init in ("small", "large"):
            for solver_name in ("gd", "sgd"):
                for label in config.schedules:
                    params = {
                        "setting": "sensing",
                        "schedule": label,
                        "seed": seed,
                        "init": init,
                        "solver": solver_name,
                    }
                    trial = make_trial(
                        sweep, "matrix_sensing", {**params, "config": shared}, method="schedule", seed=seed
                    )
                    units.append(
                        (trial, functools.partial(train_sensing, config, seed, init, solver_name, label))
                    )
    records, result = run_units(units, name=name, sweep=sweep, config=config, store=store, progress=progress)
    frame = records_frame(records).drop(columns=["config"])
    frame["kind"] = ["monotone" if s in MONOTONE else "non-monotone" for s in frame["schedule"]]
    path = figure.draw(frame, config, out_dir / f"{name}.png")
    return StudyOutput(pandas.DataFrame(frame), path, figure.table(frame), (result,))
