r"""Entropy-SGD (Chaudhari et al. 2017) as a solver; it runs :class:`flatminima.optim.EntropySGD`.

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
from typing import ClassVar, Unpack

import torch

from flatminima.optim.entropy_sgd import EntropySGD as EntropySGDOptimizer
from flatminima.optim.entropy_sgd import check_entropy_hyperparameters, scoped_gamma
from flatminima.solvers.nonconvex.base import (
    NonconvexSolver,
    Params,
    Run,
    RunOptions,
    RunSettings,
    check_batch_size_argument,
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
        settings, options: the :class:`~flatminima.solvers.nonconvex.RunSettings` (default
            ``max_iterations=200`` outer steps); ``tolerance`` applies to deterministic runs only (eps = 0,
            full batch): stop when ||gamma (x - mu)|| <= tolerance; a schedule scales the outer step eta.

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
    default_settings: ClassVar[RunSettings] = RunSettings(max_iterations=200)
    _fresh_draws: ClassVar[bool] = True  # every inner step draws its own minibatch
    _displacement_direction: ClassVar[bool] = True  # the direction gamma (x - mu) = (x - x_new) / eta

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
        settings: RunSettings | None = None,
        **options: Unpack[RunOptions],
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
        super().__init__(settings=settings, **options)
        self._hyperparameters.update(**values, batch_size=self.batch_size)

    @property
    def stochastic(self) -> bool:
        """True unless the Langevin noise is zero and the inner gradients are full-batch."""
        return self.thermal_noise > 0 or self.batch_size is not None

    def gamma_at(self, outer_step: int) -> float:
        """gamma_t = min(gamma0 (1 + gamma1)^t, gamma_max)."""
        return scoped_gamma(self.gamma, self.scoping, self.gamma_max, outer_step)

    def _optimizer(self, params: list[torch.Tensor], run: Run) -> torch.optim.Optimizer:
        # without noise nothing is drawn: a deterministic run needs no generator of its own
        generator = run.generator if run.generator is not None else torch.Generator()
        return EntropySGDOptimizer(
            params,
            generator=generator,
            lr=self.step_size,
            inner_lr=self.inner_step_size,
            inner_steps=self.inner_steps,
            gamma=self.gamma,
            scoping=self.scoping,
            gamma_max=self.gamma_max,
            thermal_noise=self.thermal_noise,
            averaging=self.averaging,
        )

    def _extras(self, run: Run, params: Params) -> dict[str, float]:
        return {"gamma": self.gamma_at(run.last_step)}
