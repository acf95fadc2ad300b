r"""Sharpness-aware minimization (SAM) and adaptive SAM as a wrapper around any ``torch.optim`` optimizer.

SAM (Foret et al. 2021) minimizes max_{||eps||_2 <= rho} L(w + eps). Its first-order inner solution is

    eps(w) = rho g / ||g||_2,  g = grad L(w)  (one global 2-norm over all parameter tensors),

and the update hands the base optimizer the gradient at the perturbed point, grad L(w + eps(w)).
Adaptive SAM (ASAM, Kwon et al. 2021) maximizes over the ball ||T_w^{-1} eps||_2 <= rho with the
element-wise scale T_w = |w| + eta, so that the neighbourhood follows the weights' scale:

    eps(w) = rho T_w^2 g / ||T_w g||_2.

Both maps are homogeneous of degree 0 in g, so they are invariant to a loss scale (mixed precision).

**Pitfalls handled here** (see ``prior-art.md``): the perturbed forward pass does not update BatchNorm
running statistics (pass ``model=``); under a ``GradScaler`` gradients are unscaled exactly once (the
perturbation never unscales, ``scaler.step`` unscales the perturbed-point gradients); the wrapper shares
its ``param_groups`` with the base optimizer, so a learning-rate scheduler attached to either one
changes the same learning rates, and ``step`` is the call that moves the weights either way.

References:
    P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur. Sharpness-aware minimization for efficiently
    improving generalization. ICLR 2021.
    J. Kwon, J. Kim, H. Park, I. K. Choi. ASAM: adaptive sharpness-aware minimization for
    scale-invariant learning of deep neural networks. ICML 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

from flatminima._checks import check_real
from flatminima.errors import InputDataError, InputTypeError, SolverError


def sam_perturbation(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    *,
    rho: float,
    adaptive: bool = False,
    eta: float = 0.01,
) -> list[torch.Tensor]:
    r"""Return the SAM (or ASAM) ascent step eps for each parameter.

    Plain: eps = rho g / ||g||_2. Adaptive: eps = rho T^2 g / ||T g||_2 with T = |w| + eta element-wise.
    The norms run over all tensors together. A missing gradient counts as zero. When the norm is zero or
    not finite (e.g. an overflowed, still-scaled mixed-precision gradient), eps = 0 for every tensor.

    Args:
        params: the weights w.
        grads: the gradients g at w (entries may be None).
        rho: the radius, >= 0.
        adaptive: ASAM instead of SAM.
        eta: the ASAM offset in T = |w| + eta, >= 0 (ignored when not adaptive).

    Returns:
        One tensor per parameter, shaped and typed like it.

    Raises:
        InputDataError: if rho or eta is negative, or the sequences differ in length.

    Example:
        >>> w, g = torch.zeros(2), torch.tensor([3.0, 4.0])
        >>> sam_perturbation([w], [g], rho=1.0)[0]
        tensor([0.6000, 0.8000])
    """
    rho = check_real("rho", rho, low=0.0)
    eta = check_real("eta", eta, low=0.0)
    if len(params) != len(grads):
        raise InputDataError(
            f"params and grads must have one entry each; got {len(params)} and {len(grads)}."
        )
    dense = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads, strict=True)]
    scales = [p.detach().abs() + eta for p in params] if adaptive else None
    scaled = dense if scales is None else [t * g for t, g in zip(scales, dense, strict=True)]
    if not scaled:
        return []
    # norms in the tensors' own precision (half precision is accumulated in float32)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(_widen(s)) for s in scaled]))
    norm_value = float(norm)
    if norm_value == 0.0 or not math.isfinite(norm_value):
        return [torch.zeros_like(p) for p in params]
    if scales is None:
        return [(rho / norm_value) * g for g in dense]
    return [(rho / norm_value) * t * t * g for t, g in zip(scales, dense, strict=True)]


def _widen(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself in float32/float64; float32 for lower precisions (float16, bfloat16)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _tracking_norm_layers(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Modules that update running statistics in training mode (BatchNorm*, InstanceNorm with tracking)."""
    for module in model.modules():
        if (
            getattr(module, "track_running_stats", False)
            and getattr(module, "running_mean", None) is not None
        ):
            yield module


