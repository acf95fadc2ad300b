"""Small float64 test problems with exact curvature: MLPs (dense torch.func.hessian) and bilinear losses."""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import nn

from flatminima.operators import symmetric_sqrt


def dense_hessian(loss, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (n, n) Hessian of ``loss`` over the flattened ``params`` (in dict order) by torch.func.hessian."""
    names = list(params)
    shapes = [params[n].shape for n in names]
    numels = [params[n].numel() for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def flat_loss(theta: torch.Tensor) -> torch.Tensor:
        pieces = theta.split(numels)
        return loss({n: p.reshape(s) for n, p, s in zip(names, pieces, shapes, strict=True)})

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        return torch.func.hessian(flat_loss)(flat)


@dataclasses.dataclass
class MLPCase:
    net: nn.Module
    x: torch.Tensor
    y: torch.Tensor

    def loss(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        out = torch.func.functional_call(self.net, params, (self.x,))
        return nn.functional.cross_entropy(out, self.y)

    def params(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.named_parameters()}

    def batches(self, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(self.x.split(sizes), self.y.split(sizes), strict=True))


def mlp_case(seed: int = 0, *, inputs: int = 4, hidden: int = 5, classes: int = 3, n: int = 30) -> MLPCase:
    """A tanh MLP with cross-entropy on random data (an indefinite Hessian away from a minimum)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, classes)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(n, inputs, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return MLPCase(net, x, y)


@dataclasses.dataclass
class BilinearCase:
    """f(L, R) = (1/m) ||A(L R^T) - b||^2 with dense Gaussian A (stored flattened)."""

    A: torch.Tensor  # (m, d1, d2)
    b: torch.Tensor
    L: torch.Tensor
    R: torch.Tensor

    @property
    def m(self) -> int:
        return int(self.A.shape[0])

    def loss(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        X = params["L"] @ params["R"].T
        res = self.A.reshape(self.m, -1) @ X.reshape(-1) - self.b
        return res.square().sum() / self.m

    def params(self) -> dict[str, torch.Tensor]:
        return {"L": self.L.clone(), "R": self.R.clone()}

    def rescaling(self) -> tuple[torch.Tensor, torch.Tensor]:
        m, d1, d2 = self.A.shape
        D1_sq = torch.einsum("lij,lkj->ik", self.A, self.A) / (m * d2)
        D2_sq = torch.einsum("lji,ljk->ik", self.A, self.A) / (m * d1)
        return symmetric_sqrt(D1_sq), symmetric_sqrt(D2_sq)

    def exact_trace(self) -> float:
        d1, d2 = self.A.shape[1:]
        D1, D2 = self.rescaling()
        return float(2 * (d2 * (D1 @ self.L).square().sum() + d1 * (D2 @ self.R).square().sum()))

    def exact_scaled_trace(self) -> float:
        D1, D2 = self.rescaling()
        return float(2 * ((D1 @ self.L).square().sum() + (D2 @ self.R).square().sum()))


def bilinear_case(seed: int = 0, *, d1: int = 5, d2: int = 4, k: int = 3, m: int = 30) -> BilinearCase:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, d1, d2, generator=g, dtype=torch.float64)
    M = torch.randn(d1, 2, generator=g, dtype=torch.float64) @ torch.randn(
        2, d2, generator=g, dtype=torch.float64
    )
    b = A.reshape(m, -1) @ M.reshape(-1)
    L = torch.randn(d1, k, generator=g, dtype=torch.float64)
    R = torch.randn(d2, k, generator=g, dtype=torch.float64)
    return BilinearCase(A, b, L, R)


def within(estimate, exact: float, sigmas: float = 5.0) -> bool:
    """|estimate - exact| <= sigmas * stderr (the judge of every stochastic estimator)."""
    return abs(estimate.value - exact) <= sigmas * estimate.stderr
