"""Constraint sets C of min ||Z||_* s.t. Z in C, with exact projections and dual functions.

Three sets cover every relaxation of the toolkit:

* :class:`AffineSet` {Z : B(Z) = b} (P_flat, NNM, completion, quadratic networks). The projection
  Z - B^*(B B^*)^{-1}(B(Z) - b) uses one Cholesky factor of the m x m Gram matrix, computed once
  (an eigendecomposition pseudo-inverse when B B^* is singular; inconsistent data are reported as
  infeasible). Dual: d(lambda) = <lambda, b> with G = B^*(lambda).
* :class:`BallSet` {Z : ||B(Z) - b||_2 <= eps} (noisy measurements, Ding et al. 2024, Appendix A). The
  projection solves a scalar secular equation in the eigenbasis of B B^*. Dual: <lambda, b> - eps ||lambda||.
* :class:`L1BallSet` {X : ||Y - X||_{1,1} <= tau} (robust PCA). Projection by sort-and-threshold.
  Dual: <G, Y> - tau ||G||_inf for any G.

Each set turns a subgradient estimate G ~ rho U (from ADMM) into a dual-feasible-type certificate:
``dual(G) -> (lambda, B^*(lambda), dual value)``, the least-squares multiplier of G.

References:
    Boyd, Parikh, Chu, Peleato, Eckstein. Distributed optimization and statistical learning via the
    alternating direction method of multipliers (2011). Duchi, Shalev-Shwartz, Singer, Chandra.
    Efficient projections onto the l1-ball for learning in high dimensions (ICML 2008).
"""

from __future__ import annotations

import abc
import typing

import torch

from flatminima.solvers.convex.linear_map import ScaledMap


class ConstraintSet(abc.ABC):
    """A closed convex set C of d1 x d2 matrices with a projection and a dual function."""

    #: the norm used to make the primal residual relative.
    scale: float

    @abc.abstractmethod
    def project(self, V: torch.Tensor) -> torch.Tensor:
        """The Euclidean projection of V onto C."""

    @abc.abstractmethod
    def residual(self, Z: torch.Tensor) -> float:
        """Infeasibility of Z (0 inside C)."""

    @abc.abstractmethod
    def dual(self, G: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, float]:
        """(lambda, G_dual, dual value) from a subgradient estimate G; G_dual is the dual matrix."""


#: the rows of B are decomposed (SVD) for an ill-conditioned Gram matrix up to this many entries m d1 d2.
DENSE_SVD_LIMIT = 12_000_000


