r"""Stochastic weight averaging (Izmailov et al. 2018) as a wrapper around any ``torch.optim`` optimizer.

The base optimizer runs unchanged (typically SGD with a constant or cyclic learning rate). From step
``swa_start`` on, every ``swa_frequency`` steps the current weights w_t are added to an equal-weight
running mean,

    w_SWA <- w_SWA + (w_t - w_SWA) / (n + 1),  n <- n + 1,

so after n snapshots w_SWA is exactly their arithmetic mean. The update is ``torch.optim.swa_utils``'
own averaging function (``get_swa_multi_avg_fn``, the one ``AveragedModel`` applies); this wrapper only
decides when to take a snapshot, at the level of an optimizer's parameter groups (no model needed).
``swap_weights()`` exchanges the model's weights with the average (call it again to swap back).

The rest of the standard recipe is ``torch.optim.swa_utils`` itself: ``SWALR(base_optimizer, swa_lr=...)``
for the learning rate of the averaging phase (attach it to the wrapper or to the base optimizer, they
share ``param_groups``) and, for models with BatchNorm, ``update_bn(loader, model)`` after
``swap_weights()`` to recompute the running statistics for the averaged weights. To average a whole
module (buffers included) use ``AveragedModel(model)`` directly.

References:
    P. Izmailov, D. Podoprikhin, T. Garipov, D. Vetrov, A. G. Wilson. Averaging weights leads to wider
    optima and better generalization. UAI 2018.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.swa_utils import get_swa_multi_avg_fn

from flatminima._checks import check_int_in_range
from flatminima.errors import InputTypeError, SolverError

_SWA_UPDATE = get_swa_multi_avg_fn()


def snapshot_due(step: int, swa_start: int, swa_frequency: int) -> bool:
    """True if step t (counted from 1) is a snapshot: t >= max(swa_start, 1), (t - swa_start) % freq == 0."""
    return step >= max(swa_start, 1) and (step - swa_start) % swa_frequency == 0


class SWA(torch.optim.Optimizer):
    r"""Equal-weight averaging of the iterates of a base optimizer (stochastic weight averaging).

    Args:
        base_optimizer: a constructed ``torch.optim.Optimizer``.
        swa_start: the number of base steps after which the first snapshot is taken (>= 0; 0 averages
            from the first step on).
        swa_frequency: take a snapshot every ``swa_frequency`` steps (>= 1).

    Raises:
        InputTypeError: if ``base_optimizer`` is not a ``torch.optim.Optimizer``.
        InputDataError: if ``swa_start < 0`` or ``swa_frequency < 1``.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([0.0]))
        >>> opt = SWA(torch.optim.SGD([w], lr=1.0), swa_start=1)
        >>> for _ in range(3):
        ...     w.grad = torch.tensor([-1.0])
        ...     _ = opt.step()
        >>> opt.num_averaged, [float(t) for t in opt.averaged_parameters()]  # mean of 1, 2, 3
        (3, [2.0])

    References:
        Izmailov et al., Averaging weights leads to wider optima and better generalization, UAI 2018.
    """

    def __init__(
        self, base_optimizer: torch.optim.Optimizer, *, swa_start: int = 0, swa_frequency: int = 1
    ) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise InputTypeError(
                "base_optimizer must be a constructed torch.optim.Optimizer; got "
                f"{type(base_optimizer).__name__}."
            )
        self.swa_start = check_int_in_range("swa_start", swa_start, low=0)
        self.swa_frequency = check_int_in_range("swa_frequency", swa_frequency, low=1)
        super().__init__(base_optimizer.param_groups, {})
        self.base_optimizer = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.steps_taken = 0
        self.num_averaged = 0
        self._average: list[torch.Tensor] = []

    def _parameters(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def snapshot_due(self) -> bool:
        """True if step t just taken is a snapshot: t >= max(swa_start, 1) and (t - swa_start) % freq == 0."""
        return snapshot_due(self.steps_taken, self.swa_start, self.swa_frequency)

    @torch.no_grad()
    def update_average(self) -> None:
        """Add the current weights to the running mean (also usable by hand, e.g. once per epoch)."""
        params = [p.detach() for p in self._parameters()]
        if not self._average:
            self._average = [p.clone() for p in params]
        else:
            _SWA_UPDATE(self._average, params, self.num_averaged)
        self.num_averaged += 1

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one base step, then a snapshot if one is due; return the base step's loss."""
        loss = self.base_optimizer.step(closure)
        self.steps_taken += 1
        if self.snapshot_due():
            self.update_average()
        return loss

    def averaged_parameters(self) -> list[torch.Tensor]:
        """The running mean of the snapshots, one tensor per parameter (in group order).

        Raises:
            SolverError: if no snapshot has been taken yet.
        """
        if not self._average:
            raise SolverError(
                "no SWA snapshot yet: the first is taken at step max(swa_start, 1) = "
                f"{max(self.swa_start, 1)}; {self.steps_taken} steps were taken."
            )
        return [t.clone() for t in self._average]

    @torch.no_grad()
    def swap_weights(self) -> None:
        """Exchange the model's weights with the SWA average (call again to swap back)."""
        average = self.averaged_parameters()
        for p, mean, stored in zip(self._parameters(), average, self._average, strict=True):
            stored.copy_(p.detach())
            p.copy_(mean)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)
