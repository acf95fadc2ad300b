"""The l1-ball projection (known answers, properties) and the robust PCA loss with its local C^2 model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from objective_cases import CASES, assert_close, assert_tuple_close, robust_pca_instance

from flatminima.errors import InputDataError, InputTypeError
from flatminima.objectives import RobustPCALoss, project_l1_ball

F64 = torch.float64


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# ---- projection ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("z", "radius", "expected"),
    [
        (_t(3.0, -1.0, 0.5), 2.0, _t(2.0, 0.0, 0.0)),
        (_t(1.0, 1.0), 1.0, _t(0.5, 0.5)),
        (_t(2.0, -2.0, 1.0), 3.0, _t(4 / 3, -4 / 3, 1 / 3)),
        (_t(0.5, -0.25), 1.0, _t(0.5, -0.25)),  # inside: unchanged
        (_t(0.5, -0.5), 1.0, _t(0.5, -0.5)),  # on the sphere: unchanged
        (_t(3.0, -1.0), 0.0, _t(0.0, 0.0)),  # radius 0: the origin
        (_t(0.0, 0.0, 0.0), 1.0, _t(0.0, 0.0, 0.0)),
        (_t(-5.0), 2.0, _t(-2.0)),
    ],
)
def test_project_l1_ball_known_answers(z: torch.Tensor, radius: float, expected: torch.Tensor) -> None:
    assert torch.allclose(project_l1_ball(z, radius), expected, rtol=0, atol=1e-15)


def test_project_l1_ball_keeps_shape_dtype_and_accepts_tensor_radius() -> None:
    Z = torch.tensor([[3.0, -1.0], [0.5, 0.0]], dtype=torch.float32)
    P = project_l1_ball(Z, torch.tensor(2.0))
    assert P.shape == Z.shape and P.dtype == torch.float32
    assert torch.equal(P, torch.tensor([[2.0, 0.0], [0.0, 0.0]]))


def _bisection_projection(z: torch.Tensor, radius: float) -> torch.Tensor:
    if float(z.abs().sum()) <= radius:
        return z.clone()
    low, high = 0.0, float(z.abs().max())
    for _ in range(200):
        theta = (low + high) / 2
        if float((z.abs() - theta).clamp_min(0).sum()) > radius:
            low = theta
        else:
            high = theta
    return torch.sign(z) * (z.abs() - high).clamp_min(0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 12), radius=st.floats(0.0, 6.0))
def test_project_l1_ball_properties(seed: int, n: int, radius: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(n, generator=generator, dtype=F64)
    p = project_l1_ball(z, radius)
    assert float(p.abs().sum()) <= radius * (1 + 1e-12) + 1e-15
    assert torch.allclose(p, _bisection_projection(z, radius), rtol=0, atol=1e-12)
    assert torch.allclose(project_l1_ball(p, radius), p, rtol=0, atol=1e-14)
    # optimality: <z - p, s - p> <= 0 for every s in the ball (vertices +- radius e_j suffice)
    for j in range(n):
        for sign in (1.0, -1.0):
            s = torch.zeros(n, dtype=F64)
            s[j] = sign * radius
            assert float((z - p) @ (s - p)) <= 1e-10


def test_project_l1_ball_errors() -> None:
    with pytest.raises(InputDataError, match=r"radius must satisfy 0.0 <= radius; got radius=-1.0"):
        project_l1_ball(_t(1.0), -1.0)
    with pytest.raises(InputTypeError, match=r"z must be a torch.Tensor; got list"):
        project_l1_ball([1.0], 1.0)  # type: ignore[arg-type]


# ---- the loss -----------------------------------------------------------------------------------
def test_ground_truth_is_a_zero_of_loss_and_gradient(generator: torch.Generator) -> None:
    case = CASES["robust-pca-boundary"]
    objective = case.build(generator)
    assert isinstance(objective, RobustPCALoss)
    params = case.zero_loss(objective, generator)
    assert float(objective.value(params)) < 1e-26
    assert_tuple_close(objective.grad(params), tuple(torch.zeros_like(p) for p in params))
    assert_close(objective.outliers(params), objective.instance.extras["outliers"])
    assert_close(objective.end_to_end(params), objective.instance.ground_truth)


def test_default_radius_comes_from_the_instance(generator: torch.Generator) -> None:
    inst = robust_pca_instance(generator)
    assert RobustPCALoss(inst, width=2).radius == inst.metadata["outlier_l1_norm"]
    assert RobustPCALoss(inst, width=2, radius=0.25).radius == 0.25


def test_local_model_majorizes_and_touches_the_loss(generator: torch.Generator) -> None:
    objective = CASES["robust-pca-boundary"].build(generator)
    base = objective.random_params(generator=generator)
    model = objective.curvature_model(base)
    assert float(objective.value(base)) > 1.0  # off the ball
    assert_close(model(base), objective.value(base))
    # same gradient at the base point
    leaves = tuple(p.clone().requires_grad_(True) for p in base)
    model_grad = torch.autograd.grad(model(leaves), leaves)
    assert_tuple_close(tuple(model_grad), objective.grad(base))
    # majorization everywhere
    for _ in range(20):
        other = tuple(
            p + 0.5 * q for p, q in zip(base, objective.random_params(generator=generator), strict=True)
        )
        assert float(model(other)) >= float(objective.value(other)) - 1e-12


def test_curvature_inside_the_ball_is_that_of_the_model(generator: torch.Generator) -> None:
    # Strictly inside the ball the loss is 0 near the point, but the curvature (of the local model
    # centred there) is the A = identity Hessian 2 ||dL R^T + L dR^T||^2.
    case = CASES["robust-pca-interior"]
    objective = case.build(generator)
    L, R = case.zero_loss(objective, generator)
    dL, dR = objective.random_params(generator=generator)
    nearby = (L + 1e-3 * dL, R + 1e-3 * dR)
    assert float(objective.value(nearby)) == 0.0
    Q = dL @ R.mT + L @ dR.mT
    assert_tuple_close(objective.hvp((L, R), (dL, dR)), (2 * Q @ R, 2 * Q.mT @ L))


def test_robust_pca_rejects_other_operators_and_missing_radius(generator: torch.Generator) -> None:
    sensing = CASES["bilinear-dense"].build(generator).instance  # type: ignore[attr-defined]
    with pytest.raises(
        InputDataError, match=r"RobustPCALoss needs an instance observed through the identity"
    ):
        RobustPCALoss(sensing, width=2)
    inst = dataclasses.replace(robust_pca_instance(generator), metadata={})
    with pytest.raises(InputDataError, match=r"RobustPCALoss needs the l1 radius: give radius="):
        RobustPCALoss(inst, width=2)
    with pytest.raises(InputDataError, match=r"radius must satisfy 0.0 <= radius; got radius=-2.0"):
        RobustPCALoss(inst, width=2, radius=-2.0)
