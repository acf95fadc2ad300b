"""Lanczos eigenvalues and SLQ spectral densities against dense eigendecompositions."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from curvature_cases import dense_hessian, mlp_case, within
from torch import nn

from flatminima.curvature import (
    HessianOperator,
    MatrixOperator,
    exact_trace,
    lanczos_eigenvalues,
    lanczos_spectral_density,
)
from flatminima.curvature.lanczos import ROUND_OFF_FACTOR
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError


@pytest.fixture(scope="module")
def mlp():
    case = mlp_case(0, hidden=8, n=40)
    H = HessianOperator(case.loss, case.params())
    dense = dense_hessian(case.loss, case.params())
    return H, dense, torch.linalg.eigvalsh(dense)


def _pyhessian_power_iteration_matvecs(H, top: float, rel: float, generator) -> int:
    """PyHessian 0.1's power iteration (Rayleigh quotient of normalized iterates): products to reach rel."""
    v = torch.randn(H.size, generator=generator, dtype=torch.float64)
    v = v / v.norm()
    for count in range(1, 10_000):
        Hv = H.matvec(v)
        if abs(float(v @ Hv) - top) <= rel * abs(top):
            return count
        v = Hv / Hv.norm()
    raise AssertionError("power iteration did not converge")


def test_top_and_bottom_eigenvalues_match_eigvalsh(mlp) -> None:
    H, dense, eigenvalues = mlp
    assert eigenvalues[0] < 0 < eigenvalues[-1]  # indefinite: the bottom end is the most negative
    top = lanczos_eigenvalues(H, 3, generator=torch.Generator().manual_seed(0), tol=1e-12)
    torch.testing.assert_close(top.eigenvalues, eigenvalues.flip(0)[:3], rtol=1e-8, atol=1e-10)
    bottom = lanczos_eigenvalues(
        H, 2, which="smallest", generator=torch.Generator().manual_seed(1), tol=1e-12
    )
    torch.testing.assert_close(bottom.eigenvalues, eigenvalues[:2], rtol=1e-8, atol=1e-10)
    for result in (top, bottom):
        assert result.converged
        V = result.eigenvectors
        torch.testing.assert_close(V.T @ V, torch.eye(V.shape[1], dtype=torch.float64), atol=1e-9, rtol=0)
        # the reported residuals are the true ones, and they bound the eigenvalue errors
        residual = (dense @ V - V * result.eigenvalues).norm(dim=0)
        torch.testing.assert_close(residual, result.residuals, rtol=1e-4, atol=1e-13)
        floor = ROUND_OFF_FACTOR * torch.finfo(torch.float64).eps * float(result.eigenvalues.abs().max())
        assert bool((result.error_bounds <= result.residuals.clamp(min=floor)).all())


def test_lanczos_on_a_diagonal_block(mlp) -> None:
    H, dense, _ = mlp
    block = H.select("2.weight")
    start = H.names.index("2.weight")
    offset = sum(math.prod(H.shapes[n]) for n in H.names[:start])
    sub = dense[offset : offset + block.size, offset : offset + block.size]
    result = lanczos_eigenvalues(block, 1, generator=torch.Generator().manual_seed(2))
    assert float(result.eigenvalues[0]) == pytest.approx(float(torch.linalg.eigvalsh(sub)[-1]), rel=1e-8)


def test_lanczos_beats_pyhessian_power_iteration() -> None:
    """Top eigenvalue to 1e-8 relative with no more products than power iteration needs for 1e-2.

    Power iteration's count swings with the start vector (5 to 50 here), so both methods are compared
    over the same eight start seeds.
    """
    case = mlp_case(0, inputs=10, hidden=16, classes=4, n=200)
    H = MatrixOperator(HessianOperator(case.loss, case.params()).dense())  # counts do not depend on how
    eigenvalues = torch.linalg.eigvalsh(H.matrix)
    top = float(eigenvalues.abs().max())
    lanczos_total = power_total = 0
    for seed in range(8):
        lanczos = lanczos_eigenvalues(H, 1, generator=torch.Generator().manual_seed(seed), tol=1e-8)
        assert abs(float(lanczos.eigenvalues[0]) - top) <= 1e-8 * top
        assert lanczos.converged and float(lanczos.error_bounds[0]) <= 1e-8 * top
        lanczos_total += lanczos.num_matvecs
        power_total += _pyhessian_power_iteration_matvecs(H, top, 1e-2, torch.Generator().manual_seed(seed))
    assert lanczos_total <= power_total, (lanczos_total, power_total)


