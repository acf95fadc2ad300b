"""AutogradObjective: value, gradient, HVP and Hessian traces of any loss by ``torch.func``.

It is the reference the closed forms are tested against, and the fallback for losses without one.
"""

from __future__ import annotations

import contextlib
import math
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.func import grad, hessian, jvp

from flatminima.errors import InputDataError, InputTypeError
from flatminima.objectives.base import Objective, Params, ValueFunction, check_params


@contextlib.contextmanager
def _forward_ad_quietly() -> Iterator[None]:
    """Silence the DeprecationWarning torch emits when forward-mode AD first loads its decompositions.

    torch 2.13 scripts its jvp decompositions with ``torch.jit.script`` on first use and warns that
    ``torch.jit.script`` is deprecated; the warning concerns torch internals, not the caller.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        yield


#: builds, from a base point, the function whose Hessian at that point defines the curvature.
CurvatureModel = Callable[[Params], ValueFunction]


@typing.final
class AutogradObjective(Objective):
    r"""An objective whose derivatives come from ``torch.func`` applied to a pure loss function.

    * ``grad``: ``torch.func.grad``;
    * ``hvp``: forward-over-reverse, ``torch.func.jvp`` of ``torch.func.grad`` (one pass, exact);
    * ``hessian_trace``, ``block_traces``, ``scaled_trace``: the diagonal of the **dense** Hessian
      ``torch.func.hessian`` of the loss as a function of all n parameter entries. This costs O(n)
      gradient evaluations and O(n^2) memory: it is meant for small problems (tests use n <= ~100),
      not for production sizes, where the closed forms or a Hutchinson estimate should be used.

    The scaled trace is sum_p w_p tr_p(H) with the per-block weights ``block_weights``; the default
    averages each block's diagonal over its rows (w_p = 1/shape_p[0], 1 for 0-dim blocks), which is the
    convention of Ding et al. (2024) for (L, R), (U1, U2) and (v_1, ..., v_k).

    Args:
        value_fn: the loss, a pure function of a parameter tuple returning a 0-dim tensor. It must be
            compatible with ``torch.func`` (no data-dependent Python control flow, no ``.item()``).
        shapes: the shape of each parameter.
        names: the parameters' names for messages (default ``p0, p1, ...``).
        block_weights: the scaled-trace weight of each block (default 1/rows).
        curvature_model: optional; given the base point, returns the function whose Hessian at that
            point defines ``hvp`` and the traces (for C^1 losses such as robust PCA). By default the
            loss itself.
        dtype, device: when given, parameters must have them (otherwise they need only agree with
            each other; :attr:`dtype` and :attr:`device` then report the default dtype and the CPU).

    Raises:
        InputTypeError: if ``value_fn`` is not callable.
        InputDataError: if the lengths of ``names`` or ``block_weights`` differ from that of ``shapes``.

    Example:
        >>> ref = AutogradObjective(lambda p: (p[0] ** 4).sum(), shapes=[(3,)], names=["x"])
        >>> x = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
        >>> float(ref.hessian_trace((x,)))  # 12 (1 + 4 + 0)
        60.0

    References:
        F. Dangel et al. curvlinops: linear operators for curvature matrices in PyTorch (its tests
        compare against dense torch.func Hessians in the same way).
    """

    def __init__(
        self,
        value_fn: ValueFunction,
        *,
        shapes: Sequence[Sequence[int]],
        names: Sequence[str] | None = None,
        block_weights: Sequence[float] | None = None,
        curvature_model: CurvatureModel | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not callable(value_fn):
            raise InputTypeError(f"value_fn must be callable; got {type(value_fn).__name__}.")
        shapes = [tuple(int(s) for s in shape) for shape in shapes]
        if not shapes:
            raise InputDataError("shapes must list at least one parameter shape; got none.")
        names = [f"p{i}" for i in range(len(shapes))] if names is None else list(names)
        if block_weights is None:
            block_weights = [1.0 / shape[0] if shape and shape[0] > 0 else 1.0 for shape in shapes]
        for label, items in (("names", names), ("block_weights", block_weights)):
            if len(items) != len(shapes):
                raise InputDataError(
                    f"{label} must have one entry per parameter ({len(shapes)}); got {len(items)}."
                )
        self._value_fn = value_fn
        self._model = curvature_model
        self._fixed = (dtype, None if device is None else torch.device(device))
        super().__init__(
            names=names,
            shapes=shapes,
            block_weights=block_weights,
            dtype=dtype if dtype is not None else torch.get_default_dtype(),
            device=torch.device("cpu") if device is None else torch.device(device),
        )

    @classmethod
    def from_objective(cls, objective: Objective) -> AutogradObjective:
        """Return the autograd reference of a closed-form objective, comparable method by method.

        It differentiates ``objective.value_function()`` (the same loss, without validation) with the
        same names, shapes, block weights, dtype and device, and the objective's curvature model.
        """
        if not isinstance(objective, Objective):
            raise InputTypeError(f"objective must be a flatminima Objective; got {type(objective).__name__}.")
        return cls(
            objective.value_function(),
            shapes=objective.shapes,
            names=objective.names,
            block_weights=objective.block_weights,
            curvature_model=objective.curvature_model,
            dtype=objective.dtype,
            device=objective.device,
        )

    def check_params(self, params: typing.Any, *, label: str = "params") -> Params:
        """Validate ``params`` (shapes, one dtype and device, finite entries) and return a tuple."""
        dtype, device = self._fixed
        return check_params(
            params, names=self.names, shapes=self.shapes, dtype=dtype, device=device, label=label
        )

    # ---- dense Hessian ----------------------------------------------------------------------------
    def hessian_matrix(self, params: Params) -> torch.Tensor:
        """Return the dense (n, n) Hessian of the curvature model at ``params``. Small problems only.

        Rows and columns follow the order of ``torch.cat([p.reshape(-1) for p in params])``.
        """
        params = self.check_params(params)
        return self._hessian(params)

    def _hessian(self, params: Params) -> torch.Tensor:
        model = self._model_at(params)
        sizes = [math.prod(shape) for shape in self.shapes]

        def flat_model(theta: torch.Tensor) -> torch.Tensor:
            pieces = theta.split(sizes)
            return model(tuple(p.reshape(s) for p, s in zip(pieces, self.shapes, strict=True)))

        theta = torch.cat([p.reshape(-1) for p in params])
        with _forward_ad_quietly():
            return typing.cast(torch.Tensor, hessian(flat_model)(theta))

    def _model_at(self, params: Params) -> ValueFunction:
        if self._model is None:
            return self._value_fn
        return self._model(params)

    # ---- hooks ------------------------------------------------------------------------------------
    def _value(self, params: Params) -> torch.Tensor:
        return self._value_fn(params)

    def _grad(self, params: Params) -> Params:
        return typing.cast(Params, tuple(grad(self._value_fn)(params)))

    def _hvp(self, params: Params, direction: Params) -> Params:
        model = self._model_at(params)
        with _forward_ad_quietly():
            tangent = jvp(grad(model), (params,), (direction,))[1]
        return typing.cast(Params, tuple(tangent))

    def _block_traces(self, params: Params) -> Params:
        diagonal = self._hessian(params).diagonal()
        sizes = [math.prod(shape) for shape in self.shapes]
        return tuple(piece.sum() for piece in diagonal.split(sizes))

    def _curvature_model(self, params: Params) -> ValueFunction:
        return self._model_at(params)
