"""The torch.optim-compatible versions: SAM/ASAM (BatchNorm, GradScaler, schedulers), Entropy-SGD, SWA,
label noise and the Hutchinson penalty on nn.Modules."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from nonconvex_cases import make_generator, quadratic

from flatminima.optim import SAM, SWA, EntropySGD, hutchinson_trace_penalty, perturb_labels
from flatminima.solvers.nonconvex import EntropySGD as EntropySolver

F64 = torch.float64


def _quadratic_closure(A: torch.Tensor, b: torch.Tensor, w: torch.Tensor, optimizer: torch.optim.Optimizer):
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = 0.5 * w @ A @ w - b @ w
        loss.backward()
        return loss

    return closure


# ---- SAM / ASAM -------------------------------------------------------------------------------------
@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_sam_optimizer_step_equals_the_formula(adaptive: bool) -> None:
    _, A, b = quadratic(3)
    w0 = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=F64)
    rho, lr, offset = 0.2, 0.05, 0.01
    g = A @ w0 - b
    if adaptive:
        T = w0.abs() + offset
        eps = rho * T**2 * g / torch.linalg.vector_norm(T * g)
    else:
        eps = rho * g / torch.linalg.vector_norm(g)
    expected = w0 - lr * (A @ (w0 + eps) - b)

    w = torch.nn.Parameter(w0.clone())
    sam = SAM(torch.optim.SGD([w], lr=lr), rho=rho, adaptive=adaptive, eta=offset)
    loss = sam.step(_quadratic_closure(A, b, w, sam))
    assert math.isclose(float(loss.detach()), float(0.5 * w0 @ A @ w0 - b @ w0), rel_tol=1e-14)
    assert torch.allclose(w.detach(), expected, rtol=1e-13, atol=1e-13)
    assert not sam.perturbed

    # the two-call API gives the same update
    v = torch.nn.Parameter(w0.clone())
    sam2 = SAM(torch.optim.SGD([v], lr=lr), rho=rho, adaptive=adaptive, eta=offset)
    (0.5 * v @ A @ v - b @ v).backward()
    sam2.first_step(zero_grad=True)
    assert sam2.perturbed and torch.allclose(v.detach(), w0 + eps, rtol=1e-13)
    (0.5 * v @ A @ v - b @ v).backward()
    sam2.second_step(zero_grad=True)
    assert torch.allclose(v.detach(), expected, rtol=1e-13, atol=1e-13) and v.grad is None


def test_sam_optimizer_momentum_uses_the_perturbed_gradients() -> None:
    _, A, b = quadratic(4)
    w0 = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=F64)
    rho, lr, mu = 0.1, 0.02, 0.9

    def g_sam(w: torch.Tensor) -> torch.Tensor:
        g = A @ w - b
        return A @ (w + rho * g / torch.linalg.vector_norm(g)) - b

    g1 = g_sam(w0)
    w1 = w0 - lr * g1
    w2 = w1 - lr * (mu * g1 + g_sam(w1))
    w = torch.nn.Parameter(w0.clone())
    sam = SAM(torch.optim.SGD([w], lr=lr, momentum=mu), rho=rho)
    for _ in range(2):
        sam.step(_quadratic_closure(A, b, w, sam))
    assert torch.allclose(w.detach(), w2, rtol=1e-12, atol=1e-12)


def _initialized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter with N(0, 0.25) entries from an explicit generator (no global RNG)."""
    generator = make_generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator))
    return module


