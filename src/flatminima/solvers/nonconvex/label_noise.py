r"""Label-noise SGD (Blanc et al. 2020; Damian, Ma, Lee 2021) as a solver over least-squares objectives.

Each step draws a batch B of b measurements and fresh label noise eps_i (uniform on {-sigma, +sigma}
by default, or N(0, sigma^2)) and descends

    f_B(theta) = (1/b) sum_{i in B} (res_i(theta) - eps_i)^2,   theta <- theta - eta grad f_B(theta).

(The label y_i + eps_i turns the residual <A_i, X> - y_i into res_i - eps_i.) E[grad f_B] = grad f. At a
zero-loss point the label noise adds gradient noise of covariance (4 sigma^2 / b)(1/m) sum_i
grad res_i grad res_i^T = (2 sigma^2 / b) grad^2 f (our f has no 1/2). This noise is aligned with the
sharp directions; its second-order effect drifts theta along the zero-loss set towards smaller
tr grad^2 f: Damian et al. prove convergence to stationary points of f + lambda R with
R ~ tr grad^2 f (small eta) and lambda proportional to eta sigma^2 / b; Li, Wang, Arora (2022) derive the
limiting Riemannian gradient flow of tr grad^2 f on the zero-loss manifold. It is the **plain** trace;
for square operators (d1 = d2 = d) it is d times the scaled trace, so both have the same minimizers.

References:
    G. Blanc, N. Gupta, G. Valiant, P. Valiant. Implicit regularization for deep neural networks driven
    by an Ornstein-Uhlenbeck like process. COLT 2020.
    A. Damian, T. Ma, J. D. Lee. Label noise SGD provably prefers flat global minimizers. NeurIPS 2021.
    Z. Li, T. Wang, S. Arora. What happens after SGD reaches zero loss? ICLR 2022.
"""

from __future__ import annotations

import typing
from typing import ClassVar, Unpack

from flatminima._checks import check_int_in_range, check_real
from flatminima.objectives import Objective
from flatminima.optim._random import check_distribution
from flatminima.solvers.nonconvex._oracles import GradientOracle, check_least_squares
from flatminima.solvers.nonconvex.base import (
    Params,
    Run,
    RunSettings,
    StochasticRunOptions,
    check_batch_size_argument,
)
from flatminima.solvers.nonconvex.descent import GradientDescent


@typing.final
class LabelNoiseSGD(GradientDescent):
    r"""SGD on minibatches with fresh label noise each step (noise level sigma, batch size b).

    Args:
        step_size: eta > 0.
        noise_level: sigma >= 0, the standard deviation of the label noise (0: plain SGD).
        batch_size: b (None: all m measurements each step, "label-noise GD").
        distribution: ``"rademacher"`` (eps uniform on {-sigma, +sigma}, Blanc et al.) or ``"gaussian"``.
        anneal_iterations: over the last A iterations the noise level decreases linearly to 0, so the
            run ends on (near) the zero-loss set at the point the noise has drifted to (0: constant sigma).
        momentum, nesterov, settings, options: as in :class:`~flatminima.solvers.nonconvex.GradientDescent`
            (stochastic: no tolerance).

    Raises:
        InputDataError: on a negative noise level, a non-positive step or batch size, an unknown
            distribution; at run time, if b > m.
        InputTypeError: at run time, without a generator or with an objective that has no residual.

    Example:
        >>> import torch
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> init = obj.random_params(generator=g, scale=0.3)
        >>> solver = LabelNoiseSGD(step_size=0.01, noise_level=0.1, batch_size=10, max_iterations=300)
        >>> result = solver.run(obj, init, generator=torch.Generator().manual_seed(1))
        >>> result.final("loss") < float(obj.value(init))
        True

    References:
        Blanc et al. (COLT 2020); Damian, Ma, Lee (NeurIPS 2021).
    """

    name: ClassVar[str] = "label_noise_sgd"
    uses_tolerance: ClassVar[bool] = False

    def __init__(
        self,
        *,
        step_size: float = 0.01,
        noise_level: float = 0.1,
        batch_size: int | None = 32,
        distribution: str = "rademacher",
        anneal_iterations: int = 0,
        momentum: float = 0.0,
        nesterov: bool = False,
        settings: RunSettings | None = None,
        **options: Unpack[StochasticRunOptions],
    ) -> None:
        self.noise_level = check_real("noise_level", noise_level, low=0.0)
        self.batch_size = check_batch_size_argument(batch_size)
        self.distribution = check_distribution(distribution)
        self.anneal_iterations = check_int_in_range("anneal_iterations", anneal_iterations, low=0)
        super().__init__(
            step_size=step_size, momentum=momentum, nesterov=nesterov, settings=settings, **options
        )
        self._hyperparameters.update(
            noise_level=self.noise_level,
            batch_size=self.batch_size,
            distribution=self.distribution,
            anneal_iterations=self.anneal_iterations,
        )

    @property
    def stochastic(self) -> bool:
        """Always stochastic (label noise and/or minibatches)."""
        return True

    def _oracle(self, objective: Objective) -> GradientOracle:
        check_least_squares(objective, type(self).__name__)
        return GradientOracle(
            objective,
            batch_size=self.batch_size,
            noise_level=self.noise_level,
            distribution=self.distribution,
            owner=type(self).__name__,
        )

    def noise_factor(self, iteration: int) -> float:
        """Return sigma_t / sigma: 1, then linear to 0 over the last ``anneal_iterations`` (t from 0)."""
        remaining = self.max_iterations - iteration
        if self.anneal_iterations == 0 or remaining > self.anneal_iterations:
            return 1.0
        return (remaining - 1) / self.anneal_iterations

    def _extras(self, run: Run, params: Params) -> dict[str, float]:
        return {"noise_level": self.noise_level * self.noise_factor(run.last_step)}
