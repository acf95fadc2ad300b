"""Every problem kind in its recovery regime: flat and NNM recover M to < 1e-6, certified at 1e-9."""

from __future__ import annotations

import pytest
import torch

from flatminima.solvers import ConvexResult, Status, solve_flat, solve_nuclear_norm

from .conftest import recovery_instance


@pytest.mark.parametrize("solve", [solve_flat, solve_nuclear_norm], ids=["flat", "nuclear_norm"])
def test_recovers_with_certificate(recovery_kind: str, solve: object) -> None:
    instance = recovery_instance(recovery_kind)
    result = solve(instance)  # type: ignore[operator]
    assert isinstance(result, ConvexResult)
    assert result.status is Status.CONVERGED, result.message
    assert result.certificate.satisfied
    assert result.certificate.tolerance == 1e-9
    assert result.certificate.max_relative_residual <= 1e-9
    assert result.recovery_error(instance.ground_truth) < 1e-6
    assert result.recovered(instance.ground_truth)
    assert result.matrix.dtype == torch.float64 and result.matrix.device.type == "cpu"
    assert result.matrix.shape == instance.ground_truth.shape
    assert result.iterations >= 1 and result.wall_time > 0 and len(result.history) >= 1


@pytest.mark.parametrize(
    "recovery_kind", ["matrix_sensing", "bilinear_sensing", "matrix_completion", "quadratic_network"]
)
def test_certificate_is_recomputable(recovery_kind: str) -> None:
    """The reported residuals are those of the returned pair (Z, lambda), not solver bookkeeping."""
    instance = recovery_instance(recovery_kind)
    result = solve_flat(instance)
    assert isinstance(result, ConvexResult) and result.multiplier is not None
    from flatminima.solvers.convex.formulation import formulate

    bmap = formulate(instance, "flat", eps=None).bmap
    assert bmap is not None
    Z = result.solution
    primal = float(torch.linalg.vector_norm(bmap.apply(Z) - instance.observations))
    G = bmap.adjoint(result.multiplier)
    dual_norm = float(torch.linalg.matrix_norm(G, ord=2))
    gap = abs(
        float(torch.linalg.matrix_norm(Z, ord="nuc")) - float(result.multiplier @ instance.observations)
    )
    assert primal == pytest.approx(result.certificate.primal_residual, abs=1e-12)
    assert dual_norm <= 1 + 1e-9
    assert gap <= 1e-9 * float(torch.linalg.matrix_norm(Z, ord="nuc"))


def test_flat_differs_from_nuclear_norm_factors_but_not_matrix() -> None:
    """In the recovery regime both recover M; the flat factors are not the norm-minimal ones."""
    instance = recovery_instance("matrix_sensing")
    flat, nnm = solve_flat(instance), solve_nuclear_norm(instance)
    assert isinstance(flat, ConvexResult) and isinstance(nnm, ConvexResult)
    assert torch.allclose(flat.matrix, nnm.matrix, atol=1e-10)
    L_f, R_f = flat.factors(4)
    L_n, R_n = nnm.factors(4)
    flat_norm = float(L_f.square().sum() + R_f.square().sum())
    nnm_norm = float(L_n.square().sum() + R_n.square().sum())
    assert nnm_norm == pytest.approx(2 * float(nnm.singular_values.sum()), rel=1e-12)
    assert flat_norm > nnm_norm  # norm-minimal is strictly smaller in norm (kappa > 1)


def test_float32_follows_the_instance() -> None:
    instance = recovery_instance("matrix_sensing").to(dtype=torch.float32)
    result = solve_flat(instance)
    assert isinstance(result, ConvexResult)
    assert result.matrix.dtype == torch.float32
    assert result.certificate.tolerance == 1e-5
    assert result.status is Status.CONVERGED, result.message
    assert result.recovery_error(instance.ground_truth) < 1e-4


@pytest.mark.gpu
def test_cuda_follows_the_instance() -> None:
    instance = recovery_instance("matrix_sensing").to(device="cuda")
    result = solve_flat(instance)
    assert isinstance(result, ConvexResult)
    assert result.matrix.device.type == "cuda"
    assert result.status is Status.CONVERGED
    assert result.recovery_error(instance.ground_truth) < 1e-6
