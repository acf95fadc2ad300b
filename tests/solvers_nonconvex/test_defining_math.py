"""Each algorithm against its defining mathematics on a case with a known answer."""

from __future__ import annotations

import math

import pytest
import torch
from nonconvex_cases import (
    QuadraticObjective,
    make_generator,
    quadratic,
    quadratic_objective,
    sensing_objective,
)

from flatminima.objectives import BilinearFactorization
from flatminima.optim import hutchinson_trace_penalty
from flatminima.problems import MatrixCompletion
from flatminima.solvers.nonconvex import (
    AdaptiveSharpnessAwareMinimization,
    EntropySGD,
    GradientDescent,
    HutchinsonPenaltyDescent,
    LabelNoiseSGD,
    SharpnessAwareMinimization,
    StochasticGradientDescent,
    StochasticWeightAveraging,
    TracePenaltyDescent,
    top_hessian_eigenvalue,
    trace_penalty_gradient,
)

F64 = torch.float64


# ---- SAM / ASAM ------------------------------------------------------------------------------------
def test_one_sam_step_on_a_quadratic_equals_the_formula() -> None:
    objective, A, b = quadratic()
    w = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=F64)
    rho, eta = 0.2, 0.05
    result = SharpnessAwareMinimization(rho=rho, step_size=eta, max_iterations=1).run(
        objective, QuadraticObjective.split(w)
    )
    g = A @ w - b
    eps = rho * g / torch.linalg.vector_norm(g)  # one global norm over both blocks
    expected = w - eta * (A @ (w + eps) - b)
    assert torch.allclose(torch.cat(result.params), expected, rtol=1e-13, atol=1e-13)


def test_one_asam_step_on_a_quadratic_equals_the_formula() -> None:
    objective, A, b = quadratic(1)
    w = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=F64)
    rho, eta, offset = 0.5, 0.05, 0.01
    solver = AdaptiveSharpnessAwareMinimization(rho=rho, step_size=eta, eta=offset, max_iterations=1)
    result = solver.run(objective, QuadraticObjective.split(w))
    g = A @ w - b
    T = w.abs() + offset
    eps = rho * T**2 * g / torch.linalg.vector_norm(T * g)
    expected = w - eta * (A @ (w + eps) - b)
    assert torch.allclose(torch.cat(result.params), expected, rtol=1e-13, atol=1e-13)


def test_sam_with_zero_radius_is_gradient_descent() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    sam = SharpnessAwareMinimization(rho=0.0, step_size=0.05, max_iterations=20).run(objective, init)
    gd = GradientDescent(step_size=0.05, max_iterations=20).run(objective, init)
    assert all(
        torch.allclose(a, b, rtol=1e-14, atol=1e-14) for a, b in zip(sam.params, gd.params, strict=True)
    )


def test_minibatch_sam_uses_the_same_batch_for_both_gradients() -> None:
    # With batch_size = m every batch is the full data, so minibatch SAM equals full-batch SAM.
    objective = sensing_objective(m=40)
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    full = SharpnessAwareMinimization(rho=0.1, max_iterations=5).run(objective, init)
    batch = SharpnessAwareMinimization(rho=0.1, batch_size=40, max_iterations=5).run(
        objective, init, generator=make_generator(2)
    )
    assert all(
        torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(full.params, batch.params, strict=True)
    )


# ---- momentum against torch.optim ------------------------------------------------------------------
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_torch_optim_sgd(nesterov: bool) -> None:
    objective, A, b = quadratic(2)
    w0 = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=F64)
    result = GradientDescent(step_size=0.02, momentum=0.9, nesterov=nesterov, max_iterations=7).run(
        objective, QuadraticObjective.split(w0)
    )
    w = torch.nn.Parameter(w0.clone())
    opt = torch.optim.SGD([w], lr=0.02, momentum=0.9, nesterov=nesterov)
    for _ in range(7):
        opt.zero_grad()
        (0.5 * w @ A @ w - b @ w).backward()
        opt.step()
    assert torch.allclose(torch.cat(result.params), w.detach(), rtol=1e-12, atol=1e-12)


# ---- trace penalty (closed form) --------------------------------------------------------------------
@pytest.mark.parametrize("scaled", [True, False], ids=["scaled", "plain"])
def test_closed_form_penalty_gradient_equals_autograd_of_the_closed_form_trace(scaled: bool) -> None:
    objective = sensing_objective(d=4, width=2)
    rect = BilinearFactorization(
        MatrixCompletion(shape=(5, 3), rank=1, probability=0.8).sample(generator=make_generator(0)), width=2
    )
    for obj in (objective, rect):  # dense D's (sensing) and diagonal D's (completion)
        params = obj.random_params(generator=make_generator(3))
        leaves = tuple(p.clone().requires_grad_(True) for p in params)
        trace = obj.scaled_trace(leaves) if scaled else obj.hessian_trace(leaves)
        expected = torch.autograd.grad(trace, leaves)
        got = trace_penalty_gradient(obj, params, scaled=scaled)
        for a, e in zip(got, expected, strict=True):
            assert torch.allclose(a, e, rtol=1e-12, atol=1e-12)


