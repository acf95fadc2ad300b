"""Structured building blocks of the factor-space flat search: scale probe, spectral start, certificate.

Everything here touches the rescaled map B only through its factored products (B(P Q^T), B^*(y) V,
B^*(y)^T U), so it runs at the sizes of :mod:`~flatminima.solvers.convex.factor_search` without forming a
d1 x d2 matrix (except where ``exact`` asks for the dense dual matrix of a small problem).

* :func:`probe_scale`: gamma^2, the mean gain ||B(u v^T)||^2 / (||u||^2 ||v||^2) of Gaussian rank-one probes;
* :func:`spectral_start`: the top-k SVD of B^*(y) by randomized subspace iteration (Halko, Martinsson
  and Tropp, SIAM Review 2011);
* :func:`certify_structured`: the KKT certificate of (Z, lambda) with ||B^*(lambda)||_op bounded by block
  Lanczos on the part of B^*(lambda) off the tangent space of Z.

References:
    Ding, Drusvyatskiy, Fazel, Harchaoui (2024), Theorem 3.2; Halko, Martinsson, Tropp (2011).
"""

from __future__ import annotations

import torch

from flatminima.solvers.convex.certificate import Candidate, make_certificate, operator_norm, tangent_residual
from flatminima.solvers.convex.lanczos import block_lanczos_norm
from flatminima.solvers.convex.linear_map import ScaledMap


def unit_generator(generator: torch.Generator | None) -> torch.Generator:
    """The given generator, or a fixed-seed one (the factor search is deterministic by default)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def random_normal(*shape: int, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian draws from a CPU generator, moved to the dtype/device of ``like``."""
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(like)


def probe_scale(bmap: ScaledMap, like: torch.Tensor, generator: torch.Generator, probes: int = 4) -> float:
    """gamma^2 ~ ||B(u v^T)||^2 / (||u||^2 ||v||^2) averaged over Gaussian rank-one probes."""
    d1, d2 = bmap.shape
    total = 0.0
    for _ in range(probes):
        u = random_normal(d1, 1, like=like, generator=generator)
        v = random_normal(d2, 1, like=like, generator=generator)
        value = bmap.apply_factored(u, v)
        total += float(value.square().sum()) / (float(u.square().sum()) * float(v.square().sum()))
    return max(total / probes, 1e-300)


def spectral_start(
    bmap: ScaledMap, y: torch.Tensor, width: int, generator: torch.Generator, power: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``width`` SVD (U, s, V) of B^*(y) by randomized subspace iteration on the structured map."""
    d1, d2 = bmap.shape
    columns = min(width + 5, d1, d2)
    if bmap.operator.shape_in[0] * bmap.operator.shape_in[1] <= 250_000 and not bmap.rank_one:
        G = bmap.adjoint(y)  # small or dense operator: form B^*(y) once

        def matmul(X: torch.Tensor) -> torch.Tensor:
            return G @ X

        def rmatmul(Y: torch.Tensor) -> torch.Tensor:
            return G.mT @ Y

    else:

        def matmul(X: torch.Tensor) -> torch.Tensor:
            return bmap.adjoint_matmul(y, X)

        def rmatmul(Y: torch.Tensor) -> torch.Tensor:
            return bmap.adjoint_t_matmul(y, Y)

    Q, _ = torch.linalg.qr(matmul(random_normal(d2, columns, like=y, generator=generator)))
    for _ in range(power):
        P, _ = torch.linalg.qr(rmatmul(Q))
        Q, _ = torch.linalg.qr(matmul(P))
    small = rmatmul(Q).mT  # Q^T B^*(y), (columns, d2)
    Us, s, Vh = torch.linalg.svd(small, full_matrices=False)
    return Q @ Us[:, :width], s[:width], Vh[:width].mT


def certify_structured(
    bmap: ScaledMap,
    b: torch.Tensor,
    U: torch.Tensor,
    s: torch.Tensor,
    V: torch.Tensor,
    lam: torch.Tensor,
    *,
    tolerance: float,
    exact: bool,
    generator: torch.Generator,
    source: str,
) -> Candidate:
    """KKT certificate of (Z = U diag(s) V^T, lambda) using only structured products of B^*(lambda)."""
    primal = float(torch.linalg.vector_norm(bmap.apply_factored(U * s, V) - b))
    scale = float(torch.linalg.vector_norm(b))
    dual_matrix = None
    if exact:
        dual_matrix = bmap.adjoint(lam)
        tangent = tangent_residual(U, V, dual_matrix)
        dual_norm = operator_norm(dual_matrix, symmetric=False)
    else:
        GV = bmap.adjoint_matmul(lam, V)
        GtU = bmap.adjoint_t_matmul(lam, U)
        tangent = float(((GtU - V).square().sum() + (GV - U @ (U.mT @ GV)).square().sum()).sqrt())

        def off_tangent(X: torch.Tensor) -> torch.Tensor:
            X = X - V @ (V.mT @ X)
            Y = bmap.adjoint_matmul(lam, X)
            return Y - U @ (U.mT @ Y)

        def off_tangent_t(Y: torch.Tensor) -> torch.Tensor:
            Y = Y - U @ (U.mT @ Y)
            X = bmap.adjoint_t_matmul(lam, Y)
            return X - V @ (V.mT @ X)

        estimate = block_lanczos_norm(
            off_tangent,
            off_tangent_t,
            bmap.shape[1],
            dtype=b.dtype,
            device=b.device,
            generator=generator,
        )
        dual_norm = max(1.0, estimate.sigma_bound) + tangent
    certificate = make_certificate(
        primal_residual=primal,
        scale=scale,
        primal_objective=float(s.sum()),
        dual_objective=float(lam @ b),
        dual_norm=dual_norm,
        dual_norm_exact=exact,
        tangent=tangent,
        tolerance=tolerance,
    )
    return Candidate(U, s, V, lam, dual_matrix, certificate, source)


def factor_svd(L: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of L R^T from thin QR factors."""
    Ql, Rl = torch.linalg.qr(L)
    Qr, Rr = torch.linalg.qr(R)
    Uc, s, Vch = torch.linalg.svd(Rl @ Rr.mT)
    return Ql @ Uc, s, Qr @ Vch.mT
