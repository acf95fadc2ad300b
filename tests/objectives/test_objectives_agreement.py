"""Every closed form against torch.func (dense Hessian, forward-over-reverse HVP) at relative 1e-10."""

from __future__ import annotations

import pytest
import torch
from objective_cases import CASES, Case, assert_close, assert_tuple_close, dense_sensing_matrices

from flatminima.objectives import (
    AutogradObjective,
    BilinearFactorization,
    DeepFactorization,
    HadamardFactorization,
    RobustPCALoss,
    SymmetricFactorization,
)

POINTS = ["zero_loss", "random"]


def _point(case: Case, objective, point: str, generator: torch.Generator):  # type: ignore[no-untyped-def]
    if point == "zero_loss":
        return case.zero_loss(objective, generator)
    return objective.random_params(generator=generator)


@pytest.fixture(params=sorted(CASES))
def case_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("point", POINTS)
def test_closed_forms_equal_autograd(case_name: str, point: str) -> None:
    generator = torch.Generator().manual_seed(7)
    case = CASES[case_name]
    objective = case.build(generator)
    params = _point(case, objective, point, generator)
    direction = objective.random_params(generator=generator)
    reference = AutogradObjective.from_objective(objective)

    if point == "zero_loss":
        assert float(objective.value(params)) < 1e-24
    assert_close(objective.value(params), reference.value(params))
    assert_tuple_close(objective.grad(params), reference.grad(params))
    assert_tuple_close(objective.hvp(params, direction), reference.hvp(params, direction))
    assert_tuple_close(objective.block_traces(params), reference.block_traces(params))
    assert_close(objective.hessian_trace(params), reference.hessian_trace(params))
    assert_close(objective.scaled_trace(params), reference.scaled_trace(params))


def test_autograd_hvp_matches_its_dense_hessian() -> None:
    # The reference's two routes (forward-over-reverse HVP, dense Hessian) agree with each other.
    generator = torch.Generator().manual_seed(3)
    objective = CASES["deep3-dense"].build(generator)
    reference = AutogradObjective.from_objective(objective)
    params = objective.random_params(generator=generator)
    direction = objective.random_params(generator=generator)
    H = reference.hessian_matrix(params)
    flat = torch.cat([d.reshape(-1) for d in direction])
    hvp = torch.cat([h.reshape(-1) for h in reference.hvp(params, direction)])
    assert_close(hvp, H @ flat)
    assert_close(H, H.mT)


def test_autograd_reference_known_answer() -> None:
    # f(x, y) = sum x^4 + x . y^2: Hessian blocks diag(12 x^2), diag(2 x).
    def f(p):  # type: ignore[no-untyped-def]
        x, y = p
        return (x**4).sum() + (x * y**2).sum()

    ref = AutogradObjective(f, shapes=[(3,), (3,)], names=["x", "y"], block_weights=[1.0, 0.5])
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    traces = ref.block_traces((x, y))
    assert float(traces[0]) == pytest.approx(12 * (1 + 4 + 0.25), rel=1e-14)
    assert float(traces[1]) == pytest.approx(2 * (1 - 2 + 0.5), rel=1e-14)
    assert float(ref.scaled_trace((x, y))) == pytest.approx(63.0 + 0.5 * -1.0, rel=1e-14)
    gx, gy = ref.grad((x, y))
    assert torch.allclose(gx, 4 * x**3 + y**2)
    assert torch.allclose(gy, 2 * x * y)
    # the default block weights average each block over its rows
    assert AutogradObjective(f, shapes=[(3,), (3,)]).block_weights == (1 / 3, 1 / 3)