def _bn_model(seed: int) -> torch.nn.Module:
    layers = (torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    return _initialized(torch.nn.Sequential(*layers), seed)


@pytest.mark.parametrize("freeze", [True, False], ids=["model-given", "opted-out"])
def test_batchnorm_statistics_are_not_updated_in_the_perturbed_pass(freeze: bool) -> None:
    g = make_generator(0)
    x, y = torch.randn(16, 3, generator=g), torch.randn(16, 1, generator=g)
    model = _bn_model(0)
    reference = _bn_model(0)
    reference(x)  # one training-mode forward at the original weights: the statistics SAM should keep
    sam = SAM(
        torch.optim.SGD(model.parameters(), lr=0.1),
        rho=0.5,
        model=model if freeze else None,
        freeze_running_stats=freeze,
    )

    def closure() -> torch.Tensor:
        sam.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    sam.step(closure)
    bn, ref = model[1], reference[1]
    matches = torch.allclose(bn.running_mean, ref.running_mean) and torch.allclose(
        bn.running_var, ref.running_var
    )
    if freeze:
        assert matches and int(bn.num_batches_tracked) == 1
        assert bn.track_running_stats  # restored after the perturbed pass
    else:  # opted out: the perturbed pass moves the statistics (the pitfall the default avoids)
        assert not matches and int(bn.num_batches_tracked) == 2


def test_gradscaler_unscales_exactly_once() -> None:
    g = make_generator(1)
    x, y = torch.randn(32, 5, generator=g, dtype=F64), torch.randn(32, 1, generator=g, dtype=F64)

    def model_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
        layers = (torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        a = _initialized(torch.nn.Sequential(*layers).double(), 0)
        b = _initialized(copy.deepcopy(a), 0)
        return a, b

    plain_model, scaled_model = model_pair()
    plain = SAM(torch.optim.SGD(plain_model.parameters(), lr=0.1, momentum=0.9), rho=0.05)
    scaled = SAM(torch.optim.SGD(scaled_model.parameters(), lr=0.1, momentum=0.9), rho=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=1)
    for _ in range(3):
        plain.step(lambda: _mse_closure(plain, plain_model, x, y))
        # the documented mixed-precision flow
        scaled.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(scaled_model(x), y)).backward()
        scaled.first_step(zero_grad=True)  # eps is invariant to the loss scale: no unscale here
        scaler.scale(torch.nn.functional.mse_loss(scaled_model(x), y)).backward()
        scaled.restore()
        scaler.step(scaled)  # unscales the perturbed-point gradients once
        scaler.update()
    assert scaler.get_scale() == 2.0**15  # no overflow: every step was taken (and the scale grew)
    # float64 and power-of-two scales: a correct flow reproduces the unscaled run up to rounding, while
    # unscaling twice or never would be off by a factor 2^12 or more
    for p, q in zip(plain_model.parameters(), scaled_model.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


def _mse_closure(sam: SAM, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    sam.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss


def test_gradscaler_skipped_step_leaves_the_weights_unperturbed() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale((w**2).sum()).backward()
    sam.first_step(zero_grad=True)
    scaler.scale((w**2).sum() * float("inf")).backward()  # overflow in the perturbed pass
    sam.restore()
    scaler.step(sam)  # skipped because of the inf
    scaler.update()
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0])) and scaler.get_scale() < 4.0


@pytest.mark.parametrize("attach", ["wrapper", "base"])
def test_scheduler_attached_to_either_optimizer_drives_the_same_rate(attach: str) -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    base = torch.optim.SGD([w], lr=0.4)
    sam = SAM(base, rho=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(sam if attach == "wrapper" else base, step_size=1, gamma=0.5)
    for _ in range(2):
        (w**2).sum().backward()
        sam.first_step(zero_grad=True)
        (w**2).sum().backward()
        sam.second_step(zero_grad=True)
        scheduler.step()  # no "scheduler.step() before optimizer.step()" warning (warnings are errors)
    assert base.param_groups[0]["lr"] == pytest.approx(0.1) and sam.param_groups[0]["lr"] == pytest.approx(
        0.1
    )


# ---- Entropy-SGD ------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_entropy_sgd_optimizer_matches_the_solver(noise: float) -> None:
    objective, A, b = quadratic(5)
    w0 = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.7], dtype=F64)
    settings = {"gamma": 0.5, "scoping": 0.1, "thermal_noise": noise, "averaging": 0.75, "inner_steps": 4}
    solver = EntropySolver(step_size=0.8, inner_step_size=0.03, max_iterations=3, **settings)
    expected = torch.cat(solver.run(objective, objective.split(w0), generator=make_generator(7)).params)

    w1, w2 = torch.nn.Parameter(w0[:2].clone()), torch.nn.Parameter(w0[2:].clone())
    opt = EntropySGD([w1, w2], generator=make_generator(7), lr=0.8, inner_lr=0.03, **settings)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        w = torch.cat([w1, w2])
        loss = 0.5 * w @ A @ w - b @ w
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert opt.outer_steps == 3
    assert torch.allclose(torch.cat([w1.detach(), w2.detach()]), expected, rtol=1e-12, atol=1e-12)


