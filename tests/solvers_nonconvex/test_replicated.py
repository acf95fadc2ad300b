"""Replicated SGD / robust ensembles (issue 16, item 6): the optimizer for any model and the solver."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from nonconvex_cases import make_generator, quadratic, sensing_objective

from flatminima.errors import InputDataError, InputTypeError
from flatminima.optim import ReplicatedSGD
from flatminima.solvers.nonconvex import NONCONVEX_SOLVERS, StochasticGradientDescent
from flatminima.solvers.nonconvex import ReplicatedSGD as ReplicatedSolver

F64 = torch.float64


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = make_generator(seed)
    return torch.randn(24, 3, generator=g, dtype=F64), torch.randn(24, 1, generator=g, dtype=F64)


def _model(seed: int) -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    g = make_generator(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))
    return model


def _batched_closure(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, size: int = 6
) -> Callable[[], torch.Tensor]:
    """A closure that visits consecutive minibatches (a fresh one per call, deterministically)."""
    calls = [0]

    def closure() -> torch.Tensor:
        start = (calls[0] * size) % x.shape[0]
        calls[0] += 1
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[start : start + size]), y[start : start + size])
        loss.backward()
        return loss

    return closure


def test_one_replica_is_plain_sgd() -> None:
    x, y = _data(0)
    model, reference = _model(1), _model(1)
    replicated = ReplicatedSGD(model.parameters(), lr=0.1, replicas=1, gamma=3.0, scoping=0.5)
    sgd = torch.optim.SGD(reference.parameters(), lr=0.1)
    closure, reference_closure = (
        _batched_closure(model, replicated, x, y),
        _batched_closure(reference, sgd, x, y),
    )
    for _ in range(10):
        replicated.step(closure)
        sgd.step(reference_closure)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)


def test_zero_coupling_gives_independent_sgd_replicas_and_the_centre_is_their_mean() -> None:
    x, y = _data(0)
    model = _model(1)
    replicated = ReplicatedSGD(model.parameters(), lr=0.1, replicas=3, gamma=0.0)
    closure = _batched_closure(model, replicated, x, y)
    for _ in range(4):
        replicated.step(closure)
    # replica a sees the minibatches a, a + 3, a + 6, a + 9 (the closure's calls in order)
    for a, replica in enumerate(replicated.replica_parameters()):
        reference = _model(1)
        sgd = torch.optim.SGD(reference.parameters(), lr=0.1)
        for step in range(4):
            start = ((3 * step + a) * 6) % 24
            sgd.zero_grad()
            torch.nn.functional.mse_loss(reference(x[start : start + 6]), y[start : start + 6]).backward()
            sgd.step()
        for w, q in zip(replica, reference.parameters(), strict=True):
            assert torch.allclose(w, q, rtol=1e-13, atol=1e-15)
    stacks = replicated.replica_parameters()
    for index, p in enumerate(model.parameters()):
        assert torch.allclose(p, torch.stack([r[index] for r in stacks]).mean(0), rtol=1e-14, atol=1e-15)


def test_one_step_is_the_elastic_update_on_a_quadratic() -> None:
    """w_a' = w_a - eta g_a; c = mean(w'); w_a = w_a' + k (c - w_a'), k = eta gamma / (1 + eta gamma)."""
    _, A, b = quadratic(2)
    eta, gamma, y = 0.05, 4.0, 3
    w = torch.nn.Parameter(torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=F64))
    optimizer = ReplicatedSGD([w], lr=eta, replicas=y, gamma=gamma, spread=0.3, generator=make_generator(5))
    start = torch.stack([r[0] for r in optimizer.replica_parameters()])
    assert torch.allclose(start.mean(0), w.detach(), rtol=1e-14, atol=1e-15)  # the offsets have zero mean
    scale = [1.0, 2.0, 3.0]  # replica a minimizes scale[a] * f: different gradients per call
    calls = [0]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = scale[calls[0] % y] * (0.5 * w @ A @ w - b @ w)
        calls[0] += 1
        loss.backward()
        return loss

    optimizer.step(closure)
    moved = torch.stack([s * (A @ wa - b) for s, wa in zip(scale, start, strict=True)])
    stepped = start - eta * moved
    centre = stepped.mean(0)
    k = eta * gamma / (1 + eta * gamma)
    expected = stepped + k * (centre - stepped)
    got = torch.stack([r[0] for r in optimizer.replica_parameters()])
    assert torch.allclose(got, expected, rtol=1e-13, atol=1e-14)
    assert torch.allclose(w.detach(), centre, rtol=1e-13, atol=1e-14)
    assert optimizer.param_groups[0]["steps"] == 1


def _spread(optimizer: ReplicatedSGD, model: torch.nn.Module) -> float:
    squares = sum(
        float((r - p.detach()).square().sum())
        for replica in optimizer.replica_parameters()
        for r, p in zip(replica, model.parameters(), strict=True)
    )
    return math.sqrt(squares / optimizer.replicas)


def test_strong_coupling_collapses_the_replicas_onto_the_centre() -> None:
    x, y = _data(3)
    spreads = {}
    for gamma in (0.0, 1.0, 1e12):
        model = _model(4)
        optimizer = ReplicatedSGD(
            model.parameters(), lr=0.1, replicas=4, gamma=gamma, spread=0.2, generator=make_generator(6)
        )
        closure = _batched_closure(model, optimizer, x, y)
        for _ in range(20):
            optimizer.step(closure)
        spreads[gamma] = _spread(optimizer, model)
    assert spreads[0.0] > spreads[1.0] > 0
    assert spreads[1e12] < 1e-10 * spreads[0.0]


def test_gamma_scoping_and_cap() -> None:
    w = torch.nn.Parameter(torch.ones(2))
    optimizer = ReplicatedSGD([w], lr=0.1, replicas=2, gamma=0.1, scoping=0.5, gamma_max=0.3)
    gammas = []
    for _ in range(4):
        gammas.append(optimizer.current_gamma(optimizer.param_groups[0]))

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = (w**2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    assert gammas == pytest.approx([0.1, 0.15, 0.225, 0.3])
    assert ReplicatedSolver(gamma=0.0, scoping=1.0).gamma_at(50) == 0.0


def test_a_failing_closure_leaves_the_centre_in_place() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = ReplicatedSGD([w], replicas=3, spread=0.5, generator=make_generator(0))
    calls = [0]

    def closure() -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("data loader failed")
        optimizer.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="data loader failed"):
        optimizer.step(closure)
    assert torch.equal(w.detach(), torch.tensor([1.0, 2.0])) and optimizer.param_groups[0]["steps"] == 0


# ---- the solver --------------------------------------------------------------------------------------
def test_registered_and_one_replica_solver_is_the_sgd_solver() -> None:
    assert NONCONVEX_SOLVERS["replicated_sgd"] is ReplicatedSolver
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    single = ReplicatedSolver(step_size=0.02, replicas=1, gamma=2.0, batch_size=8, max_iterations=30)
    sgd = StochasticGradientDescent(step_size=0.02, batch_size=8, max_iterations=30)
    a = single.run(objective, init, generator=make_generator(3))
    b = sgd.run(objective, init, generator=make_generator(3))
    assert all(torch.equal(x, y) for x, y in zip(a.params, b.params, strict=True))


def test_solver_reaches_zero_loss_on_matrix_sensing_and_the_replicas_meet() -> None:
    objective = sensing_objective(d=4, rank=1, m=40, width=3)
    init = objective.random_params(generator=make_generator(2), scale=0.5)
    solver = ReplicatedSolver(
        step_size=0.05,
        replicas=3,
        gamma=0.5,
        scoping=5e-3,
        batch_size=10,
        max_iterations=1500,
        record_every=100,
    )
    result = solver.run(objective, init, generator=make_generator(8))
    assert result.final("loss") < 1e-12 * result.history[0]["loss"]
    assert result.final("replica_spread") < 1e-8
    steps, gammas = result.trace("gamma")
    assert gammas[-1] == pytest.approx(0.5 * 1.005 ** (steps[-1] - 1))


def test_deterministic_solver_with_full_batches_converges_with_status() -> None:
    objective = sensing_objective(width=1)
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    solver = ReplicatedSolver(step_size=0.1, batch_size=None, max_iterations=5000, tolerance=1e-8)
    assert not solver.stochastic
    result = solver.run(objective, init)
    assert result.status.value == "converged" and result.final("gradient_norm") < 1e-7


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: ReplicatedSolver(replicas=0), InputDataError, r"^replicas must be >= 1; got replicas=0\.$"),
        (
            lambda: ReplicatedSolver(gamma=-1.0),
            InputDataError,
            r"^gamma must satisfy 0\.0 <= gamma; got gamma=-1\.0\.$",
        ),
        (lambda: ReplicatedSolver(scoping=-0.1), InputDataError, r"^scoping must satisfy 0\.0 <= scoping"),
        (lambda: ReplicatedSolver(spread=-1.0), InputDataError, r"^spread must satisfy 0\.0 <= spread"),
        (
            lambda: ReplicatedSolver(gamma=2.0, gamma_max=1.0),
            InputDataError,
            r"^gamma_max must be >= gamma = 2\.0; got gamma_max=1\.0\.$",
        ),
        (
            lambda: ReplicatedSolver(batch_size=0),
            InputDataError,
            r"^batch_size must be >= 1; got batch_size=0\.$",
        ),
        (
            lambda: ReplicatedSGD([torch.nn.Parameter(torch.ones(1))], replicas=0),
            InputDataError,
            r"^replicas must be >= 1; got replicas=0\.$",
        ),
        (
            lambda: ReplicatedSGD([torch.nn.Parameter(torch.ones(1))], gamma=-0.5),
            InputDataError,
            r"^gamma must satisfy 0\.0 <= gamma; got gamma=-0\.5\.$",
        ),
        (
            lambda: ReplicatedSGD([torch.nn.Parameter(torch.ones(1))], lr=0.0),
            InputDataError,
            r"^lr must satisfy 0\.0 < lr; got lr=0\.0\.$",
        ),
        (
            lambda: ReplicatedSGD([torch.nn.Parameter(torch.ones(1))], spread=0.1),
            InputTypeError,
            r"^ReplicatedSGD with spread > 0 is stochastic and needs generator=torch\.Generator",
        ),
        (
            lambda: ReplicatedSGD([torch.nn.Parameter(torch.ones(1))]).step(),
            InputDataError,
            r"^ReplicatedSGD\.step needs a closure .*; got closure=None\.$",
        ),
    ],
)
def test_errors(factory: Callable[[], Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


def test_stochastic_solver_requires_a_generator() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(0))
    with pytest.raises(InputTypeError, match=r"^ReplicatedSGD is stochastic and needs generator"):
        ReplicatedSolver().run(objective, init)
    with pytest.raises(InputDataError, match=r"batch_size must be <= the number of measurements m = 40"):
        ReplicatedSolver(batch_size=41).run(objective, init, generator=make_generator(1))