@pytest.mark.parametrize("case_seed", range(4))
def test_float32_error_bounds_do_not_claim_more_than_round_off(case_seed: int) -> None:
    """float32 products carry ~eps ||H|| error: the bounds say so, and they hold against float64."""
    case = mlp_case(case_seed, inputs=10, hidden=16, classes=4, n=200)
    net32 = copy.deepcopy(case.net).float()
    x32 = case.x.float()
    # the float64 Hessian at the very same (float32-rounded) weights and inputs
    H64 = HessianOperator.from_model(
        copy.deepcopy(net32).double(), nn.functional.cross_entropy, [(x32.double(), case.y)], mode="eval"
    )
    exact = float(torch.linalg.eigvalsh(H64.dense())[-1])
    H32 = HessianOperator.from_model(net32, nn.functional.cross_entropy, [(x32, case.y)], mode="eval")
    floor = ROUND_OFF_FACTOR * torch.finfo(torch.float32).eps
    for seed in range(3):
        result = lanczos_eigenvalues(H32, 1, generator=torch.Generator().manual_seed(seed), tol=1e-12)
        assert result.converged  # a tol below round-off is read as the floor, not chased forever
        bound = float(result.error_bounds[0])
        assert bound == pytest.approx(floor * abs(float(result.eigenvalues[0])), rel=1e-6)
        assert abs(float(result.eigenvalues[0]) - exact) <= bound


def test_lanczos_exhausts_small_krylov_spaces_exactly() -> None:
    H = MatrixOperator(torch.diag(torch.tensor([4.0, -2.0, 1.0], dtype=torch.float64)))
    result = lanczos_eigenvalues(H, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.eigenvalues, torch.tensor([4.0, 1.0, -2.0], dtype=torch.float64))
    assert result.converged and result.num_matvecs == 3


