r"""Sharpness-aware minimization (SAM) and adaptive SAM as a wrapper around any ``torch.optim`` optimizer.

SAM (Foret et al. 2021) minimizes max_{||eps||_2 <= rho} L(w + eps). Its first-order inner solution is

    eps(w) = rho g / ||g||_2,  g = grad L(w)  (one global 2-norm over all parameter tensors),

and the update hands the base optimizer the gradient at the perturbed point, grad L(w + eps(w)).
Adaptive SAM (ASAM, Kwon et al. 2021) maximizes over the ball ||T_w^{-1} eps||_2 <= rho with the
element-wise scale T_w = |w| + eta, so that the neighbourhood follows the weights' scale:

    eps(w) = rho T_w^2 g / ||T_w g||_2  (again one global norm, of the scaled gradient T_w g).

The norm is global across the parameter groups of the optimizer too (e.g. weight-decay and no-decay
groups): splitting it per group would give every group its own radius rho and change the algorithm.
Both maps are homogeneous of degree 0 in g, so they are invariant to a loss scale (mixed precision).

**Pitfalls handled here** (those of common SAM implementations): by default the perturbed forward
pass leaves the running
statistics of normalization layers (BatchNorm, InstanceNorm with tracking, ...) exactly as they were
after the pass at w; under a ``GradScaler`` gradients are unscaled exactly once (the perturbation never
unscales, ``scaler.step`` unscales the perturbed-point gradients); the wrapper shares its
``param_groups`` with the base optimizer, so a learning-rate scheduler attached to either one changes the
same learning rates, and ``step`` is the call that moves the weights either way; ``step()`` without a
closure and without a preceding ``first_step`` is an error, not a silent plain base step.

References:
    P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur. Sharpness-aware minimization for efficiently
    improving generalization. ICLR 2021.
    J. Kwon, J. Kim, H. Park, I. K. Choi. ASAM: adaptive sharpness-aware minimization for
    scale-invariant learning of deep neural networks. ICML 2021.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from flatminima._checks import check_real
from flatminima.errors import InputDataError, InputTypeError, SolverError

# one block of tensors sharing (rho, adaptive, eta): a parameter group, or all of sam_perturbation's input
_Block = tuple[Sequence[torch.Tensor], Sequence[torch.Tensor | None], float, bool, float]


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
    return _block_perturbations([(params, grads, rho, bool(adaptive), eta)])[0]


def _block_perturbations(blocks: Sequence[_Block]) -> list[list[torch.Tensor]]:
    r"""eps_p = rho_b T_p^2 g_p / N for every tensor p of every block b, with ONE norm N over all blocks.

    T_p = |w_p| + eta_b in an adaptive block and T_p = 1 otherwise; N = ||(T_p g_p)_p||_2 over every
    tensor of every block. eps = 0 everywhere when N is zero or not finite.
    """
    dense = [
        [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads, strict=True)]
        for params, grads, _, _, _ in blocks
    ]
    scales = [
        [p.detach().abs() + eta for p in params] if adaptive else None
        for params, _, _, adaptive, eta in blocks
    ]
    # norms in the tensors' own precision (half precision is accumulated in float32)
    norms = [
        torch.linalg.vector_norm(_widen(g if ts is None else t * g))
        for gs, ts in zip(dense, scales, strict=True)
        for t, g in zip(ts if ts is not None else gs, gs, strict=True)
    ]
    if not norms:
        return [[] for _ in blocks]
    dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
    device = norms[0].device
    norm = torch.linalg.vector_norm(torch.stack([n.to(device=device, dtype=dtype) for n in norms]))
    norm_value = float(norm)
    if norm_value == 0.0 or not math.isfinite(norm_value):
        return [[torch.zeros_like(p) for p in params] for params, _, _, _, _ in blocks]
    out: list[list[torch.Tensor]] = []
    for (_, _, rho, _, _), gs, ts in zip(blocks, dense, scales, strict=True):
        factor = rho / norm_value
        if ts is None:
            out.append([factor * g for g in gs])
        else:
            out.append([factor * t * t * g for t, g in zip(ts, gs, strict=True)])
    return out


def _widen(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself in float32/float64; float32 for lower precisions (float16, bfloat16)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _has_running_stats(module: torch.nn.Module) -> bool:
    """True for layers that keep running statistics (BatchNorm*, SyncBatchNorm, tracking InstanceNorm)."""
    return any(
        isinstance(getattr(module, name, None), torch.Tensor) for name in ("running_mean", "running_var")
    )


class SAM(torch.optim.Optimizer):
    r"""Sharpness-aware minimization around a base optimizer; ``adaptive=True`` gives ASAM.

    One SAM update: g = grad L_B(w); eps = rho g/||g|| (ASAM: rho T^2 g/||T g||, T = |w| + eta);
    w <- w + eps; g_SAM = grad L_B(w + eps); restore w; base optimizer step with g_SAM.

    **What is global, what is per group.** The norm ||g|| (ASAM: ||T g||) is one 2-norm over every
    parameter of every parameter group, as in Foret et al. and Kwon et al. Each group may set its own
    ``rho``, ``adaptive`` and ``eta`` (keys of the group dict, defaulting to the constructor's values):
    group b then moves by eps_p = rho_b T_p^2 g_p / N, with T_p = |w_p| + eta_b in an adaptive group,
    T_p = 1 otherwise, and N = ||(T_p g_p)_p||_2 over all groups. With equal settings in every group
    (the usual case, e.g. weight-decay and no-decay groups) this is exactly SAM / ASAM.

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

    ``step()`` without a closure is the second half of an update: it raises unless ``first_step`` was
    called since the last base step (a plain base step there would silently not be SAM).

    **Running statistics** (BatchNorm, SyncBatchNorm, InstanceNorm with ``track_running_stats``). By
    default (``freeze_running_stats=True``) the perturbed forward pass still normalizes with batch
    statistics, as in training, but ``restore``/``second_step``/``step`` put back every running buffer
    (``running_mean``, ``running_var``, ``num_batches_tracked``) exactly as it was at ``first_step``: after
    one SAM update they equal those after one forward pass at w. The layers are found as follows:

    * ``model=`` given: every layer of ``model`` with running statistics (no hooks; use this under
      ``torch.compile``);
    * ``model=None``: every layer with running statistics whose forward runs between ``first_step`` and
      ``restore`` (a global module forward pre-hook, installed only during that window; it sees any
      module called in that window, of any model, in any thread).

    ``freeze_running_stats=False`` opts out: the perturbed pass updates the statistics a second time.

    The wrapper shares ``param_groups`` with ``base_optimizer``: schedulers may be attached to either.
    Checkpoint ``base_optimizer.state_dict()`` (the wrapper keeps only the transient perturbation).

    Args:
        base_optimizer: a constructed ``torch.optim.Optimizer`` (SGD with momentum, AdamW, ...).
        rho: the neighbourhood radius, >= 0 (0 recovers the base optimizer). Typical: 0.05 (SAM), 0.5 (ASAM).
        adaptive: ASAM instead of SAM.
        eta: the ASAM offset, >= 0.
        model: the module whose running statistics the perturbed pass must not change (optional, see
            above).
        freeze_running_stats: keep the running statistics of the perturbed pass out (default True).

    Raises:
        InputTypeError: if ``base_optimizer`` is not a ``torch.optim.Optimizer``, ``model`` not a Module or
            ``freeze_running_stats`` not a bool.
        InputDataError: if rho or eta is negative, or ``model`` is given with
            ``freeze_running_stats=False``.

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
        freeze_running_stats: bool = True,
    ) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise InputTypeError(
                "base_optimizer must be a constructed torch.optim.Optimizer (e.g. torch.optim.SGD(params, "
                f"lr=0.1)); got {type(base_optimizer).__name__}."
            )
        if model is not None and not isinstance(model, torch.nn.Module):
            raise InputTypeError(f"model must be a torch.nn.Module or None; got {type(model).__name__}.")
        if not isinstance(freeze_running_stats, bool):
            raise InputTypeError(
                f"freeze_running_stats must be a bool; got {type(freeze_running_stats).__name__}."
            )
        if model is not None and not freeze_running_stats:
            raise InputDataError(
                "model names the layers whose running statistics to freeze and needs freeze_running_stats="
                f"True; got freeze_running_stats=False with model={type(model).__name__}."
            )
        rho = check_real("rho", rho, low=0.0)
        eta = check_real("eta", eta, low=0.0)
        super().__init__(base_optimizer.param_groups, {"rho": rho, "adaptive": bool(adaptive), "eta": eta})
        self.base_optimizer = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.model = model
        self.freeze_running_stats = freeze_running_stats
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._awaiting_step = False  # first_step taken, base step not yet
        self._stats: dict[int, tuple[torch.nn.Module, list[tuple[str, torch.Tensor]]]] = {}
        self._hook: RemovableHandle | None = None

    @property
    def perturbed(self) -> bool:
        """True between ``first_step`` and ``restore`` / ``second_step`` / ``step``."""
        return self._saved is not None

    def _group_block(self, index: int, group: dict[str, Any]) -> _Block:
        params = [p for p in group["params"] if p.grad is not None]
        rho = check_real(f"param_groups[{index}]['rho']", group.get("rho", self.defaults["rho"]), low=0.0)
        eta = check_real(f"param_groups[{index}]['eta']", group.get("eta", self.defaults["eta"]), low=0.0)
        adaptive = bool(group.get("adaptive", self.defaults["adaptive"]))
        return params, [p.grad for p in params], rho, adaptive, eta

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move the weights to w + eps(w) using the gradients currently in ``.grad`` (one global norm).

        Raises:
            SolverError: if the weights are already perturbed (a missing ``second_step``/``restore``).
            InputDataError: if a parameter group carries a negative ``rho`` or ``eta``.
        """
        if self._saved is not None:
            raise SolverError(
                "first_step was called twice without second_step/restore; the weights are still perturbed."
            )
        blocks = [self._group_block(i, group) for i, group in enumerate(self.param_groups)]
        steps = _block_perturbations(blocks)
        moves = [
            (p, e)
            for (params, *_), eps in zip(blocks, steps, strict=True)
            for p, e in zip(params, eps, strict=True)
        ]
        # saved before any weight moves, so that restore() undoes even an interrupted first_step
        self._saved = [(p, p.detach().clone()) for p, _ in moves]
        self._awaiting_step = True
        if self.freeze_running_stats:
            if self.model is not None:
                for module in filter(_has_running_stats, self.model.modules()):
                    self._save_stats(module)
            else:
                self._hook = torch.nn.modules.module.register_module_forward_pre_hook(
                    _snapshot_hook(weakref.ref(self))
                )
        for p, e in moves:
            p.add_(e)
        if zero_grad:
            self.zero_grad()

    def _save_stats(self, module: torch.nn.Module) -> None:
        """Remember ``module``'s own buffers (once per perturbed window)."""
        if id(module) in self._stats:
            return
        buffers = [
            (name, buf.detach().clone())
            for name, buf in module.named_buffers(recurse=False)
            if not torch.nn.parameter.is_lazy(buf)
        ]
        self._stats[id(module)] = (module, buffers)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by ``first_step`` and the running statistics (both exactly).

        The gradients are kept. Does nothing when the weights are not perturbed.
        """
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._saved is not None:
            for p, original in self._saved:
                p.copy_(original)
            self._saved = None
        for module, buffers in self._stats.values():
            for name, value in buffers:
                current = getattr(module, name, None)
                if isinstance(current, torch.Tensor) and current.shape == value.shape:
                    current.copy_(value)
        self._stats = {}

    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w and take the base optimizer's step with the perturbed-point gradients.

        Raises:
            SolverError: if ``first_step`` was not called since the last base step.
        """
        self.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        """Without closure: restore w (if perturbed) and take the base step. With closure: a full SAM update.

        Args:
            closure: clears gradients, evaluates the loss on one minibatch and calls ``backward``.

        Returns:
            The loss of the first closure call at w (None without closure).

        Raises:
            SolverError: without a closure, if ``first_step`` was not called since the last base step;
                with a closure, if the weights are already perturbed by ``first_step``.
        """
        if closure is None:
            if not self._awaiting_step:
                raise SolverError(
                    "SAM.step() without a closure finishes an update started by first_step(), and none is "
                    "pending; call step(closure), or first_step() then second_step(); got closure=None."
                )
            self.restore()
            self.base_optimizer.step()
            self._awaiting_step = False
            return None
        if self._saved is not None:
            raise SolverError(
                "SAM.step(closure) runs a whole update, but first_step() already perturbed the weights; "
                "call second_step() (or restore()) instead; got a closure while perturbed."
            )
        with torch.enable_grad():
            loss = closure()
        try:
            self.first_step(zero_grad=True)
            with torch.enable_grad():
                closure()
        except BaseException:
            self._awaiting_step = False
            raise
        finally:
            self.restore()
        self.base_optimizer.step()
        self._awaiting_step = False
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (those of the shared parameter groups)."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)


def _snapshot_hook(ref: weakref.ReferenceType[SAM]) -> Callable[[torch.nn.Module, Any], None]:
    """A forward pre-hook saving the running statistics of each layer before its perturbed-pass forward.

    It holds the optimizer weakly and does nothing once that is gone or no longer perturbed.
    """

    def hook(module: torch.nn.Module, args: Any) -> None:
        sam = ref()
        if sam is not None and sam.perturbed and _has_running_stats(module):
            sam._save_stats(module)

    return hook
