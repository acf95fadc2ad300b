r"""Entropy-SGD (Chaudhari et al. 2017) as a solver over objectives.

Outer step t (Algorithm 1 of the paper), with gamma_t = min(gamma0 (1 + gamma1)^t, gamma_max):

1. x' <- x, mu <- x;
2. for l = 1..L:  dx' = grad f_B(x') - gamma_t (x - x');
   x' <- x' - eta' dx' + sqrt(2 eta') eps xi  (xi ~ N(0, I));
   mu <- (1 - alpha) mu + alpha x';
3. x <- x - eta gamma_t (x - mu).

x - mu estimates x - <x'>, where <x'> is the mean of the Gibbs density proportional to
exp(-f(x') - (gamma/2)||x - x'||^2); -gamma (x - <x'>) is the gradient of the local entropy
F(x; gamma) = log int exp(-f(x') - (gamma/2)||x - x'||^2) dx', so step 3 is gradient ascent on F.

**Conventions.** Moving average as in the paper: mu <- (1 - alpha) mu + alpha x' (weight alpha on the
new sample; default alpha = 0.75). The authors' reference code uses weight 0.25 on the new sample
(alpha = 0.25 here). Langevin noise: standard deviation sqrt(2 eta') eps per inner step (the reference
code's value; the Euler discretization of Langevin dynamics at temperature eps^2). The outer step is
scaled by gamma (paper). ``iterations`` count outer steps; each costs L gradients.

Identities (tested): with L = 1, alpha = 1 and eps = 0 one outer step is a gradient step of size
eta gamma eta'; with eps = 0 the outer step is a deterministic function of x.

References:
    P. Chaudhari, A. Choromanska, S. Soatto, Y. LeCun, C. Baldassi, C. Borgs, J. Chayes, L. Sagun,
    R. Zecchina. Entropy-SGD: biasing gradient descent into wide valleys. ICLR 2017
    (J. Stat. Mech. 2019, 124018).
"""

from __future__ import annotations

import math
import typing
from typing import Any, ClassVar

from flatminima.objectives import Objective
from flatminima.optim._random import standard_normal_like
from flatminima.optim.entropy_sgd import check_entropy_hyperparameters, scoped_gamma
from flatminima.solvers.nonconvex._oracles import GradientOracle
from flatminima.solvers.nonconvex.base import (
    NonconvexSolver,
    Params,
    State,
    check_batch_size_argument,
    total_norm,
)


@typing.final
class EntropySGD(NonconvexSolver):
    r"""Entropy-SGD: an SGLD inner loop estimates the local-entropy gradient; the outer loop follows it.

    Args:
        step_size: the outer step eta > 0.
        inner_step_size: the SGLD step eta' > 0.
        inner_steps: L >= 1 SGLD steps per outer step.
        gamma: the initial scope gamma0 > 0.
        scoping: gamma1 >= 0 in gamma_t = gamma0 (1 + gamma1)^t.
        gamma_max: the cap on gamma_t (default inf).
        thermal_noise: eps >= 0 (the Langevin noise has standard deviation sqrt(2 eta') eps).
        averaging: alpha in (0, 1], the weight of the new sample in mu <- (1 - alpha) mu + alpha x'.
        batch_size: b (None: full-batch inner gradients).
        max_iterations: outer steps.
        tolerance: deterministic runs only (eps = 0, full batch): stop when ||gamma (x - mu)|| <= tolerance.
        record_every, time_limit, divergence_threshold: see :class:`NonconvexSolver`.

    Raises:
        InputDataError: on out-of-range hyperparameters (negative noise, alpha outside (0, 1], ...).

    Example:
        >>> import torch
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> init = obj.random_params(generator=g, scale=0.3)
        >>> solver = EntropySGD(inner_step_size=0.02, inner_steps=5, max_iterations=40)
        >>> result = solver.run(obj, init, generator=torch.Generator().manual_seed(1))
        >>> result.final("loss") < float(obj.value(init))
        True

    References:
        Chaudhari et al. (ICLR 2017), Algorithm 1.
    """

    name: ClassVar[str] = "entropy_sgd"

    def __init__(
        self,
        *,
        step_size: float = 1.0,
        inner_step_size: float = 0.05,
        inner_steps: int = 10,
        gamma: float = 1.0,
        scoping: float = 0.0,
        gamma_max: float = math.inf,
        thermal_noise: float = 1e-3,
        averaging: float = 0.75,
        batch_size: int | None = None,
        max_iterations: int = 200,
        tolerance: float = 1e-10,
        record_every: int | None = None,
        time_limit: float | None = None,
        divergence_threshold: float = 1e6,
    ) -> None:
        values = check_entropy_hyperparameters(
            step_size=step_size,
            inner_step_size=inner_step_size,
            inner_steps=inner_steps,
            gamma=gamma,
            scoping=scoping,
            gamma_max=gamma_max,
            thermal_noise=thermal_noise,
            averaging=averaging,
        )
        self.step_size = values["step_size"]
        self.inner_step_size = values["inner_step_size"]
        self.inner_steps = values["inner_steps"]
        self.gamma = values["gamma"]
        self.scoping = values["scoping"]
        self.gamma_max = values["gamma_max"]
        self.thermal_noise = values["thermal_noise"]
        self.averaging = values["averaging"]
        self.batch_size = check_batch_size_argument(batch_size)
        super().__init__(
            max_iterations=max_iterations,
            tolerance=tolerance,
            record_every=record_every,
            time_limit=time_limit,
            divergence_threshold=divergence_threshold,
            **values,
            batch_size=self.batch_size,
        )

    @property
    def stochastic(self) -> bool:
        """True unless the Langevin noise is zero and the inner gradients are full-batch."""
        return self.thermal_noise > 0 or self.batch_size is not None

    def gamma_at(self, outer_step: int) -> float:
        """gamma_t = min(gamma0 (1 + gamma1)^t, gamma_max)."""
        return scoped_gamma(self.gamma, self.scoping, self.gamma_max, outer_step)

    def _prepare(self, objective: Objective, params: Params, generator: Any) -> State:
        return {"oracle": GradientOracle(objective, batch_size=self.batch_size, owner=type(self).__name__)}

    def _step(
        self, objective: Objective, params: Params, state: State, iteration: int, generator: Any
    ) -> Params:
        oracle: GradientOracle = state["oracle"]
        gamma = self.gamma_at(iteration)
        eta_in, alpha = self.inner_step_size, self.averaging
        noise_std = math.sqrt(2.0 * eta_in) * self.thermal_noise
        x = params
        inner = params
        mean = params
        for _ in range(self.inner_steps):
            gradient = oracle(inner, generator)
            inner = tuple(
                xp - eta_in * (g - gamma * (x0 - xp)) for xp, g, x0 in zip(inner, gradient, x, strict=True)
            )
            if noise_std > 0:
                inner = tuple(xp + noise_std * standard_normal_like(xp, generator=generator) for xp in inner)
            mean = tuple((1.0 - alpha) * mu + alpha * xp for mu, xp in zip(mean, inner, strict=True))
        direction = tuple(gamma * (x0 - mu) for x0, mu in zip(x, mean, strict=True))
        state["direction_norm"] = total_norm(direction)
        state["gamma"] = gamma
        return tuple(x0 - self.step_size * d for x0, d in zip(x, direction, strict=True))

    def _extras(self, objective: Objective, params: Params, state: State) -> dict[str, float]:
        return {"gamma": float(state.get("gamma", self.gamma))}