def test_lanczos_errors() -> None:
    H = MatrixOperator(torch.eye(3, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigurationError, match="which must be 'largest' or 'smallest'"):
        lanczos_eigenvalues(H, 1, which="both", generator=g)
    with pytest.raises(InputDataError, match=r"num_eigenvalues must satisfy 1 <= num_eigenvalues <= n = 3"):
        lanczos_eigenvalues(H, 4, generator=g)
    with pytest.raises(InputDataError, match="tol must satisfy"):
        lanczos_eigenvalues(H, 1, tol=0.0, generator=g)
    with pytest.raises(InputTypeError, match="generator must be a torch.Generator"):
        lanczos_eigenvalues(H, 1)


def test_density_integrates_to_one_and_has_mean_trace_over_n(mlp) -> None:
    H, dense, eigenvalues = mlp
    density = lanczos_spectral_density(H, 30, num_repeats=8, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(density.weights.sum(dim=1), torch.ones(8, dtype=torch.float64))
    points, values = density.grid(4000, bandwidth=0.05)
    assert float(torch.trapezoid(values, points)) == pytest.approx(1.0, abs=1e-6)
    mean = density.mean()
    assert within(mean, float(torch.trace(dense)) / H.size)
    assert density.num_matvecs == 8 * 30 and mean.num_matvecs == density.num_matvecs
    # the density's first moment is exactly the average Rayleigh quotient of the probes
    second = density.moment(2)
    assert within(second, float((eigenvalues**2).mean()))


def test_slq_weights_are_squared_first_ritz_components() -> None:
    """Pitfall: the quadrature weights are (e_1^T s_j)^2, not e_1^T s_j nor other components.

    With n steps on a matrix with distinct eigenvalues the quadrature is the probe's exact spectral
    measure: nodes = eigenvalues and weights = (q_i^T v)^2 for the unit probe v.
    """
    g = torch.Generator().manual_seed(5)
    n = 40
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.linspace(-1.0, 3.0, n, dtype=torch.float64) + 0.01 * torch.rand(n, generator=g)
    H = MatrixOperator((Q * eigenvalues) @ Q.T)
    density = lanczos_spectral_density(H, n, num_repeats=1, generator=torch.Generator().manual_seed(6))
    order = density.nodes[0].argsort()
    torch.testing.assert_close(density.nodes[0][order], eigenvalues, rtol=1e-8, atol=1e-10)
    v = 2.0 * torch.randint(0, 2, (n, 1), generator=torch.Generator().manual_seed(6)).double()[:, 0] - 1.0
    v = v / v.norm()
    torch.testing.assert_close(density.weights[0][order], (Q.T @ v) ** 2, rtol=1e-7, atol=1e-12)
    # unsquared components would not sum to one
    assert float(density.weights[0].sqrt().sum()) > 1.5


def test_negative_mass_fraction_against_dense(mlp) -> None:
    _, dense, eigenvalues = mlp
    H = MatrixOperator(dense)  # the SLQ algorithm is under test here; products through autograd are slower
    density = lanczos_spectral_density(H, H.size, num_repeats=20, generator=torch.Generator().manual_seed(6))
    fraction = density.negative_mass_fraction()
    truth = float((eigenvalues < 0).double().mean())
    assert 0 < truth < 1
    assert within(fraction, truth)
    assert density.negative_mass_fraction(threshold=1e6).value == 0.0


def test_broadened_density_matches_gaussian_mixture_of_eigenvalues() -> None:
    eigenvalues = torch.tensor([-1.0, 0.5, 2.0, 3.0], dtype=torch.float64)
    H = MatrixOperator(torch.diag(eigenvalues))
    density = lanczos_spectral_density(H, 4, num_repeats=1, generator=torch.Generator().manual_seed(0))
    points = torch.linspace(-3, 5, 17, dtype=torch.float64)
    # Rademacher probe on a diagonal matrix: every weight is exactly 1/4
    expected = sum(
        torch.exp(-0.5 * ((points - lam) / 0.3) ** 2) / (0.3 * math.sqrt(2 * math.pi)) / 4
        for lam in eigenvalues
    )
    torch.testing.assert_close(density.evaluate(points, bandwidth=0.3), expected, rtol=1e-8, atol=1e-12)


def test_density_errors() -> None:
    H = MatrixOperator(torch.eye(3, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(InputDataError, match="num_repeats must be >= 1"):
        lanczos_spectral_density(H, 3, num_repeats=0, generator=g)
    with pytest.raises(InputDataError, match="num_iterations must be >= 1"):
        lanczos_spectral_density(H, 0, generator=g)
    with pytest.raises(InputTypeError, match="generator"):
        lanczos_spectral_density(H, 3)
    density = lanczos_spectral_density(H, 3, generator=g)
    with pytest.raises(InputDataError, match="bandwidth must satisfy 0.0 < bandwidth"):
        density.evaluate(torch.zeros(3, dtype=torch.float64), bandwidth=0.0)
    with pytest.raises(InputDataError, match="threshold must satisfy 0.0 <= threshold"):
        density.negative_mass_fraction(threshold=-1.0)


def test_density_moments_are_exact_per_probe(mlp) -> None:
    """Gauss quadrature with m nodes integrates polynomials of degree < 2m exactly: v^T H^j v."""
    _, dense, _ = mlp
    H = MatrixOperator(dense)
    density = lanczos_spectral_density(H, 6, num_repeats=1, generator=torch.Generator().manual_seed(7))
    v = (
        2.0 * torch.randint(0, 2, (H.size, 1), generator=torch.Generator().manual_seed(7)).double()[:, 0]
        - 1.0
    )
    v = v / v.norm()
    for order in range(12):
        expected = float(v @ torch.linalg.matrix_power(dense, order) @ v)
        assert density.moment(order).value == pytest.approx(expected, rel=1e-8, abs=1e-14)
    assert float(exact_trace(H)) / H.size == pytest.approx(float(torch.linalg.eigvalsh(dense).mean()))