def test_closed_form_penalty_gradient_is_a_d_weighted_weight_decay() -> None:
    objective = sensing_objective(d=4, width=2)
    L, R = objective.random_params(generator=make_generator(3))
    D1, D2 = objective.instance.operator.rescaling()
    gL, gR = trace_penalty_gradient(objective, (L, R))
    assert torch.allclose(gL, 4 * D1 @ D1 @ L, rtol=1e-12) and torch.allclose(gR, 4 * D2 @ D2 @ R, rtol=1e-12)


def test_penalty_gradient_matches_the_dense_hessian_trace_gradient() -> None:
    # Independent of the closed forms: differentiate the trace of the dense torch.func Hessian.
    objective = sensing_objective(d=3, width=2, m=12)
    params = objective.random_params(generator=make_generator(5))
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    function = objective.value_function()

    def flat_loss(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, sizes)
        return function(tuple(part.reshape(s) for part, s in zip(parts, shapes, strict=True)))

    v = torch.cat([p.reshape(-1) for p in params]).requires_grad_(True)
    H = torch.autograd.functional.hessian(flat_loss, v, create_graph=True)
    weights = torch.cat(
        [torch.full((n,), w, dtype=F64) for n, w in zip(sizes, objective.block_weights, strict=True)]
    )
    (grad,) = torch.autograd.grad((torch.diagonal(H) * weights).sum(), v)
    got = torch.cat([g.reshape(-1) for g in trace_penalty_gradient(objective, params)])
    assert torch.allclose(got, grad, rtol=1e-10, atol=1e-10)


def test_symmetric_penalty_gradient_by_finite_differences() -> None:
    objective = quadratic_objective()
    params = objective.random_params(generator=make_generator(6), scale=0.5)
    got = trace_penalty_gradient(objective, params)
    h = 1e-6
    for block in range(2):
        for index in [(0, 0), (2, 1), (3, 0)]:
            plus = [p.clone() for p in params]
            minus = [p.clone() for p in params]
            plus[block][index] += h
            minus[block][index] -= h
            fd = (objective.scaled_trace(tuple(plus)) - objective.scaled_trace(tuple(minus))) / (2 * h)
            assert math.isclose(float(got[block][index]), float(fd), rel_tol=1e-6, abs_tol=1e-6)


def test_trace_penalty_descent_step() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    lam, eta = 0.3, 0.05
    result = TracePenaltyDescent(penalty=lam, step_size=eta, max_iterations=1).run(objective, init)
    D1, D2 = objective.instance.operator.rescaling()
    gL, gR = objective.grad(init)
    L, R = init
    assert torch.allclose(result.params[0], L - eta * (gL + 4 * lam * D1 @ D1 @ L), rtol=1e-12)
    assert torch.allclose(result.params[1], R - eta * (gR + 4 * lam * D2 @ D2 @ R), rtol=1e-12)


# ---- Hutchinson penalty --------------------------------------------------------------------------
@pytest.mark.parametrize("scaled", [True, False], ids=["scaled", "plain"])
def test_hutchinson_penalty_is_unbiased_for_the_trace(scaled: bool) -> None:
    objective = sensing_objective(d=4, width=3)
    params = objective.random_params(generator=make_generator(2))
    leaves = tuple(p.clone().requires_grad_(True) for p in params)
    loss = objective.value_function()(leaves)
    weights = objective.block_weights if scaled else None
    estimate = hutchinson_trace_penalty(
        loss, leaves, generator=make_generator(9), num_probes=400, weights=weights
    )
    exact = float(objective.scaled_trace(params) if scaled else objective.hessian_trace(params))
    assert estimate.value.requires_grad
    assert abs(float(estimate.value.detach()) - exact) < 5 * estimate.stderr
    assert estimate.stderr < 0.1 * exact  # the test has power: the error bar is tight


