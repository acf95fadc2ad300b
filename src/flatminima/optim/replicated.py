r"""Replicated SGD (robust ensembles, Baldassi et al. 2016) as a ``torch.optim`` optimizer for any model.

y replicas w_1, ..., w_y of the weights are coupled elastically to their centre c through the energy of
the robust ensemble,

    H(c, w_1..w_y) = sum_a f(w_a) + (gamma / 2) sum_a ||w_a - c||^2,

whose marginal over the replicas, for large y, is the local entropy that Entropy-SGD ascends
(Chaudhari et al. 2017): minimizing H favours centres surrounded by a dense region of low loss. One step
at coupling gamma_t (each replica on its own fresh minibatch B_a):

1. w_a' = w_a - eta grad f_{B_a}(w_a)  for a = 1..y  (SGD on each replica);
2. the elastic coupling, taken implicitly over the same time step eta (the minimizer over (c, w) of
   (gamma_t / 2) sum_a ||w_a - c||^2 + (1 / (2 eta)) sum_a ||w_a - w_a'||^2):

       c = (1/y) sum_a w_a'  (the elastic mean),   w_a = w_a' + k (c - w_a'),
       k = eta gamma_t / (1 + eta gamma_t).

So the centre stays the replicas' centre of mass and moves by c <- c - eta (1/y) sum_a grad f_{B_a}(w_a): the
gradient averaged over a cloud of replicas around it. The implicit coupling is stable for every gamma
(the explicit step w_a -= eta gamma (w_a - c) diverges once eta gamma > 2, which a growing gamma reaches);
k -> 1 as gamma -> infinity, when the replicas collapse onto the centre and the centre does SGD with y
minibatches per step. With y = 1 (c = w_1) or gamma = 0 (independent replicas) every replica does plain SGD.

**Scoping.** gamma_t = min(gamma_0 (1 + gamma_1)^t, gamma_max), t the number of steps taken (as in
Baldassi et al. and Entropy-SGD's scoping): weak coupling lets the replicas explore early, the growing
coupling pulls them together so that the run ends at one point.

The model's parameters hold the centre c between steps; the replicas live in the optimizer state
(``state[p]["replicas"]``, shape (y, *p.shape), checkpointed by ``state_dict``), created at the first step
from the parameters (plus, if ``spread > 0``, independent N(0, spread^2) offsets with zero mean over the
replicas, so that c is unchanged).

References:
    C. Baldassi, C. Borgs, J. T. Chayes, A. Ingrosso, C. Lucibello, L. Saglietti, R. Zecchina.
    Unreasonable effectiveness of learning neural networks: from accessible states and robust ensembles
    to basic algorithmic schemes. PNAS 113(48), E7655-E7662, 2016.
    P. Chaudhari et al. Entropy-SGD: biasing gradient descent into wide valleys. ICLR 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import InputDataError
from flatminima.optim._random import require_generator, standard_normal_like
from flatminima.optim.entropy_sgd import scoped_gamma


class ReplicatedSGD(torch.optim.Optimizer):
    r"""Replicated SGD: y replicas coupled elastically to their centre, with a growing coupling gamma_t.

    ``step(closure)`` calls the closure once per replica with the parameters set to that replica; the
    closure must clear the gradients, draw a **fresh** minibatch, compute the loss and call ``backward``
    (the protocol of :class:`~flatminima.optim.EntropySGD`). It then updates the replicas and leaves the
    centre c (their mean) in the parameters. See the module docstring for the mathematics.

    Args:
        params: parameters or parameter groups (the centre).
        lr: eta > 0, the step of every replica.
        replicas: y >= 1.
        gamma: gamma_0 >= 0, the initial coupling.
        scoping: gamma_1 >= 0 in gamma_t = gamma_0 (1 + gamma_1)^t.
        gamma_max: the cap on gamma_t (default inf).
        spread: the standard deviation of the replicas' initial offsets from the centre (>= 0; 0: the
            replicas start at the centre and differ through their minibatches).
        generator: the random stream of the initial offsets (required when ``spread > 0`` and y > 1).

    Raises:
        InputDataError: if ``replicas < 1``, a rate is not positive, or gamma, scoping, gamma_max or spread
            is negative (or gamma_max < gamma).
        InputTypeError: if ``spread > 0``, y > 1 and ``generator`` is not a ``torch.Generator``.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
        >>> opt = ReplicatedSGD([w], lr=0.1, replicas=2, gamma=1.0)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (w**2).sum()
        ...     loss.backward()
        ...     return loss
        >>> float(opt.step(closure)), w.detach()  # the loss at the replicas; the centre moved to 0.8 w
        (2.0, tensor([ 0.8000, -0.8000]))

    References:
        Baldassi et al., PNAS 2016 (robust ensembles, replicated SGD); Chaudhari et al., ICLR 2017.
    """

    def __init__(
        self,
        params: Any,
        *,
        lr: float = 0.05,
        replicas: int = 3,
        gamma: float = 0.1,
        scoping: float = 1e-3,
        gamma_max: float = math.inf,
        spread: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.replicas = check_int_in_range("replicas", replicas, low=1)
        self.spread = check_real("spread", spread, low=0.0)
        spread_out = self.spread > 0 and self.replicas > 1
        self.generator = require_generator("ReplicatedSGD with spread > 0", generator) if spread_out else None
        gamma = check_real("gamma", gamma, low=0.0)
        gamma_max = math.inf if gamma_max == math.inf else check_real("gamma_max", gamma_max, low=0.0)
        if gamma_max < gamma:
            raise InputDataError(f"gamma_max must be >= gamma = {gamma}; got gamma_max={gamma_max}.")
        defaults = {
            "lr": check_real("lr", lr, low=0.0, low_open=True),
            "gamma": gamma,
            "scoping": check_real("scoping", scoping, low=0.0),
            "gamma_max": gamma_max,
            "steps": 0,
        }
        super().__init__(params, defaults)

    def current_gamma(self, group: dict[str, Any]) -> float:
        """The coupling gamma_t of ``group`` for its next step."""
        return scoped_gamma(group["gamma"], group["scoping"], group["gamma_max"], int(group["steps"]))

    def _replicas(self, p: torch.Tensor) -> torch.Tensor:
        """The (y, *p.shape) replicas of ``p``, created from the centre at the first use."""
        state = self.state[p]
        if "replicas" not in state:
            stack = p.detach().unsqueeze(0).repeat(self.replicas, *([1] * p.ndim))
            if self.generator is not None:
                offsets = self.spread * standard_normal_like(stack, generator=self.generator)
                stack += offsets - offsets.mean(0, keepdim=True)
            state["replicas"] = stack
        replicas: torch.Tensor = state["replicas"]
        return replicas

    def replica_parameters(self) -> list[list[torch.Tensor]]:
        """The replicas, one list of tensors (one per parameter, in group order) per replica (copies)."""
        params = [p for group in self.param_groups for p in group["params"]]
        stacks = [self._replicas(p) for p in params]
        return [[stack[a].clone() for stack in stacks] for a in range(self.replicas)]

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """Take one step; return the mean over the replicas of the closure's loss.

        If the closure raises, the parameters are put back to the centre before the exception propagates
        and the step is not counted.

        Raises:
            InputDataError: if ``closure`` is None (every replica needs its own gradient).
        """
        if closure is None:
            raise InputDataError(
                "ReplicatedSGD.step needs a closure that recomputes the loss and its gradients at each "
                "replica; got closure=None."
            )
        params = [p for group in self.param_groups for p in group["params"]]
        stacks = [self._replicas(p) for p in params]
        centre = [p.detach().clone() for p in params]
        grads = [torch.zeros_like(stack) for stack in stacks]
        losses = []
        try:
            for a in range(self.replicas):
                with torch.no_grad():
                    for p, stack in zip(params, stacks, strict=True):
                        p.copy_(stack[a])
                with torch.enable_grad():
                    losses.append(closure())
                for p, grad in zip(params, grads, strict=True):
                    if p.grad is not None:
                        grad[a].copy_(p.grad)
        except BaseException:
            with torch.no_grad():
                for p, c in zip(params, centre, strict=True):
                    p.copy_(c)
            raise
        index = 0
        with torch.no_grad():
            for group in self.param_groups:
                lr, gamma = group["lr"], self.current_gamma(group)
                k = lr * gamma / (1.0 + lr * gamma)
                for p in group["params"]:
                    stack = stacks[index]
                    stack.add_(grads[index], alpha=-lr)
                    mean = stack.mean(0)
                    stack.add_(mean.unsqueeze(0) - stack, alpha=k)
                    p.copy_(mean)
                    index += 1
                group["steps"] += 1
        return torch.stack([torch.as_tensor(loss).detach().reshape(()) for loss in losses]).mean()
