r"""Gradient descent (with heavy-ball or Nesterov momentum), large-step GD and minibatch SGD.

* :class:`GradientDescent`: theta <- theta - eta v, v <- mu v + grad f(theta) (the PyTorch momentum
  convention; mu = 0 is plain GD; Polyak's theta_{t+1} = theta_t - eta g_t + mu (theta_t - theta_{t-1}) is
  the same recursion). From a small random initialization this is the implicit-bias baseline:
  for matrix sensing, GD from small init follows a low-rank, nuclear-norm-like path (Gunasekar et al.
  2017; Li, Ma, Zhang 2018).
* :class:`LargeStepGradientDescent`: GD with a step near the stability limit. A minimum theta* is
  linearly stable for GD only if lambda_max(grad^2 f(theta*)) <= 2/eta, so a large step rules out
  sharp minima; the history records the sharpness lambda_max (power iteration with Hessian-vector
  products) and the ratio eta lambda_max / 2 ("edge of stability" when it hovers at 1; Cohen et al.
  2021). An optional linear warm-up of the step avoids blowing up from a sharp start.
* :class:`StochasticGradientDescent`: minibatches of b measurements (drawn without replacement within
  a batch, independently across steps); the gradient-noise scale is eta / b. SGD-stable minima satisfy
  tr grad^2 f <= 2/eta in the mean-square linear-stability sense (Wu & Su 2023).

References:
    S. Gunasekar, B. Woodworth, S. Bhojanapalli, B. Neyshabur, N. Srebro. Implicit regularization in
    matrix factorization. NeurIPS 2017.
    J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar. Gradient descent on neural networks typically
    occurs at the edge of stability. ICLR 2021.
    L. Wu, W. J. Su. The implicit regularization of dynamical stability in stochastic gradient descent.
    ICML 2023.
"""

from __future__ import annotations

import typing
from typing import ClassVar, Unpack

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.objectives import Objective
from flatminima.solvers.nonconvex.base import (
    NonconvexSolver,
    Params,
    Run,
    RunOptions,
    RunSettings,
    StochasticRunOptions,
    total_norm,
)


def top_hessian_eigenvalue(
    objective: Objective, params: Params, *, iterations: int, start: Params | None = None
) -> tuple[float, Params]:
    """Power iteration with ``objective.hvp``: return (Rayleigh quotient, unit vector).

    It converges to the eigenvalue of largest magnitude (the sharpness lambda_max at a minimum, where
    the Hessian is PSD). Deterministic: it starts from ``start`` (warm start), else the all-ones vector.
    """
    vector = start if start is not None else tuple(torch.ones_like(p) for p in params)
    norm = float(total_norm(vector))
    if norm == 0.0:
        vector = tuple(torch.ones_like(p) for p in params)
        norm = float(total_norm(vector))
    vector = tuple(v / norm for v in vector)
    value = 0.0
    for _ in range(iterations):
        image = objective.hvp(params, vector)
        value = float(sum((v * h).sum() for v, h in zip(vector, image, strict=True)))
        norm = float(total_norm(image))
        if norm == 0.0:
            return 0.0, vector
        vector = tuple(h / norm for h in image)
    return value, vector


class GradientDescent(NonconvexSolver):
    r"""Full-batch gradient descent with optional heavy-ball or Nesterov momentum (``torch.optim.SGD``).

    Args:
        step_size: eta > 0.
        momentum: mu in [0, 1).
        nesterov: Nesterov's variant (needs momentum > 0 to differ).
        settings: the :class:`~flatminima.solvers.nonconvex.RunSettings` (stopping, recording, schedule).
        options: :class:`~flatminima.solvers.nonconvex.RunSettings` fields as keywords (``max_iterations``,
            ``tolerance``, ``record_every``, ``time_limit``, ``divergence_threshold``, ``schedule``);
            ``tolerance`` bounds ||grad f||.

    Raises:
        InputDataError: on a non-positive step size, momentum outside [0, 1), ...

    Example:
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> result = GradientDescent(step_size=0.1, max_iterations=300).run(
        ...     obj, obj.random_params(generator=g, scale=1e-3))
        >>> result.final("loss") < 1e-3 * result.history[0]["loss"]
        True

    References:
        Gunasekar et al. (NeurIPS 2017); B. T. Polyak, Some methods of speeding up the convergence of
        iteration methods (1964).
    """

    name: ClassVar[str] = "gd"

    def __init__(
        self,
        *,
        step_size: float = 0.05,
        momentum: float = 0.0,
        nesterov: bool = False,
        settings: RunSettings | None = None,
        **options: Unpack[RunOptions],
    ) -> None:
        self.step_size = check_real("step_size", step_size, low=0.0, low_open=True)
        self.momentum = check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.nesterov = bool(nesterov)
        super().__init__(settings=settings, **options)
        self._hyperparameters.update(step_size=self.step_size, momentum=self.momentum, nesterov=self.nesterov)

    def _sgd(self, params: list[torch.Tensor]) -> torch.optim.SGD:
        """``torch.optim.SGD`` with this solver's step and momentum (v <- mu v + g; PyTorch's convention)."""
        nesterov = self.nesterov and self.momentum > 0
        return torch.optim.SGD(params, lr=self.step_size, momentum=self.momentum, nesterov=nesterov)

    def _optimizer(self, params: list[torch.Tensor], run: Run) -> torch.optim.Optimizer:
        return self._sgd(params)


