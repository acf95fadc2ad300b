"""Newton-KKT on the factored problem (solvers/convex/newton.py): local convergence, nondegenerate case."""

from __future__ import annotations

import torch

from flatminima.operators.dense import DenseOperator
from flatminima.problems import Instance
from flatminima.solvers.convex.formulation import formulate
from flatminima.solvers.convex.newton import kkt_newton


def _certified_instance(d: int, r: int, generator: torch.Generator) -> tuple[Instance, torch.Tensor]:
    """Sensing with m = dim T = r(2d - r) matrices, the first the dual certificate
    G = U V^T + U_perp W V_perp^T (||W|| = 1/2) of a random rank-r Z0: Z0 is the unique minimizer, e_1 its
    unique multiplier, and the KKT matrix is nonsingular (Jacobian of full row rank, strict
    complementarity)."""
    f64 = torch.float64
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=f64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=f64))
    s = torch.rand(r, generator=generator, dtype=f64) + 0.5
    W = torch.randn(d - r, d - r, generator=generator, dtype=f64)
    W = 0.5 * W / torch.linalg.matrix_norm(W, 2)
    G = U[:, :r] @ V[:, :r].mT + U[:, r:] @ W @ V[:, r:].mT
    m = r * (2 * d - r)
    matrices = torch.cat([G[None], torch.randn(m - 1, d, d, generator=generator, dtype=f64)])
    Z0 = (U[:, :r] * s) @ V[:, :r].mT
    operator = DenseOperator(matrices)
    return Instance.from_data(operator, operator.apply(Z0), ground_truth=Z0), torch.eye(m, dtype=f64)[0]


def test_newton_kkt_returns_to_a_perturbed_solution() -> None:
    """From factors and a multiplier 1e-5 off the KKT point, Newton-KKT reaches the solution and its
    multiplier, the KKT residual at 1e-12 ||b|| within 5 steps (quadratic convergence: 7 decades; a linear
    rate of 0.1 would need 8). The multiplier is only as accurate as J^T is conditioned (on 80 draws of
    this construction: Z within 1.4e-12, lambda within 3e-9, at most 4 steps)."""
    generator = torch.Generator().manual_seed(0)
    instance, lam = _certified_instance(8, 2, generator)
    formulation = formulate(instance, "nuclear_norm", eps=None)
    bmap, b, Z0 = formulation.bmap, formulation.b, instance.ground_truth
    assert bmap is not None and Z0 is not None
    U, s, Vh = torch.linalg.svd(Z0)
    U, s, V = U[:, :2], s[:2], Vh.mT[:, :2]
    assert float(torch.linalg.matrix_norm(bmap.adjoint(lam) @ V - U)) <= 1e-12  # e_1 is the multiplier
    start = [x + 1e-5 * torch.randn(x.shape, generator=generator, dtype=x.dtype) for x in (U, V, lam)]
    outcome = kkt_newton(bmap, b, start[0], s, start[1], start[2], max_steps=15)
    assert outcome is not None
    Z = (outcome.U * outcome.s) @ outcome.V.mT
    assert float(torch.linalg.matrix_norm(Z - Z0)) <= 1e-10
    assert float(torch.linalg.vector_norm(outcome.multiplier - lam)) <= 1e-7
    converged = [x <= 1e-12 * float(torch.linalg.vector_norm(b)) for x in outcome.residuals]
    assert True in converged and converged.index(True) <= 5