def _dense_value(objective, params) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The loss from the dense sensing matrices A^*(e_l), independent of the factored routines."""
    inst = objective.instance
    A = dense_sensing_matrices(inst)
    if isinstance(objective, BilinearFactorization):
        X = params[0] @ params[1].mT
    elif isinstance(objective, SymmetricFactorization):
        X = params[0] @ params[0].mT - params[1] @ params[1].mT
    elif isinstance(objective, DeepFactorization):
        X = params[0]
        for W in params[1:]:
            X = W @ X
    elif isinstance(objective, HadamardFactorization):
        x = params[0]
        for v in params[1:]:
            x = x * v
        X = x.unsqueeze(-1)
    else:
        raise AssertionError(type(objective))
    res = torch.einsum("lij,ij->l", A, X) - inst.observations
    return res.square().sum() / A.shape[0]


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if not n.startswith("robust")])
def test_value_equals_dense_formula(name: str) -> None:
    generator = torch.Generator().manual_seed(11)
    objective = CASES[name].build(generator)
    params = objective.random_params(generator=generator)
    assert_close(objective.value(params), _dense_value(objective, params))


def test_robust_pca_value_equals_explicit_distance() -> None:
    generator = torch.Generator().manual_seed(5)
    objective = CASES["robust-pca-boundary"].build(generator)
    assert isinstance(objective, RobustPCALoss)
    L, R = objective.random_params(generator=generator)
    Y = objective.instance.ground_truth + objective.instance.extras["outliers"]
    Z = Y - L @ R.mT
    P = objective.outliers((L, R))
    assert float(P.abs().sum()) == pytest.approx(objective.radius, rel=1e-12)
    assert_close(objective.value((L, R)), (Z - P).square().sum())


@pytest.mark.parametrize("kind", ["dense", "bilinear", "mask", "identity", "symmetric_rank_one"])
@pytest.mark.parametrize("point", POINTS)
def test_bilinear_quadratic_forms_equal_the_dense_hessian(kind: str, point: str) -> None:
    """v^T H v for a batch of directions, against the dense autograd Hessian (float64, relative 1e-10)."""
    generator = torch.Generator().manual_seed(11)
    case = CASES[f"bilinear-{kind}"]
    objective = case.build(generator)
    params = _point(case, objective, point, generator)
    directions = [objective.random_params(generator=generator) for _ in range(3)]
    batched = tuple(torch.stack(parts) for parts in zip(*directions, strict=True))
    H = AutogradObjective.from_objective(objective).hessian_matrix(params)
    flat = torch.stack([torch.cat([d.reshape(-1) for d in direction]) for direction in directions])
    expected = ((flat @ H) * flat).sum(dim=1)
    assert_close(objective.hessian_quadratic_forms(params, batched), expected)


def test_bilinear_quadratic_forms_reject_bad_directions() -> None:
    from flatminima.errors import InputDataError, InputTypeError

    generator = torch.Generator().manual_seed(11)
    objective = CASES["bilinear-dense"].build(generator)
    L, R = objective.random_params(generator=generator)
    d1, k = L.shape
    d2 = R.shape[0]
    unbatched = rf"directions\[0\] \(L\) must have shape \({d1}, {d1}, {k}\); got \({d1}, {k}\)"
    with pytest.raises(InputDataError, match=unbatched):  # the batch size is read off the first entry
        objective.hessian_quadratic_forms((L, R), (L, R[None]))
    mixed = rf"directions\[1\] \(R\) must have shape \(1, {d2}, {k}\); got \(2, {d2}, {k}\)"
    with pytest.raises(InputDataError, match=mixed):  # one batch size for all entries
        objective.hessian_quadratic_forms((L, R), (L[None], torch.stack([R, R])))
    with pytest.raises(InputDataError, match=r"directions\[0\] \(L\) must have the dtype"):
        objective.hessian_quadratic_forms((L, R), (L[None].float(), R[None]))
    with pytest.raises(InputTypeError, match=r"directions\[1\] \(R\) must be a torch.Tensor"):
        objective.hessian_quadratic_forms((L, R), (L[None], "R"))
    with pytest.raises(InputTypeError, match=r"directions must be a tuple of 2 tensors \(L, R\)"):
        objective.hessian_quadratic_forms((L, R), L[None])
    with pytest.raises(InputDataError, match=r"directions\[0\] \(L\) must have finite entries"):
        objective.hessian_quadratic_forms((L, R), (torch.full_like(L, torch.nan)[None], R[None]))