@typing.final
class LargeStepGradientDescent(GradientDescent):
    r"""Gradient descent with a large step, recording the sharpness against the 2/eta stability limit.

    Extra history entries: ``sharpness`` (lambda_max of grad^2 f by ``power_iterations`` steps of warm-started
    power iteration), ``stability_ratio`` = eta lambda_max / 2 (> 1: the current point is linearly
    unstable for GD) and ``step_size`` (the step of the last iteration: warm-up and schedule included).

    For sensing with ||M||_F = 1 every zero-loss point has lambda_max >= about 4 sigma_1(M) (attained near
    balanced factors), so steps beyond about 1 / (2 sigma_1(M)) leave no stable minimum; the default 0.2
    (four times GD's) is large for sigma_1(M) ~ 1. The study sets eta = 1.8 / lambda_max(flat solution).

    Args:
        step_size: eta > 0 (the target step after warm-up).
        warmup_iterations: the step grows linearly from eta / W to eta over the first W iterations
            (0: no warm-up); it multiplies the schedule, if any.
        power_iterations: power-iteration steps per record (>= 1).
        momentum, nesterov, settings, options: as in :class:`GradientDescent`.

    Example:
        >>> import torch
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> init = obj.random_params(generator=g, scale=0.3)
        >>> solver = LargeStepGradientDescent(step_size=0.2, max_iterations=300, record_every=50)
        >>> result = solver.run(obj, init)
        >>> sharpness = result.final("sharpness")  # at most about 2 / eta = 10 once it has converged
        >>> bool(sharpness < 2 / 0.2), result.final("loss") < 1e-4
        (True, True)

    References:
        Cohen et al. (ICLR 2021); L. Wu, C. Ma, W. E. How SGD selects the global minima in
        over-parameterized learning: a dynamical stability perspective. NeurIPS 2018.
    """

    name: ClassVar[str] = "large_step_gd"

    def __init__(
        self,
        *,
        step_size: float = 0.2,
        warmup_iterations: int = 0,
        power_iterations: int = 20,
        momentum: float = 0.0,
        nesterov: bool = False,
        settings: RunSettings | None = None,
        **options: Unpack[RunOptions],
    ) -> None:
        self.warmup_iterations = check_int_in_range("warmup_iterations", warmup_iterations, low=0)
        self.power_iterations = check_int_in_range("power_iterations", power_iterations, low=1)
        super().__init__(
            step_size=step_size, momentum=momentum, nesterov=nesterov, settings=settings, **options
        )
        self._hyperparameters.update(
            warmup_iterations=self.warmup_iterations, power_iterations=self.power_iterations
        )

    def _rate_factor(self, iteration: int) -> float:
        factor = super()._rate_factor(iteration)
        if self.warmup_iterations == 0:
            return factor
        return min(1.0, (iteration + 1) / self.warmup_iterations) * factor

    def _extras(self, run: Run, params: Params) -> dict[str, float]:
        value, vector = top_hessian_eigenvalue(
            run.objective, params, iterations=self.power_iterations, start=run.state.get("eigenvector")
        )
        run.state["eigenvector"] = vector
        return {
            "sharpness": value,
            "stability_ratio": self.step_size * value / 2.0,
            "step_size": self.step_size * self._rate_factor(run.last_step),
        }


@typing.final
class StochasticGradientDescent(GradientDescent):
    r"""Minibatch SGD over measurements (optional heavy-ball momentum); noise scale eta / b.

    Each step draws b distinct measurements and descends f_B = (1/b) sum_{i in B} res_i^2, an unbiased
    estimate of f. Requires a least-squares objective (``residual``) and a generator.

    Args:
        step_size: eta > 0.
        batch_size: b >= 1 (<= m, checked at run time).
        momentum, nesterov, settings, options: as in :class:`GradientDescent` (no tolerance: stochastic
            runs stop at ``max_iterations``).

    Raises:
        InputDataError: on a non-positive step or batch size; at run time if b > m.
        InputTypeError: at run time without a generator.

    Example:
        >>> import torch
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> init = obj.random_params(generator=g, scale=0.3)
        >>> solver = StochasticGradientDescent(step_size=0.01, batch_size=10, max_iterations=200)
        >>> result = solver.run(obj, init, generator=torch.Generator().manual_seed(1))
        >>> result.final("loss") < float(obj.value(init)), solver.noise_scale
        (True, 0.001)

    References:
        H. Robbins, S. Monro (1951); S. L. Smith, Q. V. Le. A Bayesian perspective on generalization and
        stochastic gradient descent. ICLR 2018 (the noise scale eta m / b).
    """

    name: ClassVar[str] = "sgd"
    uses_tolerance: ClassVar[bool] = False

    def __init__(
        self,
        *,
        step_size: float = 0.01,
        batch_size: int = 32,
        momentum: float = 0.0,
        nesterov: bool = False,
        settings: RunSettings | None = None,
        **options: Unpack[StochasticRunOptions],
    ) -> None:
        self.batch_size = check_int_in_range("batch_size", batch_size, low=1)
        super().__init__(
            step_size=step_size, momentum=momentum, nesterov=nesterov, settings=settings, **options
        )
        self._hyperparameters.update(batch_size=self.batch_size)

    @property
    def noise_scale(self) -> float:
        """The gradient-noise scale eta / b."""
        return self.step_size / typing.cast(int, self.batch_size)