def test_hutchinson_penalty_gradient_is_unbiased() -> None:
    objective = sensing_objective(d=3, width=2, m=20)
    params = objective.random_params(generator=make_generator(4))
    solver = HutchinsonPenaltyDescent(penalty=1.0, num_probes=1)
    generator = make_generator(11)
    samples = torch.stack(
        [
            torch.cat(
                [g.reshape(-1) for g in solver.penalized_gradient(objective, params, generator=generator)[0]]
            )
            for _ in range(300)
        ]
    )
    exact_parts = [
        g + e for g, e in zip(objective.grad(params), trace_penalty_gradient(objective, params), strict=True)
    ]
    exact = torch.cat([p.reshape(-1) for p in exact_parts])
    mean, stderr = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    z = (mean - exact).abs() / stderr.clamp_min(1e-12)
    assert float(z.max()) < 5.0


# ---- label noise ------------------------------------------------------------------------------------
def test_label_noise_sgd_lowers_the_trace_relative_to_gd_from_the_same_start() -> None:
    # Underdetermined sensing (m = 8 < 16 unknowns): the zero-loss set is a manifold of interpolants.
    objective = sensing_objective(d=4, rank=1, m=8, width=4)
    init = objective.random_params(generator=make_generator(10), scale=0.5)
    gd = GradientDescent(step_size=0.05, max_iterations=1200).run(objective, init)
    ln = LabelNoiseSGD(
        step_size=0.05, noise_level=0.5, batch_size=None, anneal_iterations=300, max_iterations=1200
    )
    noisy = ln.run(objective, init, generator=make_generator(1))
    assert gd.final("loss") < 1e-8 and noisy.final("loss") < 1e-3  # both end (near) the zero-loss set
    assert noisy.final("scaled_trace") < 0.7 * gd.final("scaled_trace")


def test_label_noise_gradient_formula() -> None:
    # full batch: grad of (1/m) sum (res_i - eps_i)^2 = grad f - (2/m) J^T eps, J^T v = (A^*(v) R, A^*(v)^T L)
    from flatminima.solvers.nonconvex._oracles import BatchDraw, GradientOracle

    objective = sensing_objective()
    params = objective.random_params(generator=make_generator(1))
    oracle = GradientOracle(objective, batch_size=None, noise_level=0.3, owner="test")
    draw = oracle.draw(make_generator(2))
    assert draw.noise is not None and torch.allclose(draw.noise.abs(), torch.full((40,), 0.3, dtype=F64))
    G = objective.instance.operator.adjoint(draw.noise)
    L, R = params
    gL, gR = objective.grad(params)
    got = oracle.gradient(params, draw)
    assert torch.allclose(got[0], gL - (2 / 40) * G @ R, rtol=1e-12, atol=1e-14)
    assert torch.allclose(got[1], gR - (2 / 40) * G.T @ L, rtol=1e-12, atol=1e-14)
    assert oracle.gradient(params, BatchDraw(None, None))[0].allclose(gL, rtol=1e-12)


# ---- Entropy-SGD ------------------------------------------------------------------------------------
def test_entropy_sgd_with_one_inner_step_is_gradient_descent() -> None:
    objective = sensing_objective()
    x = objective.random_params(generator=make_generator(1), scale=0.5)
    eta, gamma, eta_in = 0.7, 0.4, 0.05
    solver = EntropySGD(
        step_size=eta,
        gamma=gamma,
        inner_step_size=eta_in,
        inner_steps=1,
        averaging=1.0,
        thermal_noise=0.0,
        max_iterations=1,
    )
    result = solver.run(objective, x)
    expected = tuple(p - eta * gamma * eta_in * g for p, g in zip(x, objective.grad(x), strict=True))
    assert all(torch.allclose(a, e, rtol=1e-13) for a, e in zip(result.params, expected, strict=True))


