r"""Replicated SGD (robust ensembles, Baldassi et al. 2016) as a solver over objectives.

The solver runs :class:`flatminima.optim.ReplicatedSGD`: y replicas w_a of the factors, each on its own
minibatch of measurements, coupled elastically to their centre c with a coupling that grows,
gamma_t = min(gamma_0 (1 + gamma_1)^t, gamma_max). One step (see :mod:`flatminima.optim.replicated`):

    w_a' = w_a - eta grad f_{B_a}(w_a),   c = (1/y) sum_a w_a',   w_a = w_a' + k_t (c - w_a'),
    k_t = eta gamma_t / (1 + eta gamma_t)  (the elastic coupling taken implicitly, stable for every gamma).

The iterate the solver records and returns is the centre c (the robust ensemble's reference, which
Baldassi et al. show lies in dense, flat regions); the history adds ``gamma`` and ``replica_spread`` =
((1/y) sum_a ||w_a - c||^2)^{1/2}. Each step costs y gradients. With y = 1 or gamma = 0 and one replica
the solver is SGD; as gamma -> infinity the replicas collapse onto the centre.

For factorized models the average of factors is not the factorization of the average product (as for
SWA): strongly separated replicas give a centre whose loss exceeds theirs; the growing coupling closes the
gap by the end of the run.

References:
    C. Baldassi, C. Borgs, J. T. Chayes, A. Ingrosso, C. Lucibello, L. Saglietti, R. Zecchina.
    Unreasonable effectiveness of learning neural networks: from accessible states and robust ensembles
    to basic algorithmic schemes. PNAS 113(48), 2016.
"""

from __future__ import annotations

import math
import typing
from typing import ClassVar, Unpack

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import InputDataError
from flatminima.optim.entropy_sgd import scoped_gamma
from flatminima.optim.replicated import ReplicatedSGD as ReplicatedSGDOptimizer
from flatminima.solvers.nonconvex.base import (
    NonconvexSolver,
    Params,
    Run,
    RunOptions,
    RunSettings,
    check_batch_size_argument,
)


@typing.final
class ReplicatedSGD(NonconvexSolver):
    r"""Replicated SGD: y replicas coupled elastically to their centre, with a growing coupling.

    Args:
        step_size: eta > 0, the step of every replica.
        replicas: y >= 1.
        gamma: gamma_0 >= 0, the initial coupling.
        scoping: gamma_1 >= 0 in gamma_t = gamma_0 (1 + gamma_1)^t.
        gamma_max: the cap on gamma_t (default inf).
        spread: the standard deviation of the replicas' initial offsets from the initial point (>= 0).
        batch_size: b (None: full-batch gradients; the replicas then differ only through ``spread``).
        settings, options: the :class:`~flatminima.solvers.nonconvex.RunSettings`; ``tolerance`` applies
            to deterministic runs (full batch and no spread, or one replica) and bounds the centre's
            displacement divided by the step; a schedule scales eta.

    Raises:
        InputDataError: on ``replicas < 1``, a negative gamma, scoping or spread, a non-positive step or
            batch size, gamma_max < gamma.

    Example:
        >>> import torch
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> init = obj.random_params(generator=g, scale=0.3)
        >>> solver = ReplicatedSGD(step_size=0.02, replicas=3, batch_size=10, max_iterations=200)
        >>> result = solver.run(obj, init, generator=torch.Generator().manual_seed(1))
        >>> result.final("loss") < float(obj.value(init)), result.final("gamma") > result.history[0]["gamma"]
        (True, True)

    References:
        Baldassi et al. (PNAS 2016), robust ensembles and replicated SGD.
    """

    name: ClassVar[str] = "replicated_sgd"
    _fresh_draws: ClassVar[bool] = True  # every replica draws its own minibatch
    _displacement_direction: ClassVar[bool] = True  # the centre's step / eta

    def __init__(
        self,
        *,
        step_size: float = 0.02,
        replicas: int = 3,
        gamma: float = 0.5,
        scoping: float = 2e-3,
        gamma_max: float = math.inf,
        spread: float = 0.0,
        batch_size: int | None = 32,
        settings: RunSettings | None = None,
        **options: Unpack[RunOptions],
    ) -> None:
        self.step_size = check_real("step_size", step_size, low=0.0, low_open=True)
        self.replicas = check_int_in_range("replicas", replicas, low=1)
        self.gamma = check_real("gamma", gamma, low=0.0)
        self.scoping = check_real("scoping", scoping, low=0.0)
        self.gamma_max = math.inf if gamma_max == math.inf else check_real("gamma_max", gamma_max, low=0.0)
        if self.gamma_max < self.gamma:
            raise InputDataError(f"gamma_max must be >= gamma = {self.gamma}; got gamma_max={gamma_max}.")
        self.spread = check_real("spread", spread, low=0.0)
        self.batch_size = check_batch_size_argument(batch_size)
        super().__init__(settings=settings, **options)
        self._hyperparameters.update(
            step_size=self.step_size,
            replicas=self.replicas,
            gamma=self.gamma,
            scoping=self.scoping,
            gamma_max=self.gamma_max,
            spread=self.spread,
            batch_size=self.batch_size,
        )

    @property
    def stochastic(self) -> bool:
        """True with minibatches or with randomly spread replicas."""
        return self.batch_size is not None or (self.spread > 0 and self.replicas > 1)

    def gamma_at(self, step: int) -> float:
        """gamma_t = min(gamma_0 (1 + gamma_1)^t, gamma_max)."""
        return scoped_gamma(self.gamma, self.scoping, self.gamma_max, step)

    def _optimizer(self, params: list[torch.Tensor], run: Run) -> torch.optim.Optimizer:
        return ReplicatedSGDOptimizer(
            params,
            lr=self.step_size,
            replicas=self.replicas,
            gamma=self.gamma,
            scoping=self.scoping,
            gamma_max=self.gamma_max,
            spread=self.spread,
            generator=run.generator,
        )

    def _extras(self, run: Run, params: Params) -> dict[str, float]:
        optimizer = typing.cast(ReplicatedSGDOptimizer, run.optimizer)
        squares = sum(
            sum(float((w - c).square().sum()) for w, c in zip(replica, params, strict=True))
            for replica in optimizer.replica_parameters()
        )
        return {"gamma": self.gamma_at(run.last_step), "replica_spread": math.sqrt(squares / self.replicas)}
