r"""Sharpness-aware minimization (SAM) and adaptive SAM (ASAM) as solvers over objectives.

One step (Foret et al. 2021, with the base optimizer GD with optional momentum):

    g = grad f_B(theta),  eps = rho g / ||g||_2,  g_SAM = grad f_B(theta + eps),  theta <- theta - eta g_SAM,

with f_B the full loss (``batch_size=None``) or one minibatch of measurements, the same batch for both
gradients. ASAM (Kwon et al. 2021) uses eps = rho T^2 g / ||T g||_2 with T = |theta| + eta_asam
element-wise. The solver runs the ``torch.optim`` wrapper :class:`flatminima.optim.SAM` around
``torch.optim.SGD`` (the perturbation is :func:`flatminima.optim.sam_perturbation`).

The history adds ``sam_sharpness`` = f(theta + rho g/||g||) - f(theta) (full batch): the first-order
estimate of max_{||e|| <= rho} f(theta + e) - f(theta), which SAM penalizes; for small rho it is about
rho ||g|| + (rho^2 / 2) g^T H g / ||g||^2.

References:
    P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur. Sharpness-aware minimization for efficiently
    improving generalization. ICLR 2021.
    J. Kwon, J. Kim, H. Park, I. K. Choi. ASAM: adaptive sharpness-aware minimization for
    scale-invariant learning of deep neural networks. ICML 2021.
"""

from __future__ import annotations

import typing
from typing import ClassVar, Unpack

import torch

from flatminima._checks import check_real
from flatminima.optim.sam import SAM, sam_perturbation
from flatminima.solvers.nonconvex.base import (
    Params,
    Run,
    RunOptions,
    RunSettings,
    axpy,
    check_batch_size_argument,
)
from flatminima.solvers.nonconvex.descent import GradientDescent


class SharpnessAwareMinimization(GradientDescent):
    r"""SAM over an objective: descend the gradient taken at theta + rho g/||g||.

    Args:
        rho: the radius rho >= 0 (0: gradient descent).
        step_size: eta > 0.
        batch_size: b (None: full batch, deterministic; an integer: minibatch SAM, needs a generator).
        momentum, nesterov: heavy-ball / Nesterov momentum of the base step (``torch.optim.SGD``).
        settings, options: as in :class:`~flatminima.solvers.nonconvex.GradientDescent`; ``tolerance``
            bounds ||g_SAM||.

    Raises:
        InputDataError: on a negative rho, a non-positive step or batch size, ...

    Example:
        >>> import torch
        >>> from flatminima.problems import MatrixSensing
        >>> from flatminima.objectives import BilinearFactorization
        >>> g = torch.Generator().manual_seed(0)
        >>> inst = MatrixSensing(shape=(5, 5), rank=1, num_measurements=40).sample(generator=g)
        >>> obj = BilinearFactorization(inst, width=5)
        >>> init = obj.random_params(generator=g, scale=0.3)
        >>> result = SharpnessAwareMinimization(rho=0.01, max_iterations=200).run(obj, init)
        >>> result.final("loss") < float(obj.value(init))
        True

    References:
        Foret et al. (ICLR 2021).
    """

    name: ClassVar[str] = "sam"
    _adaptive: ClassVar[bool] = False

    def __init__(
        self,
        *,
        rho: float = 0.05,
        step_size: float = 0.05,
        batch_size: int | None = None,
        eta: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        settings: RunSettings | None = None,
        **options: Unpack[RunOptions],
    ) -> None:
        self.rho = check_real("rho", rho, low=0.0)
        self.eta = check_real("eta", eta, low=0.0)
        self.batch_size = check_batch_size_argument(batch_size)
        super().__init__(
            step_size=step_size, momentum=momentum, nesterov=nesterov, settings=settings, **options
        )
        self._hyperparameters.update(rho=self.rho, batch_size=self.batch_size)
        if self._adaptive:
            self._hyperparameters.update(eta=self.eta)

    def perturbation(self, params: Params, gradient: Params) -> Params:
        """The ascent step eps(theta) for the gradient ``gradient`` (SAM or ASAM)."""
        steps = sam_perturbation(params, gradient, rho=self.rho, adaptive=self._adaptive, eta=self.eta)
        return tuple(steps)

    def _optimizer(self, params: list[torch.Tensor], run: Run) -> torch.optim.Optimizer:
        base = self._sgd(params)
        return SAM(base, rho=self.rho, adaptive=self._adaptive, eta=self.eta, freeze_running_stats=False)

    def _extras(self, run: Run, params: Params) -> dict[str, float]:
        objective = run.objective
        gradient = objective.grad(params)
        eps = tuple(sam_perturbation(params, gradient, rho=self.rho))
        ascent = float(objective.value(axpy(params, eps, 1.0)) - objective.value(params))
        return {"sam_sharpness": ascent}


@typing.final
class AdaptiveSharpnessAwareMinimization(SharpnessAwareMinimization):
    r"""ASAM: SAM with the scale-invariant neighbourhood ||T^{-1} e||_2 <= rho, T = |theta| + eta.

    eps = rho T^2 g / ||T g||_2. Same arguments as :class:`SharpnessAwareMinimization`, with the offset
    ``eta`` >= 0 (default 0.01) and a larger default radius (rho = 0.5, the ASAM paper's usual scale).

    References:
        Kwon et al. (ICML 2021).
    """

    name: ClassVar[str] = "asam"
    _adaptive: ClassVar[bool] = True

    def __init__(
        self,
        *,
        rho: float = 0.5,
        step_size: float = 0.05,
        batch_size: int | None = None,
        eta: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        settings: RunSettings | None = None,
        **options: Unpack[RunOptions],
    ) -> None:
        super().__init__(
            rho=rho,
            step_size=step_size,
            batch_size=batch_size,
            eta=eta,
            momentum=momentum,
            nesterov=nesterov,
            settings=settings,
            **options,
        )