def test_entropy_sgd_outer_step_with_two_inner_steps_and_the_moving_average() -> None:
    objective = sensing_objective()
    x = objective.random_params(generator=make_generator(1), scale=0.5)
    eta, gamma, eta_in, alpha = 0.9, 0.5, 0.05, 0.75
    solver = EntropySGD(
        step_size=eta,
        gamma=gamma,
        inner_step_size=eta_in,
        inner_steps=2,
        averaging=alpha,
        thermal_noise=0.0,
        max_iterations=1,
    )
    result = solver.run(objective, x)

    def inner(xp: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        g = objective.grad(xp)
        return tuple(a - eta_in * (gi - gamma * (x0 - a)) for a, gi, x0 in zip(xp, g, x, strict=True))

    x1 = inner(x)
    x2 = inner(x1)
    # paper convention mu <- (1 - alpha) mu + alpha x', starting from mu = x
    mu = tuple(
        (1 - alpha) * ((1 - alpha) * x0 + alpha * a) + alpha * c for x0, a, c in zip(x, x1, x2, strict=True)
    )
    expected = tuple(x0 - eta * gamma * (x0 - m) for x0, m in zip(x, mu, strict=True))
    assert all(torch.allclose(a, e, rtol=1e-13) for a, e in zip(result.params, expected, strict=True))


def test_entropy_sgd_gamma_scoping() -> None:
    solver = EntropySGD(gamma=0.1, scoping=0.5, gamma_max=0.3)
    assert [solver.gamma_at(t) for t in range(4)] == pytest.approx([0.1, 0.15, 0.225, 0.3])
    objective = sensing_objective()
    x = objective.random_params(generator=make_generator(1), scale=0.5)
    run = EntropySGD(gamma=0.1, scoping=0.5, thermal_noise=0.0, max_iterations=3, record_every=1).run(
        objective, x
    )
    assert run.trace("gamma")[1][1:] == pytest.approx([0.1, 0.15, 0.225])


# ---- SWA --------------------------------------------------------------------------------------------
def test_swa_returns_the_mean_of_the_snapshot_iterates() -> None:
    objective = sensing_objective()
    init = objective.random_params(generator=make_generator(1), scale=0.5)
    swa = StochasticWeightAveraging(
        step_size=0.02, batch_size=8, swa_start=3, swa_frequency=2, max_iterations=10
    )
    result = swa.run(objective, init, generator=make_generator(5))
    snapshots = []
    for t in (3, 5, 7, 9):  # t >= swa_start, (t - swa_start) % 2 == 0
        sgd = StochasticGradientDescent(step_size=0.02, batch_size=8, max_iterations=t)
        snapshots.append(sgd.run(objective, init, generator=make_generator(5)).params)
    for block, averaged in enumerate(result.params):
        mean = torch.stack([s[block] for s in snapshots]).mean(0)
        assert torch.allclose(averaged, mean, rtol=1e-12, atol=1e-14)
    assert result.history[-1]["num_averaged"] == 4.0
    # the SWA iterates are SGD's: the last recorded iterate loss is that of 10 SGD steps
    sgd10 = StochasticGradientDescent(step_size=0.02, batch_size=8, max_iterations=10).run(
        objective, init, generator=make_generator(5)
    )
    assert math.isclose(result.history[-2]["loss"], float(objective.value(sgd10.params)), rel_tol=1e-12)


# ---- SGD and large-step GD --------------------------------------------------------------------------
def test_minibatch_gradient_is_unbiased_and_full_batch_is_exact() -> None:
    from flatminima.solvers.nonconvex._oracles import GradientOracle, autograd_residual_vjp, batch_weights

    objective = sensing_objective(m=40)
    params = objective.random_params(generator=make_generator(1))
    exact = torch.cat([g.reshape(-1) for g in objective.grad(params)])
    full = GradientOracle(objective, batch_size=40, owner="test")
    got = torch.cat([g.reshape(-1) for g in full(params, make_generator(0))])
    assert torch.allclose(got, exact, rtol=1e-12, atol=1e-14)
    oracle = GradientOracle(objective, batch_size=5, owner="test")
    generator = make_generator(3)
    samples = torch.stack([torch.cat([g.reshape(-1) for g in oracle(params, generator)]) for _ in range(400)])
    z = (samples.mean(0) - exact).abs() / (samples.std(0) / 20).clamp_min(1e-12)
    assert float(z.max()) < 5.0
    # the closed-form J^T v equals autograd through the residual (bilinear and symmetric)
    for obj in (objective, quadratic_objective()):
        p = obj.random_params(generator=make_generator(4))
        draw = GradientOracle(obj, batch_size=7, noise_level=0.2, owner="t").draw(make_generator(8))
        v = batch_weights(obj.residual(p), draw, obj.num_measurements)
        closed = GradientOracle(obj, batch_size=7, noise_level=0.2, owner="t").gradient(p, draw)
        for a, e in zip(closed, autograd_residual_vjp(obj, p, v), strict=True):
            assert torch.allclose(a, e, rtol=1e-12, atol=1e-13)


def test_power_iteration_finds_the_dense_hessian_top_eigenvalue() -> None:
    objective = sensing_objective(d=3, width=2, m=12)
    params = objective.random_params(generator=make_generator(5))
    value, vector = top_hessian_eigenvalue(objective, params, iterations=500)
    sizes = [p.numel() for p in params]
    function = objective.value_function()

    def flat_loss(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, sizes)
        return function(tuple(part.reshape(p.shape) for part, p in zip(parts, params, strict=True)))

    H = torch.autograd.functional.hessian(flat_loss, torch.cat([p.reshape(-1) for p in params]))
    eigenvalues = torch.linalg.eigvalsh(H)
    top = eigenvalues[eigenvalues.abs().argmax()]
    assert math.isclose(value, float(top), rel_tol=1e-8)
    assert math.isclose(sum(float(v.square().sum()) for v in vector), 1.0, rel_tol=1e-12)
