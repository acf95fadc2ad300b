"""Keskar et al.'s (C_eps, A)-sharpness, exactly as defined, with a gradient-checked ascent objective.

For weights x in R^n, eps > 0 and A in R^{n x p} (A = I_n, the full space, or p = 100 random columns),

    C_eps = { y in R^p : |y_i| <= eps (|(A^+ x)_i| + 1) },
    phi_{x,f}(eps, A) = 100 * (max_{y in C_eps} f(x + A y) - f(x)) / (1 + f(x))     (a percentage),

A^+ the pseudo-inverse. The inner maximum is solved inexactly by 10 iterations of L-BFGS-B with the box
as bounds, minimizing -f(x + A y) with gradient -A^T grad f(x + A y): an adversarial measure ascends
the loss (a widely copied stand-in passes +grad f, so its L-BFGS-B descends and reports ~0). At a
minimizer grad f = 0, so the search starts from a random point of the box (``start="random"``). The
reported maximum is the largest loss among all points L-BFGS-B evaluated, and y = 0 (so phi >= 0).
The paper uses eps in {1e-3, 5e-4}; f is the full training loss.

References:
    N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang. On large-batch training for
    deep learning: generalization gap and sharp minima. ICLR 2017, Section 2.2 and Metric 2.1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.optimize
import torch

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.curvature.hessian import HessianOperator
from flatminima.errors import ConfigurationError


@dataclasses.dataclass(frozen=True)
class EpsilonSharpness:
    """The result of :func:`epsilon_sharpness`.

    Attributes:
        value: phi = 100 (max_loss - loss) / (1 + loss), in percent.
        loss: f(x).
        max_loss: the largest f(x + A y) found in the box (>= loss).
        epsilon: the box size eps.
        subspace_dim: p, or None for the full space A = I.
        perturbation: the maximizing A y as a flat (n,) vector.
        num_evaluations: loss-and-gradient evaluations spent by L-BFGS-B.
    """

    value: float
    loss: float
    max_loss: float
    epsilon: float
    subspace_dim: int | None
    perturbation: torch.Tensor
    num_evaluations: int


class EpsilonSharpnessObjective:
    """The function L-BFGS-B minimizes for Keskar's sharpness: y -> -f(x + A y), with its gradient.

    NumPy float64 in and out (scipy's convention); the loss is evaluated in the operator's dtype and
    device. Every evaluation is recorded, so the best point seen is available after the run.

    Args:
        operator: gives f and grad f over its selected parameters, and x (its point).
        epsilon: the box size eps > 0.
        subspace: A as an (n, p) tensor on the operator's device and dtype, or None for A = I.
    """

    def __init__(self, operator: HessianOperator, *, epsilon: float, subspace: torch.Tensor | None) -> None:
        self.operator = operator
        self.epsilon = check_real("epsilon", epsilon, low=0.0, low_open=True)
        self.x = operator.point
        self.A = subspace
        coordinates = self.x if subspace is None else torch.linalg.pinv(subspace) @ self.x
        self.half_widths = (
            (self.epsilon * (coordinates.abs() + 1.0)).to(device="cpu", dtype=torch.float64).numpy()
        )
        self.loss = float(operator.value())
        self.best_loss = self.loss
        self.best_y = np.zeros(self.dim)
        self.num_evaluations = 0

    @property
    def dim(self) -> int:
        """The search dimension p (n for the full space)."""
        return self.operator.size if self.A is None else int(self.A.shape[1])

    @property
    def bounds(self) -> list[tuple[float, float]]:
        """The box C_eps as L-BFGS-B bounds."""
        return [(-float(h), float(h)) for h in self.half_widths]

    def perturbation(self, y: np.ndarray) -> torch.Tensor:
        """A y as a flat tensor on the operator's device and dtype."""
        y_t = torch.as_tensor(np.asarray(y, dtype=np.float64)).to(device=self.x.device, dtype=self.x.dtype)
        return y_t if self.A is None else self.A @ y_t

    def fun_and_jac(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Return (-f(x + A y), -A^T grad f(x + A y))."""
        value, grad = self.operator.value_and_grad_at(self.x + self.perturbation(y))
        self.num_evaluations += 1
        if float(value) > self.best_loss:
            self.best_loss, self.best_y = float(value), np.array(y, dtype=np.float64)
        projected = grad if self.A is None else self.A.mT @ grad
        return -float(value), -projected.detach().to(device="cpu", dtype=torch.float64).numpy()

    def fun(self, y: np.ndarray) -> float:
        """-f(x + A y)."""
        return self.fun_and_jac(y)[0]

    def jac(self, y: np.ndarray) -> np.ndarray:
        """-A^T grad f(x + A y)."""
        return self.fun_and_jac(y)[1]

    def random_point(self, generator: torch.Generator) -> np.ndarray:
        """A uniform random point of the box."""
        u = (
            torch.rand(self.dim, generator=generator, device=generator.device, dtype=torch.float64)
            .cpu()
            .numpy()
        )
        return (2.0 * u - 1.0) * self.half_widths


def random_subspace(
    operator: HessianOperator, subspace_dim: int, *, generator: torch.Generator
) -> torch.Tensor:
    """An (n, p) matrix with i.i.d. N(0, 1) entries (drawn on the generator's device, then moved)."""
    p = check_int_in_range("subspace_dim", subspace_dim, low=1, high=operator.size, high_name="n")
    A = torch.randn(operator.size, p, generator=generator, device=generator.device, dtype=torch.float64)
    return A.to(device=operator.device, dtype=operator.dtype)


def epsilon_sharpness(
    operator: HessianOperator,
    epsilon: float = 1e-3,
    *,
    subspace_dim: int | None = None,
    max_iterations: int = 10,
    start: str = "random",
    generator: torch.Generator | None = None,
) -> EpsilonSharpness:
    """Keskar et al.'s sharpness phi(eps, A) in percent (see the module for the definition).

    Args:
        operator: a :class:`HessianOperator`; f is its loss over its selected parameters (select a
            group to perturb only that group).
        epsilon: eps > 0 (the paper uses 1e-3 and 5e-4).
        subspace_dim: None for A = I_n (full space), or p for a random n x p Gaussian A (the paper
            uses p = 100).
        max_iterations: L-BFGS-B iterations (the paper's 10).
        start: "random" (uniform in the box; needed at a minimizer where grad f = 0) or "zero".
        generator: draws A and the random start (required).

    Returns:
        EpsilonSharpness(value in percent, loss, max_loss, epsilon, subspace_dim, perturbation,
        num_evaluations).

    Raises:
        InputDataError: if ``epsilon`` <= 0, ``subspace_dim`` is not in 1..n, ``max_iterations`` < 1.
        ConfigurationError: if ``start`` is not "random" or "zero".
        InputTypeError: if ``generator`` is missing.

    Example:
        >>> x = {"w": torch.zeros(3, dtype=torch.float64)}
        >>> H = HessianOperator(lambda p: 0.5 * (p["w"] ** 2).sum(), x)
        >>> result = epsilon_sharpness(H, 1e-3, generator=torch.Generator().manual_seed(0))
        >>> round(result.value, 8)  # 100 * 0.5 * 3 * eps^2: the corner of the box
        0.00015

    References:
        Keskar et al. (2017), Metric 2.1.
    """
    generator = check_generator("generator", generator)
    check_int_in_range("max_iterations", max_iterations, low=1)
    if start not in ("random", "zero"):
        raise ConfigurationError(f"start must be 'random' or 'zero'; got start={start!r}.")
    check_real("epsilon", epsilon, low=0.0, low_open=True)
    A = None if subspace_dim is None else random_subspace(operator, subspace_dim, generator=generator)
    objective = EpsilonSharpnessObjective(operator, epsilon=epsilon, subspace=A)
    y0 = objective.random_point(generator) if start == "random" else np.zeros(objective.dim)
    scipy.optimize.minimize(
        objective.fun_and_jac,
        y0,
        jac=True,
        method="L-BFGS-B",
        bounds=objective.bounds,
        options={"maxiter": max_iterations},
    )
    loss, max_loss = objective.loss, objective.best_loss
    return EpsilonSharpness(
        value=100.0 * (max_loss - loss) / (1.0 + loss),
        loss=loss,
        max_loss=max_loss,
        epsilon=float(epsilon),
        subspace_dim=subspace_dim,
        perturbation=objective.perturbation(objective.best_y),
        num_evaluations=objective.num_evaluations,
    )
