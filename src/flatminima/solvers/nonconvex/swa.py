r"""Stochastic weight averaging (Izmailov et al. 2018) as a solver over objectives.

The base dynamics is SGD (or GD with ``batch_size=None``) with a constant step and optional momentum.
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
from typing import Any, ClassVar

from flatminima._checks import check_int_in_range
from flatminima.objectives import Objective
from flatminima.solvers.nonconvex._oracles import GradientOracle
from flatminima.solvers.nonconvex.base import Params, State, check_batch_size_argument
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
        momentum, nesterov, max_iterations, record_every, time_limit, divergence_threshold: as in
            :class:`~flatminima.solvers.nonconvex.GradientDescent` (no tolerance: runs to the end).

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

    def __init__(
        self,
        *,
        step_size: float = 0.01,
        batch_size: int | None = 32,
        swa_start: int | None = None,
        swa_frequency: int = 1,
        momentum: float = 0.0,
        nesterov: bool = False,
        max_iterations: int = 1000,
        record_every: int | None = None,
        time_limit: float | None = None,
        divergence_threshold: float = 1e6,
    ) -> None:
        self.batch_size = check_batch_size_argument(batch_size)
        # checked first: the default swa_start is derived from it (a bad value must be named as itself)
        check_int_in_range("max_iterations", max_iterations, low=1)
        start = max_iterations // 2 if swa_start is None else swa_start
        self.swa_start = check_int_in_range("swa_start", start, low=0)
        self.swa_frequency = check_int_in_range("swa_frequency", swa_frequency, low=1)
        super().__init__(
            step_size=step_size,
            momentum=momentum,
            nesterov=nesterov,
            max_iterations=max_iterations,
            tolerance=0.0,
            record_every=record_every,
            time_limit=time_limit,
            divergence_threshold=divergence_threshold,
        )
        del self._hyperparameters["tolerance"]
        self._hyperparameters.update(
            batch_size=self.batch_size, swa_start=self.swa_start, swa_frequency=self.swa_frequency
        )

    @property
    def stochastic(self) -> bool:
        """True for minibatch SWA."""
        return self.batch_size is not None

    def snapshot_due(self, iteration: int) -> bool:
        """Whether the iterate after ``iteration`` steps is averaged."""
        return iteration >= max(self.swa_start, 1) and (iteration - self.swa_start) % self.swa_frequency == 0

    def _prepare(self, objective: Objective, params: Params, generator: Any) -> State:
        oracle = GradientOracle(objective, batch_size=self.batch_size, owner=type(self).__name__)
        return {"oracle": oracle, "average": None, "num_averaged": 0}

    def _gradient(self, objective: Objective, params: Params, state: State, generator: Any) -> Params:
        oracle: GradientOracle = state["oracle"]
        return oracle(params, generator)

    def _step(
        self, objective: Objective, params: Params, state: State, iteration: int, generator: Any
    ) -> Params:
        new = super()._step(objective, params, state, iteration, generator)
        if self.snapshot_due(iteration + 1):
            n = state["num_averaged"]
            average = state["average"]
            state["average"] = (
                tuple(p.clone() for p in new)
                if average is None
                else tuple((n * a + p) / (n + 1) for a, p in zip(average, new, strict=True))
            )
            state["num_averaged"] = n + 1
        return new

    def _extras(self, objective: Objective, params: Params, state: State) -> dict[str, float]:
        average = state.get("average")
        if average is None:
            return {"num_averaged": 0.0}
        return {
            "num_averaged": float(state["num_averaged"]),
            "averaged_loss": float(objective.value(average)),
            "averaged_scaled_trace": float(objective.scaled_trace(average)),
        }

    def _final(self, objective: Objective, params: Params, state: State) -> Params:
        average = state.get("average")
        return params if average is None else typing.cast(Params, average)