class AffineSet(ConstraintSet):
    """C = {Z : B(Z) = b}, projected exactly through a factorization of B B^*.

    Args:
        bmap: the linear map B.
        b: the right-hand side (m,).
        gram: B B^* if already formed (else built here).
    """

    def __init__(self, bmap: ScaledMap, b: torch.Tensor, gram: torch.Tensor | None = None) -> None:
        self.bmap = bmap
        self.b = b
        self.scale = float(torch.linalg.vector_norm(b))
        K = bmap.gram() if gram is None else gram
        self._cholesky: torch.Tensor | None = None
        self._eigen: tuple[torch.Tensor, torch.Tensor] | None = None
        if bool((K.diagonal() > 0).all()):
            L, info = torch.linalg.cholesky_ex(K)
            pivots = L.diagonal()
            if int(info) == 0 and float(pivots.min()) ** 2 > 1e-12 * float(pivots.max()) ** 2:
                self._cholesky = L
        self._svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        d1, d2 = bmap.shape
        if self._cholesky is None and bmap.num_measurements * d1 * d2 <= DENSE_SVD_LIMIT:
            # B B^* squares B's condition number: a square rank-one design (m = d1 d2) with cond(B) ~ 1e7
            # looks singular through its Gram matrix (cond 1e15) although B is far from singular. The SVD
            # of B's rows resolves it at cond(B): B^+ r = V_B diag(1/sigma) U_B^T r.
            U_B, sigma, Vh_B = torch.linalg.svd(bmap.dense_rows(), full_matrices=False)
            floor = max(U_B.shape[0], Vh_B.shape[1]) * torch.finfo(sigma.dtype).eps * float(sigma.max())
            keep = sigma > floor
            self._svd = (U_B[:, keep], sigma[keep], Vh_B[keep])
        elif self._cholesky is None:
            eigenvalues, Q = torch.linalg.eigh(K)
            floor = 1e-12 * float(eigenvalues.abs().max().clamp_min(torch.finfo(K.dtype).tiny))
            inverse = torch.where(eigenvalues > floor, 1.0 / eigenvalues, torch.zeros_like(eigenvalues))
            self._eigen = (Q, inverse)
        # b must lie in range(B) = range(B B^*): the least-squares residual of b measures infeasibility.
        self.infeasibility = float(torch.linalg.vector_norm(self.bmap.apply(self.least_norm()) - b))

    @property
    def singular(self) -> bool:
        """True when B B^* was singular or too ill-conditioned for Cholesky (pseudo-inverse in use)."""
        return self._cholesky is None

    def solve_gram(self, y: torch.Tensor) -> torch.Tensor:
        """(B B^*)^+ y."""
        if self._cholesky is not None:
            return torch.cholesky_solve(y.unsqueeze(-1), self._cholesky).squeeze(-1)
        if self._svd is not None:
            U_B, sigma, _ = self._svd
            return U_B @ ((U_B.mT @ y) / sigma.square())
        Q, inverse = typing.cast(tuple[torch.Tensor, torch.Tensor], self._eigen)
        return Q @ (inverse * (Q.mT @ y))

    def least_norm(self) -> torch.Tensor:
        """The least-norm (least-squares) solution B^+ b, refined once (see :meth:`project_accurately`)."""
        return self.project_accurately(torch.zeros_like(self.bmap.adjoint(self.b)))

    def _pseudo_inverse(self, r: torch.Tensor) -> torch.Tensor:
        """B^+ r = B^*((B B^*)^+ r), through the SVD of B where that path is in use."""
        if self._svd is not None:
            U_B, sigma, Vh_B = self._svd
            return (Vh_B.mT @ ((U_B.mT @ r) / sigma)).reshape(self.bmap.shape)
        return self.bmap.adjoint(self.solve_gram(r))

    def project(self, V: torch.Tensor) -> torch.Tensor:
        """V - B^*((B B^*)^+ (B(V) - b))."""
        return V - self._pseudo_inverse(self.bmap.apply(V) - self.b)

    def project_accurately(self, V: torch.Tensor) -> torch.Tensor:
        """The projection followed by one step of iterative refinement (the projection of the result).

        Solving through the Gram matrix squares B's condition number: a square, ill-conditioned B (m =
        d1 d2 rank-one measurements) leaves ||B(P(V)) - b|| at ~1e-9 ||b|| after one projection. Each
        further projection reduces that defect by about cond(B B^*) eps, so one refinement step restores
        round-off accuracy wherever cond(B B^*) << 1/eps.
        """
        return self.project(self.project(V))

    def residual(self, Z: torch.Tensor) -> float:
        """||B(Z) - b||."""
        return float(torch.linalg.vector_norm(self.bmap.apply(Z) - self.b))

    def dual(self, G: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, float]:
        """Lambda = (B B^*)^+ B(G), the multiplier whose B^*(lambda) is closest to G; value <lambda, b>."""
        if self._svd is not None:  # (B^*)^+ G = U_B diag(1/sigma) V_B^T vec(G), at B's own conditioning
            U_B, sigma, Vh_B = self._svd
            lam = U_B @ ((Vh_B @ G.reshape(-1)) / sigma)
        else:
            lam = self.solve_gram(self.bmap.apply(G))
        return lam, self.bmap.adjoint(lam), float(lam @ self.b)


