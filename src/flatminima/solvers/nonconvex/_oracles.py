r"""Gradient oracles of least-squares objectives: full batch, minibatches of measurements, label noise.

A least-squares objective f(theta) = (1/m) sum_i res_i(theta)^2 exposes ``residual(params)`` (shape (m,))
and ``num_measurements``. The minibatch loss of a batch B (size b, drawn without replacement) with
label noise eps is

    f_B(theta) = (1/b) sum_{i in B} (res_i(theta) - eps_i)^2,

whose gradient J_B^T v with v_i = (2/b)(res_i - eps_i) is one vector-Jacobian product through the
residual. With eps = 0, E_B[grad f_B] = grad f. (A noisy label y_i + eps_i turns res_i = <A_i, X> - y_i
into res_i - eps_i.)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import torch

from flatminima.errors import InputDataError, InputTypeError
from flatminima.objectives import BilinearFactorization, Objective, SymmetricFactorization
from flatminima.optim._random import noise_like

Params = tuple[torch.Tensor, ...]


@runtime_checkable
class LeastSquaresObjective(Protocol):
    """An objective f = (1/m) sum_i res_i^2 that exposes its residual vector."""

    num_measurements: int

    def residual(self, params: Params) -> torch.Tensor:
        """res(theta), shape (m,)."""
        ...


def check_objective(objective: Any) -> Objective:
    """Return ``objective`` if it is a :class:`~flatminima.objectives.Objective`."""
    if not isinstance(objective, Objective):
        raise InputTypeError(
            "objective must be a flatminima.objectives.Objective (e.g. BilinearFactorization(instance, "
            f"width=k)); got {type(objective).__name__}."
        )
    return objective


def check_least_squares(objective: Objective, owner: str) -> int:
    """Return m if ``objective`` has ``residual`` and ``num_measurements``; raise a clear error otherwise."""
    if not isinstance(objective, LeastSquaresObjective):
        raise InputTypeError(
            f"{owner} samples measurements and needs a least-squares objective with residual(params) and "
            f"num_measurements (e.g. BilinearFactorization, SymmetricFactorization); got "
            f"{type(objective).__name__}. Use batch_size=None for full-batch gradients."
        )
    return int(objective.num_measurements)


def check_batch_size(batch_size: int | None, num_measurements: int) -> None:
    """Raise if ``batch_size`` exceeds the number of measurements m."""
    if batch_size is not None and batch_size > num_measurements:
        raise InputDataError(
            f"batch_size must be <= the number of measurements m = {num_measurements}; got "
            f"batch_size={batch_size}. Use batch_size=None for full-batch gradients."
        )


def sample_batch(num_measurements: int, batch_size: int, *, generator: torch.Generator) -> torch.Tensor:
    """Return b distinct indices in [0, m), uniformly at random (drawn on the generator's device)."""
    return torch.randperm(num_measurements, generator=generator, device=generator.device)[:batch_size]


@dataclasses.dataclass(frozen=True)
class BatchDraw:
    """The random part of one stochastic gradient: batch indices (None: all) and label noise (None: none)."""

    index: torch.Tensor | None
    noise: torch.Tensor | None


class GradientOracle:
    """grad f (closed form), or the minibatch / label-noise gradient through the residual.

    Args:
        objective: the objective.
        batch_size: b (None: all m measurements).
        noise_level: sigma >= 0 of the label noise added to the batch's targets (0: none).
        distribution: ``"rademacher"`` (eps uniform on {-sigma, +sigma}) or ``"gaussian"``.
        owner: the solver's name, for messages.
    """

    def __init__(
        self,
        objective: Objective,
        *,
        batch_size: int | None,
        noise_level: float = 0.0,
        distribution: str = "rademacher",
        owner: str,
    ) -> None:
        self.objective = objective
        self.batch_size = batch_size
        self.noise_level = noise_level
        self.distribution = distribution
        self.stochastic = batch_size is not None or noise_level > 0
        self.num_measurements = 0
        if self.stochastic:
            self.num_measurements = check_least_squares(objective, owner)
            check_batch_size(batch_size, self.num_measurements)

    def draw(self, generator: torch.Generator | None, *, noise_factor: float = 1.0) -> BatchDraw:
        """Draw the batch indices and label noise of one step (nothing for a deterministic oracle).

        The noise is always drawn when ``noise_level > 0`` (so a schedule never shifts the random
        stream) and multiplied by ``noise_factor``.
        """
        if not self.stochastic:
            return BatchDraw(None, None)
        if generator is None:  # the solvers check this first; kept for direct use
            raise InputTypeError("a stochastic gradient oracle needs a torch.Generator; got None.")
        m = self.num_measurements
        objective = self.objective
        noise = None
        if self.noise_level > 0:
            like = torch.empty(m, dtype=objective.dtype, device=objective.device)
            noise = (self.noise_level * noise_factor) * noise_like(
                like, self.distribution, generator=generator
            )
        index = None
        if self.batch_size is not None:
            index = sample_batch(m, self.batch_size, generator=generator).to(objective.device)
        return BatchDraw(index, noise)

    def gradient(self, params: Params, draw: BatchDraw) -> Params:
        """Return the gradient of f_B (batch and label noise of ``draw``) at ``params``."""
        if not self.stochastic:
            return self.objective.grad(params)
        res = self.objective.residual(params)  # type: ignore[attr-defined]
        return residual_vjp(self.objective, params, batch_weights(res, draw, self.num_measurements))

    def __call__(
        self, params: Params, generator: torch.Generator | None, *, noise_factor: float = 1.0
    ) -> Params:
        """Draw a batch (and label noise) and return the gradient of f_B at ``params``."""
        return self.gradient(params, self.draw(generator, noise_factor=noise_factor))


def batch_weights(res: torch.Tensor, draw: BatchDraw, num_measurements: int) -> torch.Tensor:
    """Return v, v_i = (2/b)(res_i - eps_i) on the batch and 0 elsewhere (b = m without a batch)."""
    shifted = res if draw.noise is None else res - draw.noise
    if draw.index is None:
        return (2.0 / num_measurements) * shifted
    weights = torch.zeros_like(shifted)
    weights[draw.index] = (2.0 / draw.index.numel()) * shifted[draw.index]
    return weights


def residual_vjp(objective: Objective, params: Params, weights: torch.Tensor) -> Params:
    r"""J^T v, the vector-Jacobian product of the residual map theta -> res(theta) with v = ``weights``.

    Closed forms through the public operator routines for the factorizations of this package:

    * bilinear, res = A(L R^T) - b:  J^T v = (A^*(v) R, A^*(v)^T L);
    * symmetric, res = A(U1 U1^T - U2 U2^T) - b with symmetric A_i:  J^T v = (2 A^*(v) U1, -2 A^*(v) U2);

    any other least-squares objective goes through autograd of ``objective.residual``.
    """
    if isinstance(objective, BilinearFactorization):
        L, R = params
        op = objective.operator
        return op.adjoint_matmul(weights, R), op.adjoint_t_matmul(weights, L)
    if isinstance(objective, SymmetricFactorization):
        U1, U2 = params
        op = objective.operator
        return 2.0 * op.adjoint_matmul(weights, U1), -2.0 * op.adjoint_matmul(weights, U2)
    return autograd_residual_vjp(objective, params, weights)


def autograd_residual_vjp(objective: Objective, params: Params, weights: torch.Tensor) -> Params:
    """J^T v by reverse-mode autograd through ``objective.residual`` (any least-squares objective)."""
    with torch.enable_grad():
        leaves = tuple(p.detach().requires_grad_(True) for p in params)
        res = objective.residual(leaves)  # type: ignore[attr-defined]
        grads = torch.autograd.grad(res, leaves, grad_outputs=weights, materialize_grads=True)
    return tuple(g.detach() for g in grads)
