"""The optimizers under misuse and interrupts: SAM/ASAM's global norm across parameter groups (against a
hand-written implementation), running statistics of the perturbed pass, ``step()`` without a pending
``first_step``, and Entropy-SGD's global outer-step count and interrupted inner loop."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch

from flatminima.errors import InputDataError, InputTypeError, SolverError
from flatminima.optim import SAM, EntropySGD

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny problems: one intra-op thread (a shared machine), restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- a tiny float64 MLP, written out by hand ------------------------------------------------------------
def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(12, 3, generator=g, dtype=F64), torch.randn(12, 1, generator=g, dtype=F64)


def _weights(seed: int = 1) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    shapes = {"W1": (4, 3), "b1": (4,), "W2": (1, 4), "b2": (1,)}
    return {k: 0.7 * torch.randn(s, generator=g, dtype=F64) for k, s in shapes.items()}


def _loss(w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    hidden = torch.tanh(x @ w["W1"].T + w["b1"])
    return ((hidden @ w["W2"].T + w["b2"] - y) ** 2).mean()


def _grad(w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    leaves = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    grads = torch.autograd.grad(_loss(leaves, x, y), list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


def _module(w: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    with torch.no_grad():
        for p, key in zip(model.parameters(), ("W1", "b1", "W2", "b2"), strict=True):
            p.copy_(w[key])
    return model


def _named(model: torch.nn.Sequential) -> dict[str, torch.nn.Parameter]:
    return dict(zip(("W1", "b1", "W2", "b2"), model.parameters(), strict=True))


def _two_groups(model: torch.nn.Sequential, lr: float, decay: float) -> torch.optim.SGD:
    named = _named(model)
    weights, biases = [named["W1"], named["W2"]], [named["b1"], named["b2"]]
    return torch.optim.SGD(
        [{"params": weights, "weight_decay": decay}, {"params": biases, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
    )


DECAYED = {"W1": True, "b1": False, "W2": True, "b2": False}


def _reference_sam_step(
    w: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    rho: dict[str, float],
    scale: Callable[[str, torch.Tensor], torch.Tensor],
    lr: float,
    decay: float,
    per_group_norm: bool = False,
) -> dict[str, torch.Tensor]:
    """One SAM/ASAM step with SGD (first momentum step = plain step) and weight decay, written out.

    eps_k = rho_k T_k^2 g_k / ||(T_j g_j)_j|| with ONE norm over all tensors (Foret et al.; Kwon et al.);
    ``per_group_norm`` gives the wrong variant (one norm per decay group) for the discrimination check.
    """
    g = _grad(w, x, y)
    scaled = {k: scale(k, w[k]) * g[k] for k in w}

    def norm(keys: list[str]) -> float:
        return math.sqrt(sum(float((scaled[k] ** 2).sum()) for k in keys))

    if per_group_norm:
        norms = {k: norm([j for j in w if DECAYED[j] == DECAYED[k]]) for k in w}
    else:
        norms = dict.fromkeys(w, norm(list(w)))
    perturbed = {k: w[k] + rho[k] * scale(k, w[k]) ** 2 * g[k] / norms[k] for k in w}
    g_sam = _grad(perturbed, x, y)
    return {k: w[k] - lr * (g_sam[k] + (decay if DECAYED[k] else 0.0) * w[k]) for k in w}


def _closure(
    sam: SAM, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        sam.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def _as_dict(model: torch.nn.Sequential) -> dict[str, torch.Tensor]:
    return {k: p.detach() for k, p in _named(model).items()}


def _max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ---- 1. one global norm across parameter groups ------------------------------------------------------
@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
@pytest.mark.parametrize("drive", ["closure", "two-calls"])
def test_sam_uses_one_global_norm_across_weight_decay_groups(adaptive: bool, drive: str) -> None:
    x, y = _data()
    w0 = _weights()
    rho, eta, lr, decay = (0.5 if adaptive else 0.05), 0.01, 0.1, 0.1

    def scale(_: str, w: torch.Tensor) -> torch.Tensor:
        return w.abs() + eta if adaptive else torch.ones_like(w)

    radii = dict.fromkeys(w0, rho)
    expected = _reference_sam_step(w0, x, y, rho=radii, scale=scale, lr=lr, decay=decay)
    wrong = _reference_sam_step(w0, x, y, rho=radii, scale=scale, lr=lr, decay=decay, per_group_norm=True)
    assert _max_gap(expected, wrong) > 1e-6  # the check below can tell the two norms apart

    model = _module(w0)
    sam = SAM(_two_groups(model, lr, decay), rho=rho, adaptive=adaptive, eta=eta)
    if drive == "closure":
        sam.step(_closure(sam, model, x, y))
    else:
        _closure(sam, model, x, y)()
        sam.first_step(zero_grad=True)
        _closure(sam, model, x, y)()
        sam.second_step(zero_grad=True)
    assert not sam.perturbed
    assert _max_gap(_as_dict(model), expected) < 1e-12


def test_sam_per_group_settings_share_the_global_norm() -> None:
    """Group b moves by rho_b T^2 g / N, N one norm over all groups (here: ASAM weights, SAM biases)."""
    x, y = _data(2)
    w0 = _weights(3)
    lr, decay, eta = 0.05, 0.1, 0.02
    radii = {k: (0.3 if DECAYED[k] else 0.07) for k in w0}

    def scale(key: str, w: torch.Tensor) -> torch.Tensor:
        return w.abs() + eta if DECAYED[key] else torch.ones_like(w)

    expected = _reference_sam_step(w0, x, y, rho=radii, scale=scale, lr=lr, decay=decay)
    model = _module(w0)
    base = _two_groups(model, lr, decay)
    sam = SAM(base, rho=0.07)
    sam.param_groups[0].update(rho=0.3, adaptive=True, eta=eta)
    sam.step(_closure(sam, model, x, y))
    assert _max_gap(_as_dict(model), expected) < 1e-12


def test_sam_group_added_to_the_base_optimizer_later_gets_the_defaults() -> None:
    x, y = _data(4)
    w0 = _weights(5)
    model = _module(w0)
    named = _named(model)
    base = torch.optim.SGD([named["W1"], named["W2"]], lr=0.1, weight_decay=0.1, momentum=0.9)
    sam = SAM(base, rho=0.05)
    base.add_param_group({"params": [named["b1"], named["b2"]], "weight_decay": 0.0})  # no "rho" key
    sam.step(_closure(sam, model, x, y))
    ones = dict.fromkeys(w0, 0.05)
    expected = _reference_sam_step(
        w0, x, y, rho=ones, scale=lambda _, w: torch.ones_like(w), lr=0.1, decay=0.1
    )
    assert _max_gap(_as_dict(model), expected) < 1e-12


def test_sam_rejects_a_negative_rho_set_on_a_group() -> None:
    w = torch.nn.Parameter(torch.ones(2, dtype=F64))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    sam.param_groups[0]["rho"] = -1.0
    (w**2).sum().backward()
    with pytest.raises(
        InputDataError, match=r"param_groups\[0\]\['rho'\] must satisfy 0\.0 <= .*got .*=-1\.0\."
    ):
        sam.first_step()
    assert not sam.perturbed and torch.equal(w.detach(), torch.ones(2, dtype=F64))


# ---- 2. running statistics of the perturbed pass ------------------------------------------------------
def _norm_model(kind: str, seed: int) -> torch.nn.Sequential:
    if kind == "batchnorm":
        layers: tuple[torch.nn.Module, ...] = (
            torch.nn.Linear(3, 4),
            torch.nn.BatchNorm1d(4),
            torch.nn.ReLU(),
            torch.nn.Linear(4, 1),
        )
    else:  # input (N, 3, 5): InstanceNorm with tracking, whose running stats ignore track_running_stats=False
        layers = (
            torch.nn.Conv1d(3, 4, kernel_size=2),
            torch.nn.InstanceNorm1d(4, affine=True, track_running_stats=True),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 1),
        )
    model = torch.nn.Sequential(*layers).double()
    g = _gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))
    return model


def _norm_data(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(6)
    shape = (16, 3) if kind == "batchnorm" else (16, 3, 5)
    return torch.randn(shape, generator=g, dtype=F64), torch.randn(16, 1, generator=g, dtype=F64)


def _buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in model.named_buffers()}


@pytest.mark.parametrize("kind", ["batchnorm", "instancenorm"])
@pytest.mark.parametrize("given", [False, True], ids=["default", "model-given"])
@pytest.mark.parametrize("drive", ["closure", "two-calls"])
def test_sam_running_statistics_are_those_of_one_forward_at_w(kind: str, given: bool, drive: str) -> None:
    x, y = _norm_data(kind)
    model, reference = _norm_model(kind, 0), _norm_model(kind, 0)
    reference(x)  # exactly one training-mode forward at the unperturbed weights
    expected = _buffers(reference)
    assert any(not torch.equal(v, _buffers(model)[k]) for k, v in expected.items())  # the forward moved them
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5, model=model if given else None)
    if drive == "closure":
        sam.step(_closure(sam, model, x, y))
    else:
        _closure(sam, model, x, y)()
        sam.first_step(zero_grad=True)
        _closure(sam, model, x, y)()
        sam.second_step(zero_grad=True)
    after = _buffers(model)
    assert after.keys() == expected.keys()
    assert all(torch.equal(after[k], expected[k]) for k in expected)
    assert model[1].track_running_stats
    model(x)  # outside the perturbed window the statistics move again (nothing left installed)
    assert not torch.equal(_buffers(model)["1.running_mean"], expected["1.running_mean"])


def test_sam_opt_out_updates_the_statistics_twice() -> None:
    x, y = _norm_data("batchnorm")
    model = _norm_model("batchnorm", 0)
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5, freeze_running_stats=False)
    sam.step(_closure(sam, model, x, y))
    assert int(_buffers(model)["1.num_batches_tracked"]) == 2


def test_sam_running_statistics_options_are_checked() -> None:
    model = _norm_model("batchnorm", 0)
    with pytest.raises(
        InputDataError,
        match=r"model names .* needs freeze_running_stats=True; got freeze_running_stats=False with "
        r"model=Sequential\.",
    ):
        SAM(torch.optim.SGD(model.parameters(), lr=0.1), model=model, freeze_running_stats=False)
    with pytest.raises(InputTypeError, match=r"freeze_running_stats must be a bool; got str\."):
        SAM(torch.optim.SGD(model.parameters(), lr=0.1), freeze_running_stats="yes")  # type: ignore[arg-type]


def test_sam_failing_perturbed_pass_restores_weights_and_statistics() -> None:
    x, y = _norm_data("batchnorm")
    model = _norm_model("batchnorm", 0)
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.5)
    weights = [p.detach().clone() for p in model.parameters()]
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        sam.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted in the perturbed pass, after its forward
        loss.backward()
        return loss

    reference = _norm_model("batchnorm", 0)
    reference(x)
    reference(x)  # two forwards at w: the one below and the closure's first call
    expected = _buffers(reference)
    model(x)
    with pytest.raises(KeyboardInterrupt):
        sam.step(closure)
    assert not sam.perturbed and len(calls) == 2
    assert all(torch.equal(p.detach(), w) for p, w in zip(model.parameters(), weights, strict=True))
    assert all(torch.equal(b, expected[k]) for k, b in _buffers(model).items())
    with pytest.raises(SolverError, match=r"SAM\.step\(\) without a closure .*got closure=None\."):
        sam.step()  # the interrupted update is not pending
    assert len(sam.base_optimizer.state) == 0


# ---- 3. step() without closure and without first_step ---------------------------------------------------
def test_sam_step_without_closure_or_first_step_is_an_error() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=F64))
    sam = SAM(torch.optim.SGD([w], lr=0.1, momentum=0.9), rho=0.05)
    (w**2).sum().backward()
    message = (
        r"SAM\.step\(\) without a closure finishes an update started by first_step\(\), .*got closure=None\."
    )
    with pytest.raises(SolverError, match=message):
        sam.step()
    with pytest.raises(SolverError, match=message):
        sam.second_step()
    assert (
        torch.equal(w.detach(), torch.tensor([1.0, -2.0], dtype=F64)) and len(sam.base_optimizer.state) == 0
    )


def test_sam_step_without_closure_is_allowed_once_per_first_step() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=F64))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    (w**2).sum().backward()
    sam.first_step(zero_grad=True)
    (w**2).sum().backward()
    sam.restore()  # the GradScaler flow: restore, then scaler.step(sam) calls sam.step()
    sam.step()
    g = 2 * torch.tensor([1.0, -2.0], dtype=F64)
    eps = 0.05 * g / torch.linalg.vector_norm(g)
    expected = torch.tensor([1.0, -2.0], dtype=F64) - 0.1 * 2 * (torch.tensor([1.0, -2.0], dtype=F64) + eps)
    assert torch.allclose(w.detach(), expected, rtol=1e-14, atol=1e-15)
    with pytest.raises(SolverError, match=r"none is pending"):
        sam.step()
    sam.step(lambda: _square_closure(sam, w))  # a full closure update is always fine
    with pytest.raises(SolverError, match=r"none is pending"):
        sam.step()


def _square_closure(sam: SAM, w: torch.Tensor) -> torch.Tensor:
    sam.zero_grad()
    loss = (w**2).sum()
    loss.backward()
    return loss


def test_sam_step_with_closure_while_perturbed_is_an_error() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=F64))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    (w**2).sum().backward()
    sam.first_step()
    perturbed = w.detach().clone()
    with pytest.raises(SolverError, match=r"first_step\(\) already perturbed the weights; .*got a closure"):
        sam.step(lambda: _square_closure(sam, w))
    assert sam.perturbed and torch.equal(w.detach(), perturbed)


# ---- Entropy-SGD --------------------------------------------------------------------------------------
def test_entropy_sgd_group_added_later_continues_the_global_scope() -> None:
    a, b = (
        torch.nn.Parameter(torch.tensor([1.0], dtype=F64)),
        torch.nn.Parameter(torch.tensor([2.0], dtype=F64)),
    )
    opt = EntropySGD([a], generator=_gen(0), gamma=0.1, scoping=0.5, inner_steps=2, thermal_noise=0.0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (a**2).sum() + (b**2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    opt.add_param_group({"params": [b]})
    assert [g["outer_steps"] for g in opt.param_groups] == [3, 3]
    assert opt.current_gamma(opt.param_groups[1]) == pytest.approx(0.1 * 1.5**3, rel=1e-15)
    opt.step(closure)
    assert [g["outer_steps"] for g in opt.param_groups] == [4, 4]


def test_entropy_sgd_interrupted_inner_loop_restores_the_weights() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=F64))
    opt = EntropySGD(
        [w], generator=_gen(0), lr=1.0, inner_lr=0.1, inner_steps=5, gamma=0.5, thermal_noise=0.1
    )
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    with pytest.raises(KeyboardInterrupt):
        opt.step(closure)
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0], dtype=F64)) and opt.outer_steps == 0
    with pytest.raises(InputDataError, match=r"EntropySGD\.step needs a closure .*; got closure=None\."):
        opt.step()