class BallSet(ConstraintSet):
    """C = {Z : ||B(Z) - b||_2 <= eps}; projection through the eigendecomposition of B B^*.

    The projection of V is X = V - mu B^*(r(mu)) with r(mu) = (I + mu B B^*)^{-1}(B(V) - b) and mu >= 0
    the root of ||r(mu)|| = eps (Newton on the convex decreasing function 1/||r(mu)||).
    """

    def __init__(self, bmap: ScaledMap, b: torch.Tensor, eps: float) -> None:
        self.bmap = bmap
        self.b = b
        self.eps = eps
        self.scale = float(torch.linalg.vector_norm(b))
        eigenvalues, Q = torch.linalg.eigh(bmap.gram())
        self._eigenvalues = eigenvalues.clamp_min(0.0)
        self._Q = Q
        floor = 1e-12 * float(self._eigenvalues.max().clamp_min(torch.finfo(b.dtype).tiny))
        self._inverse = torch.where(
            self._eigenvalues > floor, 1.0 / self._eigenvalues.clamp_min(floor), torch.zeros_like(b)
        )
        # b_N, the part of b in null(B^*) = range(B)^perp: no Z moves it, and the multiplier may use it
        self._outside = b - Q @ (Q.mT @ b * (self._eigenvalues > floor))
        self._outside_norm = float(torch.linalg.vector_norm(self._outside))
        self.infeasibility = max(0.0, self._outside_norm - eps)

    def least_norm(self) -> torch.Tensor:
        """The least-norm least-squares solution B^+ b (the closest point of range(B) to b)."""
        return self.bmap.adjoint(self._Q @ (self._inverse * (self._Q.mT @ self.b)))

    def project(self, V: torch.Tensor) -> torch.Tensor:
        """Projection onto the eps-tube around {B(Z) = b}."""
        residual = self.bmap.apply(V) - self.b
        if float(torch.linalg.vector_norm(residual)) <= self.eps:
            return V
        c = self._Q.mT @ residual
        lam = self._eigenvalues
        mu = self._secular_root(c, lam)
        r = self._Q @ (c / (1.0 + mu * lam))
        return V - mu * self.bmap.adjoint(r)

    def _secular_root(self, c: torch.Tensor, lam: torch.Tensor) -> float:
        """Mu >= 0 with sum_i c_i^2 / (1 + mu lam_i)^2 = eps^2 (Newton on phi(mu) = 1/||r|| - 1/eps)."""
        c2 = c.square()
        if self.eps == 0.0:
            return float("inf")
        mu = 0.0
        for _ in range(100):
            w = 1.0 + mu * lam
            norm_sq = float((c2 / w.square()).sum())
            norm = norm_sq**0.5
            if norm <= 0.0:
                break
            derivative = -float((c2 * lam / w.pow(3)).sum()) / norm  # d||r||/dmu
            phi = 1.0 / norm - 1.0 / self.eps
            dphi = -derivative / norm_sq
            if dphi <= 0.0:
                break
            step = phi / dphi
            mu = max(mu - step, 0.0)
            if abs(step) <= 1e-15 * max(mu, 1e-300) or abs(norm - self.eps) <= 1e-15 * self.eps:
                break
        return mu

    def residual(self, Z: torch.Tensor) -> float:
        """max(0, ||B(Z) - b|| - eps)."""
        return max(0.0, float(torch.linalg.vector_norm(self.bmap.apply(Z) - self.b)) - self.eps)

    def dual(self, G: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, float]:
        """The best multiplier for G: lambda = (B B^*)^+ B(G) + t b_N / ||b_N|| (dual value d(lambda)).

        The dual function d(lambda) = <lambda, b> - eps ||lambda|| is not constant along null(B^*) when
        m exceeds the rank of B (more measurements than unknowns, noisy b): there the optimal multiplier,
        parallel to the residual B(Z) - b, has a component n in null(B^*) that leaves B^*(lambda) = G
        unchanged. The least-squares multiplier alone leaves a duality gap that no primal iterate can
        close (ADMM converges, the certificate stalls). With lambda_R = (B B^*)^+ B(G), a = ||lambda_R||
        and beta = ||b_N|| < eps, maximizing over n = t b_N / beta gives t = a beta / sqrt(eps^2 - beta^2)
        and d = <lambda_R, b> - a sqrt(eps^2 - beta^2).
        """
        y = self.bmap.apply(G)
        lam = self._Q @ (self._inverse * (self._Q.mT @ y))
        beta = self._outside_norm
        if 0.0 < beta < self.eps:
            a = float(torch.linalg.vector_norm(lam))
            lam = lam + (a / (self.eps**2 - beta**2) ** 0.5) * self._outside
        value = float(lam @ self.b) - self.eps * float(torch.linalg.vector_norm(lam))
        return lam, self.bmap.adjoint(lam), value


def project_l1_ball(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of v (any shape) onto {||x||_1 <= radius} by sort-and-threshold."""
    flat = v.reshape(-1)
    if float(flat.abs().sum()) <= radius:
        return v
    if radius <= 0.0:
        return torch.zeros_like(v)
    u = flat.abs().sort(descending=True).values
    cumulative = u.cumsum(0) - radius
    index = torch.arange(1, u.numel() + 1, dtype=v.dtype, device=v.device)
    positive = (u - cumulative / index) > 0
    count = int(positive.nonzero().max()) + 1
    theta = cumulative[count - 1] / count
    return (flat.sign() * (flat.abs() - theta).clamp_min(0.0)).reshape(v.shape)


class L1BallSet(ConstraintSet):
    """C = {X : ||Y - X||_{1,1} <= tau} (the robust-PCA relaxation)."""

    def __init__(self, Y: torch.Tensor, radius: float) -> None:
        self.Y = Y
        self.radius = radius
        self.scale = float(torch.linalg.matrix_norm(Y))
        self.infeasibility = 0.0

    def project(self, V: torch.Tensor) -> torch.Tensor:
        """Y - P_{l1(tau)}(Y - V)."""
        return self.Y - project_l1_ball(self.Y - V, self.radius)

    def residual(self, Z: torch.Tensor) -> float:
        """max(0, ||Y - Z||_{1,1} - tau)."""
        return max(0.0, float((self.Y - Z).abs().sum()) - self.radius)

    def dual(self, G: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, float]:
        """Any G is a dual point: value <G, Y> - tau ||G||_inf."""
        value = float((G * self.Y).sum()) - self.radius * float(G.abs().max())
        return None, G, value