# ---- SWA --------------------------------------------------------------------------------------------
def test_swa_optimizer_average_is_the_mean_of_the_snapshots() -> None:
    g = make_generator(2)
    x, y = torch.randn(20, 3, generator=g), torch.randn(20, 1, generator=g)
    model = _initialized(torch.nn.Linear(3, 1), 0)
    swa = SWA(torch.optim.SGD(model.parameters(), lr=0.1), swa_start=2, swa_frequency=3)
    snapshots = []
    for step in range(1, 12):
        swa.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        swa.step()
        if step >= 2 and (step - 2) % 3 == 0:
            snapshots.append([p.detach().clone() for p in model.parameters()])
    assert swa.num_averaged == len(snapshots) == 4
    for averaged, *values in zip(swa.averaged_parameters(), *snapshots, strict=True):
        assert torch.allclose(averaged, torch.stack(values).mean(0), rtol=1e-6, atol=1e-7)
    current = [p.detach().clone() for p in model.parameters()]
    means = [torch.stack(values).mean(0) for values in zip(*snapshots, strict=True)]
    swa.swap_weights()
    for p, mean in zip(model.parameters(), means, strict=True):
        assert torch.allclose(p.detach(), mean, rtol=1e-6, atol=1e-7)
    swa.swap_weights()
    assert all(torch.equal(p.detach(), c) for p, c in zip(model.parameters(), current, strict=True))


# ---- label noise and the Hutchinson penalty on models --------------------------------------------------
def test_perturb_labels() -> None:
    y = torch.linspace(-1, 1, 1000, dtype=F64)
    noisy = perturb_labels(y, noise_level=0.3, generator=make_generator(0))
    assert noisy.dtype == F64 and torch.allclose((noisy - y).abs(), torch.full_like(y, 0.3))
    assert abs(float((noisy - y).mean())) < 5 * 0.3 / math.sqrt(1000)
    again = perturb_labels(y, noise_level=0.3, generator=make_generator(0))
    assert torch.equal(noisy, again)
    gaussian = perturb_labels(y, noise_level=0.3, generator=make_generator(0), distribution="gaussian")
    assert abs(float((gaussian - y).std()) - 0.3) < 0.03
    assert torch.equal(perturb_labels(y, noise_level=0.0, generator=make_generator(0)), y)


def test_hutchinson_penalty_on_a_model_is_unbiased_and_differentiable() -> None:
    g = make_generator(3)
    x, y = torch.randn(10, 2, generator=g, dtype=F64), torch.randn(10, 1, generator=g, dtype=F64)
    W1 = torch.randn(4, 2, generator=g, dtype=F64, requires_grad=True)
    W2 = torch.randn(1, 4, generator=g, dtype=F64, requires_grad=True)

    def loss_of(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return ((torch.tanh(x @ w1.T) @ w2.T - y) ** 2).mean()

    H = torch.autograd.functional.hessian(loss_of, (W1, W2))
    exact = float(torch.diagonal(H[0][0].reshape(8, 8)).sum() + torch.diagonal(H[1][1].reshape(4, 4)).sum())
    estimate = hutchinson_trace_penalty(
        loss_of(W1, W2), [W1, W2], generator=make_generator(4), num_probes=600
    )
    assert abs(float(estimate.value.detach()) - exact) < 5 * estimate.stderr
    assert estimate.stderr < 0.2 * abs(exact)
    (gW1, gW2) = torch.autograd.grad(estimate.value, [W1, W2])
    assert gW1.shape == W1.shape and bool(torch.isfinite(gW1).all()) and float(gW2.abs().sum()) > 0


def test_label_noise_training_loop_on_a_module() -> None:
    g = make_generator(5)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    model = _initialized(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)), 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    noise = make_generator(6)
    with torch.no_grad():
        first = float(torch.nn.functional.mse_loss(model(x), y))
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), perturb_labels(y, noise_level=0.1, generator=noise))
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(torch.nn.functional.mse_loss(model(x), y)) < 0.05 * first
