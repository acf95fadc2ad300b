r"""Stochastic weight averaging (Izmailov et al. 2018) as a solver over objectives.

The base dynamics is SGD (or GD with ``batch_size=None``) with a constant step (or a schedule) and optional
momentum; the solver runs :class:`flatminima.optim.SWA` (``torch.optim.swa_utils``' averaging) around
``torch.optim.SGD``.
From iteration ``swa_start`` on, every ``swa_frequency`` iterations the iterate theta_t joins an
equal-weight running mean, theta_SWA <- (n theta_SWA + theta_t) / (n + 1); after n snapshots theta_SWA is
exactly their arithmetic mean. ``run`` returns theta_SWA (the last iterate when no snapshot was taken).

For factorized models note that the average of factors is not the factorization of the average
product: (1/n) sum_t L_t times (1/n) sum_t R_t^T differs from (1/n) sum_t L_t R_t^T, so the loss at
theta_SWA can exceed the losses of the iterates; the history reports both (``loss`` of the iterate,
``averaged_loss`` and ``averaged_scaled_trace`` of the mean).

References:
    P. Izmailov, D. Podoprikhin, T. Garipov, D. Vetrov, A. G. Wilson. Averaging weights leads to wider
    optima and better generalization. UAI 2018.
"""

from __future__ import annotations

import typing
from typing import ClassVar, Unpack

import torch

from flatminima._checks import check_int_in_range
from flatminima.optim.swa import SWA, snapshot_due
from flatminima.solvers.nonconvex.base import (
    Params,
    Run,
    RunSettings,
    StochasticRunOptions,
    check_batch_size_argument,
)
from flatminima.solvers.nonconvex.descent import GradientDescent


@typing.final
class StochasticWeightAveraging(GradientDescent):
    r"""SGD with a constant step whose iterates are averaged from ``swa_start`` on.

    Snapshot iterations t (counted after the step, t = 1, 2, ...) satisfy t >= max(swa_start, 1) and
    (t - swa_start) % swa_frequency == 0.

    Args:
        step_size: eta > 0 (constant).
        batch_size: b (None: full-batch GD iterates).
        swa_start: the first iteration that may be averaged (>= 0; default: half of ``max_iterations``).
        swa_frequency: iterations between snapshots (>= 1).
        momentum, nesterov, settings, options: as in :class:`~flatminima.solvers.nonconvex.GradientDescent`
            (no tolerance: runs to the end).

    Raises:
        InputDataError: on a non-positive step or batch size, a negative ``swa_start``, ...

    Example:
        >>> import torch
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> init = obj.random_params(generator=g, scale=0.3)
        >>> solver = StochasticWeightAveraging(step_size=0.01, batch_size=10, max_iterations=200)
        >>> result = solver.run(obj, init, generator=torch.Generator().manual_seed(1))
        >>> result.final("num_averaged"), result.final("loss") < float(obj.value(init))
        (101.0, True)

    References:
        Izmailov et al. (UAI 2018).
    """

    name: ClassVar[str] = "swa"
    uses_tolerance: ClassVar[bool] = False

    def __init__(
        self,
        *,
        step_size: float = 0.01,
        batch_size: int | None = 32,
        swa_start: int | None = None,
        swa_frequency: int = 1,
        momentum: float = 0.0,
        nesterov: bool = False,
        settings: RunSettings | None = None,
        **options: Unpack[StochasticRunOptions],
    ) -> None:
        self.batch_size = check_batch_size_argument(batch_size)
        super().__init__(
            step_size=step_size, momentum=momentum, nesterov=nesterov, settings=settings, **options
        )
        start = self.max_iterations // 2 if swa_start is None else swa_start
        self.swa_start = check_int_in_range("swa_start", start, low=0)
        self.swa_frequency = check_int_in_range("swa_frequency", swa_frequency, low=1)
        self._hyperparameters.update(
            batch_size=self.batch_size, swa_start=self.swa_start, swa_frequency=self.swa_frequency
        )

    def snapshot_due(self, iteration: int) -> bool:
        """Whether the iterate after ``iteration`` steps is averaged."""
        return snapshot_due(iteration, self.swa_start, self.swa_frequency)

    def _optimizer(self, params: list[torch.Tensor], run: Run) -> torch.optim.Optimizer:
        return SWA(self._sgd(params), swa_start=self.swa_start, swa_frequency=self.swa_frequency)

    def _extras(self, run: Run, params: Params) -> dict[str, float]:
        swa = typing.cast(SWA, run.optimizer)
        if swa.num_averaged == 0:
            return {"num_averaged": 0.0}
        average = tuple(swa.averaged_parameters())
        return {
            "num_averaged": float(swa.num_averaged),
            "averaged_loss": float(run.objective.value(average)),
            "averaged_scaled_trace": float(run.objective.scaled_trace(average)),
        }

    def _final(self, run: Run, params: Params) -> Params:
        swa = typing.cast(SWA, run.optimizer)
        return params if swa.num_averaged == 0 else tuple(swa.averaged_parameters())
