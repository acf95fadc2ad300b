r"""Entropy-SGD (Chaudhari et al. 2017) as a ``torch.optim`` optimizer for any model.

Entropy-SGD ascends the local entropy F(x; gamma) = log int exp(-f(x') - (gamma/2)||x - x'||^2) dx', whose
gradient is -gamma (x - <x'>) with <x'> the mean of the Gibbs density proportional to
exp(-f(x') - (gamma/2)||x - x'||^2). One outer step (Algorithm 1 of the paper):

1. x' <- x, mu <- x;
2. for l = 1..L (SGLD on the coupled loss f(x') + (gamma/2)||x - x'||^2):
   dx' = grad f_B(x') - gamma (x - x');
   x' <- x' - eta' dx' + sqrt(2 eta') eps xi,  xi ~ N(0, I);
   mu <- (1 - alpha) mu + alpha x';
3. x <- x - eta gamma (x - mu);
4. gamma scoping: gamma_t = min(gamma0 (1 + gamma1)^t, gamma_max), t = number of outer steps taken.

**Conventions (stated because published versions differ).** The moving average follows the paper:
mu <- (1 - alpha) mu + alpha x', alpha = 0.75 by default (weight alpha on the *new* sample). The
authors' reference code writes mu <- beta mu + (1 - beta) x' with beta = 0.75, i.e. alpha = 0.25 here.
The Langevin noise has standard deviation sqrt(2 eta') eps per inner step, as in the reference code (the
Euler discretization at temperature eps^2); the outer step is scaled by gamma as in the paper
(x - eta gamma (x - mu)); the reference code's default omits the gamma factor.

References:
    P. Chaudhari, A. Choromanska, S. Soatto, Y. LeCun, C. Baldassi, C. Borgs, J. Chayes, L. Sagun,
    R. Zecchina. Entropy-SGD: biasing gradient descent into wide valleys. ICLR 2017
    (J. Stat. Mech. 2019, 124018).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import InputDataError
from flatminima.optim._random import require_generator, standard_normal_like


def check_entropy_hyperparameters(
    *,
    step_size: Any,
    inner_step_size: Any,
    inner_steps: Any,
    gamma: Any,
    scoping: Any,
    gamma_max: Any,
    thermal_noise: Any,
    averaging: Any,
    step_names: tuple[str, str] = ("step_size", "inner_step_size"),
) -> dict[str, Any]:
    """Validate the Entropy-SGD hyperparameters and return them as a dict (floats/ints).

    ``step_names`` are the argument names of the two steps in messages (``("lr", "inner_lr")`` for the
    optimizer).
    """
    outer, inner = step_names
    values: dict[str, Any] = {
        "step_size": check_real(outer, step_size, low=0.0, low_open=True),
        "inner_step_size": check_real(inner, inner_step_size, low=0.0, low_open=True),
        "inner_steps": check_int_in_range("inner_steps", inner_steps, low=1),
        "gamma": check_real("gamma", gamma, low=0.0, low_open=True),
        "scoping": check_real("scoping", scoping, low=0.0),
        "thermal_noise": check_real("thermal_noise", thermal_noise, low=0.0),
        "averaging": check_real("averaging", averaging, low=0.0, high=1.0, low_open=True),
    }
    if isinstance(gamma_max, float) and math.isinf(gamma_max) and gamma_max > 0:
        values["gamma_max"] = math.inf
    else:
        values["gamma_max"] = check_real("gamma_max", gamma_max, low=0.0, low_open=True)
    if values["gamma_max"] < values["gamma"]:
        raise InputDataError(
            f"gamma_max must be >= gamma = {values['gamma']}; got gamma_max={values['gamma_max']}."
        )
    return values


def scoped_gamma(gamma: float, scoping: float, gamma_max: float, outer_step: int) -> float:
    """gamma_t = min(gamma0 (1 + gamma1)^t, gamma_max) (no overflow for large t; 0 when gamma0 = 0)."""
    if gamma == 0.0:
        return 0.0
    log_value = math.log(gamma) + outer_step * math.log1p(scoping)
    return gamma_max if log_value >= math.log(gamma_max) else math.exp(log_value)


class EntropySGD(torch.optim.Optimizer):
    r"""Entropy-SGD: an SGLD inner loop estimates the local-entropy gradient, the outer loop follows it.

    ``step(closure)`` performs one outer step; the closure must clear gradients, draw a **fresh**
    minibatch, compute the loss at the current weights and call ``backward`` (it is called
    ``inner_steps`` times, at the inner iterates x'). See the module docstring for the algorithm and the
    moving-average convention (mu <- (1 - alpha) mu + alpha x').

    Running statistics of normalization layers are updated at the inner iterates x', as in the authors'
    code.

    Args:
        params: parameters or parameter groups.
        generator: the random stream of the Langevin noise (required).
        lr: the outer step eta (> 0).
        inner_lr: the SGLD step eta' (> 0).
        inner_steps: L >= 1 Langevin steps per outer step.
        gamma: the initial scope gamma0 > 0.
        scoping: gamma1 >= 0 in gamma_t = gamma0 (1 + gamma1)^t.
        gamma_max: the cap on gamma_t (default inf).
        thermal_noise: eps >= 0; the Langevin noise has standard deviation sqrt(2 eta') eps.
        averaging: alpha in (0, 1], the weight of the new sample in the moving average.

    Raises:
        InputTypeError: if ``generator`` is missing.
        InputDataError: on out-of-range hyperparameters (e.g. a negative lr or noise).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = EntropySGD([w], generator=torch.Generator().manual_seed(0), lr=1.0, gamma=0.5)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (w**2).sum()
        ...     loss.backward()
        ...     return loss
        >>> _ = opt.step(closure)
        >>> bool(abs(float(w.detach())) < 1.0)
        True

    References:
        Chaudhari et al., Entropy-SGD: biasing gradient descent into wide valleys, ICLR 2017, Algorithm 1.
    """

    def __init__(
        self,
        params: Any,
        *,
        generator: torch.Generator,
        lr: float = 1.0,
        inner_lr: float = 0.1,
        inner_steps: int = 20,
        gamma: float = 0.03,
        scoping: float = 0.0,
        gamma_max: float = math.inf,
        thermal_noise: float = 1e-4,
        averaging: float = 0.75,
    ) -> None:
        self.generator = require_generator("EntropySGD", generator)
        values = check_entropy_hyperparameters(
            step_size=lr,
            inner_step_size=inner_lr,
            inner_steps=inner_steps,
            gamma=gamma,
            scoping=scoping,
            gamma_max=gamma_max,
            thermal_noise=thermal_noise,
            averaging=averaging,
            step_names=("lr", "inner_lr"),
        )
        defaults = {
            "lr": values["step_size"],
            "inner_lr": values["inner_step_size"],
            "inner_steps": values["inner_steps"],
            "gamma": values["gamma"],
            "scoping": values["scoping"],
            "gamma_max": values["gamma_max"],
            "thermal_noise": values["thermal_noise"],
            "averaging": values["averaging"],
            "outer_steps": 0,
        }
        super().__init__(params, defaults)

    @property
    def outer_steps(self) -> int:
        """The number of outer steps taken (kept in the parameter groups, so it is checkpointed)."""
        return int(self.param_groups[0]["outer_steps"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its scoping continues from the global outer-step count t, not from 0."""
        if self.param_groups and "outer_steps" not in param_group:
            param_group["outer_steps"] = self.outer_steps
        super().add_param_group(param_group)

    def current_gamma(self, group: dict[str, Any]) -> float:
        """The scope gamma_t of ``group`` for the next outer step."""
        return scoped_gamma(group["gamma"], group["scoping"], group["gamma_max"], int(group["outer_steps"]))

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """Take one outer step; return the loss of the first inner closure call (at x' = x).

        If the closure raises (or the run is interrupted) during the inner loop, the weights are put back
        to x before the exception propagates, and the step is not counted.

        Raises:
            InputDataError: if ``closure`` is None (the inner loop needs fresh gradients).
        """
        if closure is None:
            raise InputDataError(
                "EntropySGD.step needs a closure that recomputes the loss and its gradients; "
                "got closure=None."
            )
        groups = self.param_groups
        anchors = [[p.detach().clone() for p in g["params"]] for g in groups]
        means = [[p.detach().clone() for p in g["params"]] for g in groups]
        gammas = [self.current_gamma(g) for g in groups]
        num_inner = max(g["inner_steps"] for g in groups)
        try:
            first_loss = self._inner_loop(closure, num_inner, anchors, means, gammas)
        except BaseException:
            with torch.no_grad():
                for group, anchor in zip(groups, anchors, strict=True):
                    for p, x in zip(group["params"], anchor, strict=True):
                        p.copy_(x)
            raise
        with torch.no_grad():
            for group, anchor, mean, gamma in zip(groups, anchors, means, gammas, strict=True):
                for p, x, mu in zip(group["params"], anchor, mean, strict=True):
                    p.copy_(x - group["lr"] * gamma * (x - mu))
        for group in groups:
            group["outer_steps"] += 1
        return first_loss

    def _inner_loop(
        self,
        closure: Callable[[], torch.Tensor],
        num_inner: int,
        anchors: list[list[torch.Tensor]],
        means: list[list[torch.Tensor]],
        gammas: list[float],
    ) -> torch.Tensor:
        """The SGLD iterations x' and the moving averages mu (in place); the loss of the first call."""
        first_loss: torch.Tensor | None = None
        for inner in range(num_inner):
            with torch.enable_grad():
                loss = closure()
            if first_loss is None:
                first_loss = loss
            with torch.no_grad():
                for group, anchor, mean, gamma in zip(self.param_groups, anchors, means, gammas, strict=True):
                    if inner >= group["inner_steps"]:
                        continue
                    lr_in, alpha, noise = group["inner_lr"], group["averaging"], group["thermal_noise"]
                    for p, x, mu in zip(group["params"], anchor, mean, strict=True):
                        grad = torch.zeros_like(p) if p.grad is None else p.grad
                        direction = grad - gamma * (x - p)
                        p.add_(direction, alpha=-lr_in)
                        if noise > 0:
                            xi = standard_normal_like(p, generator=self.generator)
                            p.add_(xi, alpha=math.sqrt(2 * lr_in) * noise)
                        mu.mul_(1.0 - alpha).add_(p, alpha=alpha)
        return first_loss if first_loss is not None else torch.zeros(())
