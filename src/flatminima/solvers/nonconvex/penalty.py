r"""Explicit trace-of-Hessian penalties: closed form for factorizations, Hutchinson for any loss.

Both solvers descend f(theta) + lam T(theta), with T the scaled trace str (default) or the plain trace.

**Closed form** (:class:`TracePenaltyDescent`). For the bilinear factorization the traces are exact at
every point (Ding et al. 2024, Lemma 3.1): str = 2(||D1 L||_F^2 + ||D2 R||_F^2) and
tr = 2(d2 ||D1 L||_F^2 + d1 ||D2 R||_F^2), so the penalty is a D-weighted weight decay with gradients

    grad_L str = 4 D1^2 L,  grad_R str = 4 D2^2 R   (tr: 4 d2 D1^2 L, 4 d1 D2^2 R).

Other objectives get the gradient of their closed-form ``scaled_trace`` / ``hessian_trace`` by autograd
(e.g. the symmetric factorization, whose trace has a residual term off the zero-loss set).

**Hutchinson** (:class:`HutchinsonPenaltyDescent`). T is replaced by the unbiased estimate
(1/N) sum_n z_n^T grad^2 f z_n (Rademacher z, block-scaled by sqrt(w_p) for the scaled trace), differentiated
by double backpropagation (:func:`flatminima.optim.hutchinson_trace_penalty`); this works for any C^2 loss
given as ``objective.value_function()`` and gives an unbiased estimate of grad T.

With lam > 0 the minimizers are biased (the loss is not zero there); as lam -> 0 they approach the
zero-loss points of smallest T, i.e. the flat solutions (Ding et al. 2024, Section 3).

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Lemma 3.1, Theorem 3.2).
    M. F. Hutchinson. A stochastic estimator of the trace of the influence matrix (1989).
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar, Unpack

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.objectives import BilinearFactorization, Objective
from flatminima.optim.penalty import hutchinson_trace_penalty
from flatminima.solvers.nonconvex._oracles import BatchDraw
from flatminima.solvers.nonconvex.base import (
    NonconvexSolver,
    Params,
    Run,
    RunOptions,
    RunSettings,
    StochasticRunOptions,
    check_batch_size_argument,
)
from flatminima.solvers.nonconvex.descent import GradientDescent


def _weighted(D_sq: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """D^2 X for D^2 given as a matrix or as its diagonal."""
    return D_sq.unsqueeze(-1) * X if D_sq.ndim == 1 else D_sq @ X


def trace_penalty_value(objective: Objective, params: Params, *, scaled: bool = True) -> torch.Tensor:
    """The penalty T(theta): ``objective.scaled_trace`` (scaled) or ``objective.hessian_trace``."""
    return objective.scaled_trace(params) if scaled else objective.hessian_trace(params)


def trace_penalty_gradient(objective: Objective, params: Params, *, scaled: bool = True) -> Params:
    r"""The gradient of the exact (scaled) Hessian trace with respect to the parameters.

    Bilinear factorization: (4 D1^2 L, 4 D2^2 R) for str, (4 d2 D1^2 L, 4 d1 D2^2 R) for tr. Other
    objectives: autograd of their closed-form trace.

    Args:
        objective: the objective.
        params: the point.
        scaled: the scaled trace (default) or the plain trace.

    Returns:
        A tuple shaped like ``params``.

    Example:
        >>> from flatminima.problems import MatrixSensing
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(4, 3), rank=1, num_measurements=20).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=2)
        >>> L, R = obj.random_params(generator=g)
        >>> D1, _ = inst.operator.rescaling()
        >>> bool(torch.allclose(trace_penalty_gradient(obj, (L, R))[0], 4 * D1 @ D1 @ L))
        True
    """
    params = objective.check_params(params)
    if isinstance(objective, BilinearFactorization):
        L, R = params
        D1_sq, D2_sq = objective.rescaling_weights()
        if scaled:
            return 4.0 * _weighted(D1_sq, L), 4.0 * _weighted(D2_sq, R)
        return 4.0 * objective.d2 * _weighted(D1_sq, L), 4.0 * objective.d1 * _weighted(D2_sq, R)
    with torch.enable_grad():
        leaves = tuple(p.detach().requires_grad_(True) for p in params)
        value = trace_penalty_value(objective, leaves, scaled=scaled)
        grads = torch.autograd.grad(value, leaves, materialize_grads=True)
    return tuple(g.detach() for g in grads)


def _check_penalty(penalty: Any) -> float:
    return check_real("penalty", penalty, low=0.0)


@typing.final
class TracePenaltyDescent(GradientDescent):
    r"""Gradient descent on f + lam T with the exact trace penalty (a D-weighted weight decay).

    Args:
        penalty: lam >= 0.
        scaled: penalize the scaled trace str (default, whose zero-loss minimizers are the flat solutions)
            or the plain trace.
        step_size: eta > 0.
        batch_size: b (None: full-batch gradients of f; the penalty is always exact).
        momentum, nesterov, settings, options: as in :class:`~flatminima.solvers.nonconvex.GradientDescent`;
            ``tolerance`` bounds ||grad f + lam grad T||.

    Raises:
        InputDataError: on a negative penalty or a non-positive step size.

    Example:
        >>> import torch
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> init = obj.random_params(generator=g, scale=0.3)
        >>> result = TracePenaltyDescent(penalty=0.01, max_iterations=300).run(obj, init)
        >>> result.final("scaled_trace") < float(obj.scaled_trace(init))
        True

    References:
        Ding et al. (2024), Lemma 3.1.
    """

    name: ClassVar[str] = "trace_penalty"

    def __init__(
        self,
        *,
        penalty: float = 1e-3,
        scaled: bool = True,
        step_size: float = 0.05,
        batch_size: int | None = None,
        momentum: float = 0.0,
        nesterov: bool = False,
        settings: RunSettings | None = None,
        **options: Unpack[RunOptions],
    ) -> None:
        self.penalty = _check_penalty(penalty)
        self.scaled = bool(scaled)
        self.batch_size = check_batch_size_argument(batch_size)
        super().__init__(
            step_size=step_size, momentum=momentum, nesterov=nesterov, settings=settings, **options
        )
        self._hyperparameters.update(penalty=self.penalty, scaled=self.scaled, batch_size=self.batch_size)

    def _gradient(self, run: Run, params: Params, draw: BatchDraw) -> Params:
        gradient = run.oracle.gradient(params, draw)
        if self.penalty == 0.0:
            return gradient
        extra = trace_penalty_gradient(run.objective, params, scaled=self.scaled)
        return tuple(g + self.penalty * e for g, e in zip(gradient, extra, strict=True))

    def _extras(self, run: Run, params: Params) -> dict[str, float]:
        return _penalized(run.objective, params, self.penalty, self.scaled)


def _penalized(objective: Objective, params: Params, penalty: float, scaled: bool) -> dict[str, float]:
    value = objective.value(params) + penalty * trace_penalty_value(objective, params, scaled=scaled)
    return {"penalized_objective": float(value)}


@typing.final
class HutchinsonPenaltyDescent(NonconvexSolver):
    r"""Gradient descent on f + lam T_hat, T_hat a double-backprop Hutchinson estimate of the (scaled) trace.

    Each step draws ``num_probes`` Rademacher probes, forms T_hat = (1/N) sum_n z_n^T grad^2 f z_n with its
    autograd graph and descends grad f + lam grad T_hat (an unbiased estimate of grad (f + lam T)).
    Works for any objective whose ``value_function()`` is twice differentiable by autograd.

    Args:
        penalty: lam >= 0.
        num_probes: N >= 1 probes per step.
        scaled: block-scaled probes (the scaled trace, default) or plain probes (the trace).
        step_size: eta > 0 (``torch.optim.SGD``).
        settings, options: the :class:`~flatminima.solvers.nonconvex.RunSettings` (no tolerance).

    Raises:
        InputDataError: on a negative penalty, a non-positive step size or ``num_probes < 1``.
        InputTypeError: at run time, without a generator.

    Example:
        >>> import torch
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> init = obj.random_params(generator=g, scale=0.3)
        >>> solver = HutchinsonPenaltyDescent(penalty=0.01, max_iterations=100)
        >>> result = solver.run(obj, init, generator=torch.Generator().manual_seed(1))
        >>> result.final("loss") < float(obj.value(init))
        True

    References:
        Hutchinson (1989); Ding et al. (2024), Lemma 3.1.
    """

    name: ClassVar[str] = "hutchinson_penalty"
    uses_tolerance: ClassVar[bool] = False

    def __init__(
        self,
        *,
        penalty: float = 1e-3,
        num_probes: int = 1,
        scaled: bool = True,
        step_size: float = 0.05,
        settings: RunSettings | None = None,
        **options: Unpack[StochasticRunOptions],
    ) -> None:
        self.penalty = _check_penalty(penalty)
        self.num_probes = check_int_in_range("num_probes", num_probes, low=1)
        self.scaled = bool(scaled)
        self.step_size = check_real("step_size", step_size, low=0.0, low_open=True)
        super().__init__(settings=settings, **options)
        self._hyperparameters.update(
            penalty=self.penalty, num_probes=self.num_probes, scaled=self.scaled, step_size=self.step_size
        )

    @property
    def stochastic(self) -> bool:
        """Always stochastic (random probes)."""
        return True

    def penalized_gradient(
        self, objective: Objective, params: Params, *, generator: torch.Generator
    ) -> tuple[Params, float]:
        """Return (grad (f + lam T_hat), T_hat) at ``params`` for one draw of probes."""
        function = objective.value_function()
        weights = objective.block_weights if self.scaled else None
        with torch.enable_grad():
            leaves = tuple(p.detach().requires_grad_(True) for p in params)
            loss = function(leaves)
            estimate = hutchinson_trace_penalty(
                loss, leaves, generator=generator, num_probes=self.num_probes, weights=weights
            )
            total = loss + self.penalty * estimate.value
            grads = torch.autograd.grad(total, leaves, materialize_grads=True)
        return tuple(g.detach() for g in grads), float(estimate.value.detach())

    def _optimizer(self, params: list[torch.Tensor], run: Run) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.step_size)

    def _gradient(self, run: Run, params: Params, draw: BatchDraw) -> Params:
        generator = typing.cast(torch.Generator, run.generator)  # stochastic: run() required one
        return self.penalized_gradient(run.objective, params, generator=generator)[0]

    def _extras(self, run: Run, params: Params) -> dict[str, float]:
        return _penalized(run.objective, params, self.penalty, self.scaled)