class SAM(torch.optim.Optimizer):
    r"""Sharpness-aware minimization around a base optimizer; ``adaptive=True`` gives ASAM.

    One SAM update: g = grad L_B(w); eps = rho g/||g|| (ASAM: rho T^2 g/||T g||, T = |w| + eta);
    w <- w + eps; g_SAM = grad L_B(w + eps); restore w; base optimizer step with g_SAM.

    Three ways to drive it:

    * closure: ``sam.step(closure)``, where ``closure`` clears the gradients, computes the loss on the
      *same* minibatch and calls ``backward`` (it is called twice);
    * two calls: ``sam.zero_grad(); loss.backward(); sam.first_step(zero_grad=True);
      loss_fn().backward(); sam.second_step(zero_grad=True)``;
    * mixed precision with a ``GradScaler``: ``sam.zero_grad(); scaler.scale(loss).backward();
      sam.first_step(zero_grad=True)`` (do **not** unscale first: eps is invariant to the scale);
      ``scaler.scale(loss2).backward(); sam.restore(); scaler.step(sam); scaler.update()``.
      ``scaler.step`` unscales the perturbed-point gradients once and skips the step on inf/NaN, after
      ``restore`` so the weights are never left perturbed. (Calling ``scaler.unscale_(sam)`` before
      ``first_step`` would make ``scaler.step`` skip unscaling the second gradients.)

    BatchNorm: pass ``model=`` and the layers of ``model`` that track running statistics stop tracking
    between ``first_step`` and ``restore``/``second_step``, so the perturbed forward pass uses batch
    statistics (as in training) but leaves ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` unchanged.

    The wrapper shares ``param_groups`` with ``base_optimizer``: schedulers may be attached to either.
    Checkpoint ``base_optimizer.state_dict()`` (the wrapper keeps only the transient perturbation).

    Args:
        base_optimizer: a constructed ``torch.optim.Optimizer`` (SGD with momentum, AdamW, ...).
        rho: the neighbourhood radius, >= 0 (0 recovers the base optimizer). Typical: 0.05 (SAM), 0.5 (ASAM).
        adaptive: ASAM instead of SAM.
        eta: the ASAM offset, >= 0.
        model: the module whose normalization layers must not update their statistics in the
            perturbed pass (optional).

    Raises:
        InputTypeError: if ``base_optimizer`` is not a ``torch.optim.Optimizer`` or ``model`` not a Module.
        InputDataError: if rho or eta is negative.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
        >>> def closure():
        ...     sam.zero_grad()
        ...     loss = (w**2).sum()
        ...     loss.backward()
        ...     return loss
        >>> float(sam.step(closure).detach())
        5.0

    References:
        Foret et al. (ICLR 2021); Kwon et al. (ICML 2021).
    """

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.01,
        model: torch.nn.Module | None = None,
    ) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise InputTypeError(
                "base_optimizer must be a constructed torch.optim.Optimizer (e.g. torch.optim.SGD(params, "
                f"lr=0.1)); got {type(base_optimizer).__name__}."
            )
        if model is not None and not isinstance(model, torch.nn.Module):
            raise InputTypeError(f"model must be a torch.nn.Module or None; got {type(model).__name__}.")
        rho = check_real("rho", rho, low=0.0)
        eta = check_real("eta", eta, low=0.0)
        super().__init__(base_optimizer.param_groups, {"rho": rho, "adaptive": bool(adaptive), "eta": eta})
        self.base_optimizer = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.model = model
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._frozen: list[torch.nn.Module] = []

    @property
    def perturbed(self) -> bool:
        """True between ``first_step`` and ``restore`` / ``second_step`` / ``step``."""
        return self._saved is not None

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move the weights to w + eps(w) using the gradients currently in ``.grad``.

        Raises:
            SolverError: if the weights are already perturbed (a missing ``second_step``/``restore``).
        """
        if self._saved is not None:
            raise SolverError(
                "first_step was called twice without second_step/restore; the weights are still perturbed."
            )
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            steps = sam_perturbation(
                params,
                [p.grad for p in params],
                rho=group["rho"],
                adaptive=group["adaptive"],
                eta=group["eta"],
            )
            for p, e in zip(params, steps, strict=True):
                saved.append((p, p.detach().clone()))
                p.add_(e)
        self._saved = saved
        if self.model is not None:
            self._frozen = list(_tracking_norm_layers(self.model))
            for module in self._frozen:
                setattr(module, "track_running_stats", False)  # noqa: B010
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by ``first_step`` (exactly) and re-enable statistics tracking.

        The gradients are kept. Does nothing when the weights are not perturbed.
        """
        if self._saved is not None:
            for p, original in self._saved:
                p.copy_(original)
            self._saved = None
        for module in self._frozen:
            setattr(module, "track_running_stats", True)  # noqa: B010
        self._frozen = []

    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w and take the base optimizer's step with the perturbed-point gradients."""
        self.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        """Without closure: restore w (if perturbed) and take the base step. With closure: a full SAM update.

        Args:
            closure: clears gradients, evaluates the loss on one minibatch and calls ``backward``.

        Returns:
            The loss of the first closure call at w (None without closure).
        """
        if closure is None:
            self.restore()
            self.base_optimizer.step()
            return None
        with torch.enable_grad():
            loss = closure()
        self.first_step(zero_grad=True)
        try:
            with torch.enable_grad():
                closure()
        finally:
            self.restore()
        self.base_optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (those of the shared parameter groups)."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)
