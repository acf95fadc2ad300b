r"""Critical points of a one-hidden-layer tanh MLP by Levenberg-Marquardt on grad L(w) = 0.

The network f(x) = W_2 tanh(W_1 x + b_1) + b_2 (c outputs) is fitted to targets Y (one-hot rows) by

    L(w) = (1 / 2n) sum_i ||f(x_i) - y_i||^2 + (lambda / 2) ||w||^2,

with w flattened in ``nn.Sequential(Linear, Tanh, Linear)`` order (W_1 row-major, b_1, W_2, b_2). Its
gradient and its exact Hessian are computed in closed form (float64): with a_i = W_1 x_i + b_1,
z_i = tanh(a_i), s_i = 1 - z_i^2, r_i = f(x_i) - y_i and J_i = df(x_i)/dw,

    grad L = (1/n) sum_i J_i^T r_i + lambda w,
    H = (1/n) sum_i J_i^T J_i + (1/n) sum_i sum_k r_ik d^2 f_k(x_i)/dw^2 + lambda I,

where the second-order term couples only the first layer of each hidden unit j with itself (through
(r_i W_2)_j (-2 z_ij s_ij) u_i u_i^T, u_i = (x_i, 1)) and with the output weights of the same unit
(through r_ik s_ij u_i). The dense Hessian of a few hundred parameters costs a few milliseconds, so
critical points of every index can be sought by Levenberg-Marquardt on the residual g(w) = grad L(w),
whose Jacobian is H: each step solves (H^2 + mu I) delta = -H g through H's eigendecomposition, mu
shrinks after a step that lowers ||g|| and grows after one that does not. Newton-type methods on ||g||
are attracted to saddles as well as minima (Dauphin et al. 2014), but they can also stall where g lies
in the near-kernel of H without being zero (Frye et al. 2020): the result reports the final ||g|| and
whether it is below the tolerance.

References:
    Y. Dauphin, R. Pascanu, C. Gulcehre, K. Cho, S. Ganguli, Y. Bengio. Identifying and attacking the
    saddle point problem in high-dimensional non-convex optimization. NeurIPS 2014.
    C. G. Frye, N. S. Wadia, M. R. DeWeese, K. E. Bouchard. Critical point-finding methods reveal
    gradient-flat regions of deep network losses. Neural Computation 33(6), 2021 (arXiv 2020).
    J. J. More. The Levenberg-Marquardt algorithm: implementation and theory. Numerical Analysis, 1978.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class TanhRegression:
    """The loss L(w) of the module docstring on inputs ``x`` (n, d) and targets ``targets`` (n, c)."""

    x: torch.Tensor
    targets: torch.Tensor
    hidden: int
    weight_decay: float = 0.0

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """The numbers of entries of W_1, b_1, W_2 and b_2."""
        d, c = self.x.shape[1], self.targets.shape[1]
        return self.hidden * d, self.hidden, c * self.hidden, c

    @property
    def num_parameters(self) -> int:
        """The dimension of w."""
        return sum(self.sizes)

    def unpack(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_1, b_1, W_2, b_2) of the flat vector ``w``."""
        d, c, h = self.x.shape[1], self.targets.shape[1], self.hidden
        w1, b1, w2, b2 = w.split(self.sizes)
        return w1.reshape(h, d), b1, w2.reshape(c, h), b2

    def initial(self, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
        """``nn.Linear``'s law U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every entry, times ``scale``."""
        d = self.x.shape[1]
        fans = (d, d, self.hidden, self.hidden)
        parts = [
            (2.0 * torch.rand(size, generator=generator, dtype=torch.float64) - 1.0) * fan**-0.5 * scale
            for size, fan in zip(self.sizes, fans, strict=True)
        ]
        return torch.cat(parts)

    def _forward(self, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w1, b1, w2, b2 = self.unpack(w)
        z = torch.tanh(self.x @ w1.T + b1)
        residual = z @ w2.T + b2 - self.targets
        return w1, w2, z, residual

    def loss(self, w: torch.Tensor) -> float:
        """L(w), including the weight-decay term."""
        residual = self._forward(w)[3]
        return float(0.5 * residual.square().sum(1).mean() + 0.5 * self.weight_decay * w.dot(w))

    def data_loss(self, w: torch.Tensor) -> float:
        """(1 / 2n) sum_i ||f(x_i) - y_i||^2 alone."""
        return float(0.5 * self._forward(w)[3].square().sum(1).mean())

    def _jacobian(self, w2: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n, c, h = z.shape[0], w2.shape[0], self.hidden
        s = 1.0 - z.square()
        eye = torch.eye(c, dtype=z.dtype)
        blocks = [
            torch.einsum("kj,ij,il->ikjl", w2, s, self.x).reshape(n, c, -1),
            torch.einsum("kj,ij->ikj", w2, s),
            (eye[None, :, :, None] * z[:, None, None, :]).reshape(n, c, c * h),
            eye.expand(n, c, c),
        ]
        return torch.cat(blocks, dim=2)

    def gradient(self, w: torch.Tensor) -> torch.Tensor:
        """The gradient grad L(w)."""
        _, w2, z, residual = self._forward(w)
        n = z.shape[0]
        delta = (residual @ w2) * (1.0 - z.square())  # d(loss_i)/d(a_i), times n
        parts = [delta.T @ self.x / n, delta.mean(0), residual.T @ z / n, residual.mean(0)]
        return torch.cat([p.reshape(-1) for p in parts]) + self.weight_decay * w

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        """The exact Hessian of L at ``w`` (dense, symmetric)."""
        _, w2, z, residual = self._forward(w)
        n, d, h, c = z.shape[0], self.x.shape[1], self.hidden, w2.shape[0]
        jacobian = self._jacobian(w2, z).reshape(n * c, -1)
        out = jacobian.T @ jacobian / n
        s = 1.0 - z.square()
        u = torch.cat([self.x, torch.ones(n, 1, dtype=self.x.dtype)], dim=1)
        # first-layer indices of hidden unit j: its d weights, then its bias
        first = torch.cat([torch.arange(h * d).reshape(h, d), (h * d + torch.arange(h)).reshape(h, 1)], dim=1)
        curvature = torch.einsum("ij,il,im->jlm", (residual @ w2) * (-2.0 * z * s), u, u) / n
        out[first[:, :, None], first[:, None, :]] += curvature
        second = h * d + h + torch.arange(c * h).reshape(c, h)  # W_2[k, j]
        cross = torch.einsum("ik,ij,il->kjl", residual, s, u) / n
        rows = second[:, :, None].expand(c, h, d + 1)
        cols = first[None, :, :].expand(c, h, d + 1)
        out[rows, cols] += cross
        out[cols, rows] += cross
        return out + self.weight_decay * torch.eye(out.shape[0], dtype=out.dtype)

    def module(self, w: torch.Tensor) -> nn.Sequential:
        """The network of ``w`` as ``nn.Sequential(Linear, Tanh, Linear)`` (float64)."""
        w1, b1, w2, b2 = self.unpack(w)
        model = nn.Sequential(  # skip_init: no draw from the global RNG
            nn.utils.skip_init(nn.Linear, w1.shape[1], self.hidden, dtype=torch.float64),
            nn.Tanh(),
            nn.utils.skip_init(nn.Linear, self.hidden, w2.shape[0], dtype=torch.float64),
        )
        with torch.no_grad():
            for parameter, value in zip(model.parameters(), (w1, b1, w2, b2), strict=True):
                parameter.copy_(value)
        return model


@dataclasses.dataclass(frozen=True)
class CriticalPoint:
    """The end of a Levenberg-Marquardt run on grad L = 0.

    Attributes:
        w: the final parameters.
        gradient_norm: ||grad L(w)||.
        iterations: accepted steps.
        converged: gradient_norm <= the tolerance.
    """

    w: torch.Tensor
    gradient_norm: float
    iterations: int
    converged: bool


def levenberg_marquardt(
    problem: TanhRegression, w: torch.Tensor, *, tolerance: float, max_iterations: int
) -> CriticalPoint:
    """Minimize 0.5 ||grad L(w)||^2 from ``w`` by Levenberg-Marquardt (see the module).

    Stops when ||grad L|| <= ``tolerance``, after ``max_iterations`` Hessian evaluations, or when no
    damping mu <= 1e12 mu_0 lowers ||grad L|| (a stall).
    """
    gradient = problem.gradient(w)
    norm = float(gradient.norm())
    mu = None
    iterations = 0
    for _ in range(max_iterations):
        if norm <= tolerance or not math.isfinite(norm):
            break
        eigenvalues, vectors = torch.linalg.eigh(problem.hessian(w))
        if mu is None:
            mu = 1e-3 * float(eigenvalues.square().max())
        ceiling = 1e12 * max(float(eigenvalues.square().max()), 1e-300)
        projected = vectors.T @ gradient
        while mu <= ceiling:
            candidate = w - vectors @ (eigenvalues / (eigenvalues.square() + mu) * projected)
            candidate_gradient = problem.gradient(candidate)
            candidate_norm = float(candidate_gradient.norm())
            if candidate_norm < norm:
                w, gradient, norm = candidate, candidate_gradient, candidate_norm
                mu = max(mu / 3.0, 1e-20)
                iterations += 1
                break
            mu *= 3.0
        else:
            break
    return CriticalPoint(w, norm, iterations, norm <= tolerance)
