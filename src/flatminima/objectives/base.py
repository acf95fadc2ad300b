"""The objective protocol: value, gradient, Hessian-vector product and exact (scaled) Hessian trace.

An objective is a loss over a parameter tuple (``(L, R)``, ``(U1, U2)``, ``(W_1, ..., W_N)``,
``(v_1, ..., v_k)``). Every public method validates the tuple (length, types, shapes, one dtype and
device matching the objective's, finite entries) and then calls the unchecked implementation.

**Hessian trace and scaled trace.** Write ``H`` for the Hessian of the loss with respect to all parameter
entries. The block trace of parameter ``p`` is the sum of the diagonal entries of ``H`` that belong to
``p``; the Hessian trace is the sum of the block traces, and the scaled trace (Ding et al. 2024, Section 1)
is the weighted sum ``str = sum_p w_p tr_p(H)`` with the weights :attr:`Objective.block_weights`. For
the bilinear model, ``w_L = 1/d1`` and ``w_R = 1/d2`` (each block's diagonal averaged over its rows).

**Curvature model.** For a C^2 loss the curvature at a point is the Hessian of the loss itself. The
robust PCA loss is only C^1; its curvature is, by definition, the Hessian of a local C^2 model centred at
the point (Ding et al. 2024, Section 6). :meth:`Objective.curvature_model` returns the function whose
Hessian at ``params`` defines ``hvp``, ``hessian_trace`` and ``scaled_trace``; the autograd reference
(:class:`~flatminima.objectives.AutogradObjective`) differentiates exactly that function.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024. arXiv:2203.03756.
"""

from __future__ import annotations

import abc
import typing
from collections.abc import Callable, Sequence
from typing import Any

import torch

from flatminima._checks import all_finite, check_generator, check_real
from flatminima.errors import InputDataError, InputTypeError
from flatminima.operators import MeasurementOperator
from flatminima.problems import Instance

#: a parameter tuple such as (L, R).
Params = tuple[torch.Tensor, ...]
#: a pure loss function of a parameter tuple (no validation; safe inside torch.func transforms).
ValueFunction = Callable[[Params], torch.Tensor]


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_params(
    params: Any,
    *,
    names: Sequence[str],
    shapes: Sequence[Sequence[int]],
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    label: str = "params",
    finite: bool = True,
) -> Params:
    """Validate a parameter tuple and return it as a tuple.

    Args:
        params: the parameters, a tuple (or list) of tensors.
        names: the mathematical name of each entry (``("L", "R")``), used in messages.
        shapes: the required shape of each entry.
        dtype: the required dtype; ``None`` requires only that all entries share the first one's.
        device: the required device; ``None`` requires only that all entries share the first one's.
        label: how the tuple is called in messages (``"params"`` or ``"direction"``).
        finite: whether NaN and inf entries are rejected.

    Returns:
        The parameters as a tuple.

    Raises:
        InputTypeError: if ``params`` is not a tuple or list, or an entry is not a floating tensor.
        InputDataError: on a wrong length, shape, dtype or device, or a non-finite entry; the message
            names the entry, e.g. ``params[0] (L) must have shape (20, 5); got (20, 4).``
    """
    count = len(names)
    listing = ", ".join(names)
    if isinstance(params, torch.Tensor) or not isinstance(params, tuple | list):
        raise InputTypeError(
            f"{label} must be a tuple of {count} tensors ({listing}); got {type(params).__name__}."
        )
    if len(params) != count:
        raise InputDataError(f"{label} must have {count} entries ({listing}); got {len(params)}.")
    for index, (value, name, shape) in enumerate(zip(params, names, shapes, strict=True)):
        where = f"{label}[{index}] ({name})"
        if not isinstance(value, torch.Tensor):
            raise InputTypeError(f"{where} must be a torch.Tensor; got {type(value).__name__}.")
        if not value.is_floating_point():
            raise InputTypeError(f"{where} must have a floating dtype; got {value.dtype}.")
        if tuple(value.shape) != tuple(shape):
            raise InputDataError(
                f"{where} must have shape {_shape_text(shape)}; got {_shape_text(value.shape)}."
            )
    want_dtype = dtype if dtype is not None else params[0].dtype
    want_device = device if device is not None else params[0].device
    first = f"{label}[0] ({names[0]})"
    dtype_owner = "the objective" if dtype is not None else first
    device_owner = "the objective" if device is not None else first
    for index, (value, name) in enumerate(zip(params, names, strict=True)):
        where = f"{label}[{index}] ({name})"
        if value.dtype != want_dtype:
            raise InputDataError(
                f"{where} must have the dtype of {dtype_owner}, {want_dtype}; got {value.dtype}. Convert the "
                "parameters or move the instance with instance.to(dtype=...)."
            )
        if value.device != want_device:
            raise InputDataError(
                f"{where} must be on the device of {device_owner}, {want_device}; got {value.device}."
            )
    if finite:
        for index, (value, name) in enumerate(zip(params, names, strict=True)):
            # A finite sum proves every entry finite (NaN and inf propagate); an overflowing sum of
            # finite entries falls back to the entrywise check.
            if not (bool(torch.isfinite(value.sum())) or all_finite(value)):
                raise InputDataError(f"{label}[{index}] ({name}) must have finite entries; got NaN or inf.")
    return tuple(params)


def check_instance(instance: Any) -> Instance:
    """Return ``instance`` if it is a :class:`~flatminima.problems.Instance`; raise otherwise."""
    if not isinstance(instance, Instance):
        raise InputTypeError(
            "instance must be a flatminima.problems.Instance (e.g. MatrixSensing(...).sample("
            f"generator=g)); got {type(instance).__name__}."
        )
    return instance


class Objective(abc.ABC):
    """A loss over a tuple of parameter tensors with value, gradient, HVP and exact curvature traces.

    Subclasses set :attr:`names`, :attr:`shapes`, :attr:`block_weights`, :attr:`dtype` and
    :attr:`device` (through ``Objective.__init__``) and implement the unchecked ``_value``, ``_grad``,
    ``_hvp`` and ``_block_traces``.
    """

    def __init__(
        self,
        *,
        names: Sequence[str],
        shapes: Sequence[Sequence[int]],
        block_weights: Sequence[float],
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self._names = tuple(names)
        self._shapes = tuple(tuple(int(s) for s in shape) for shape in shapes)
        self._block_weights = tuple(float(w) for w in block_weights)
        self._dtype = dtype
        self._device = torch.device(device)

    # ---- description ------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """The mathematical names of the parameters, e.g. ``("L", "R")``."""
        return self._names

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of each parameter."""
        return self._shapes

    @property
    def block_weights(self) -> tuple[float, ...]:
        """The weight of each block's Hessian trace in the scaled trace."""
        return self._block_weights

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the parameters must have (that of the instance)."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The device the parameters must be on (that of the instance)."""
        return self._device

    def check_params(self, params: Any, *, label: str = "params") -> Params:
        """Validate ``params`` against this objective (see :func:`check_params`) and return a tuple."""
        return check_params(
            params,
            names=self._names,
            shapes=self._shapes,
            dtype=self._dtype,
            device=self._device,
            label=label,
        )

    def check_directions(self, directions: Any) -> Params:
        """Validate a batch of directions, each entry shaped (b, *shape of that parameter), one b for all.

        The batch size is read off the first entry; everything else is :func:`check_params` with the
        batched shapes, e.g. ``directions[1] (R) must have shape (4, 6, 3); got (2, 6, 3).``
        """
        first = directions[0] if isinstance(directions, tuple | list) and directions else None
        batch = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim > 0 else 1
        return check_params(
            directions,
            names=self._names,
            shapes=[(batch, *shape) for shape in self._shapes],
            dtype=self._dtype,
            device=self._device,
            label="directions",
        )

    def random_params(self, *, generator: torch.Generator, scale: float = 1.0) -> Params:
        """Return parameters with i.i.d. N(0, scale^2) entries, drawn on CPU in float64 then moved.

        Args:
            generator: a CPU ``torch.Generator``.
            scale: the standard deviation of the entries (> 0).

        Returns:
            A parameter tuple with this objective's shapes, dtype and device.
        """
        check_generator("generator", generator)
        scale = check_real("scale", scale, low=0.0, low_open=True)
        return tuple(
            (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(
                dtype=self._dtype, device=self._device
            )
            for shape in self._shapes
        )

    # ---- public methods ---------------------------------------------------------------------------
    def value(self, params: Params) -> torch.Tensor:
        """Return the loss at ``params`` as a 0-dim tensor."""
        return self._value(self.check_params(params))

    def grad(self, params: Params) -> Params:
        """Return the gradient at ``params``, a tuple shaped like ``params``."""
        return self._grad(self.check_params(params))

    def hvp(self, params: Params, direction: Params) -> Params:
        """Return the Hessian-vector product (grad^2 f)(params)[direction], a tuple shaped like ``params``."""
        params = self.check_params(params)
        direction = self.check_params(direction, label="direction")
        return self._hvp(params, direction)

    def block_traces(self, params: Params) -> Params:
        """Return the Hessian trace of each parameter block (0-dim tensors), in parameter order."""
        return self._block_traces(self.check_params(params))

    def hessian_trace(self, params: Params) -> torch.Tensor:
        """Return tr grad^2 f(params), the sum of the block traces, as a 0-dim tensor."""
        return torch.stack(self.block_traces(params)).sum()

    def scaled_trace(self, params: Params) -> torch.Tensor:
        """Return the scaled trace sum_p w_p tr_p(grad^2 f) with w = :attr:`block_weights`."""
        traces = self.block_traces(params)
        return sum(
            (w * t for w, t in zip(self._block_weights, traces, strict=True)),
            start=traces[0].new_zeros(()),
        )

    def value_function(self) -> ValueFunction:
        """Return the loss as a pure function of a parameter tuple, without validation.

        The function is safe inside ``torch.func`` transforms (``grad``, ``jvp``, ``vmap``,
        ``hessian``); it is what :meth:`AutogradObjective.from_objective` differentiates.
        """
        return self._value

    def curvature_model(self, params: Params) -> ValueFunction:
        """Return the function whose Hessian at ``params`` defines ``hvp`` and the traces.

        For C^2 losses this is the loss itself; the robust PCA loss returns its local C^2 model.
        """
        return self._curvature_model(self.check_params(params))

    # ---- implementation hooks ---------------------------------------------------------------------
    @abc.abstractmethod
    def _value(self, params: Params) -> torch.Tensor:
        """The loss, inputs already validated."""

    @abc.abstractmethod
    def _grad(self, params: Params) -> Params:
        """The gradient, inputs already validated."""

    @abc.abstractmethod
    def _hvp(self, params: Params, direction: Params) -> Params:
        """The Hessian-vector product, inputs already validated."""

    @abc.abstractmethod
    def _block_traces(self, params: Params) -> Params:
        """The Hessian trace of each block, inputs already validated."""

    def _curvature_model(self, params: Params) -> ValueFunction:
        return self._value

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {_shape_text(s)}" for n, s in zip(self._names, self._shapes, strict=True))
        return f"{type(self).__name__}({shapes}; dtype={self._dtype}, device={self._device})"


def weighted_square_norm(D_sq: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Return ||D X||_F^2 = tr(X^T D^2 X) given D^2 as a matrix (n, n) or as its diagonal (n,)."""
    if D_sq.ndim == 1:
        return (D_sq.unsqueeze(-1) * X.square()).sum()
    return ((D_sq @ X) * X).sum()


def rescaling_weights(instance: Instance) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (D1^2, D2^2) of the instance's operator: diagonals (vectors) for diagonal kinds.

    For operators with ``diagonal_rescaling`` the squares of ``rescaling_diagonals()`` are returned as
    vectors, so that no d x d matrix is formed; otherwise the cached ``rescaling_squares()`` matrices.
    """
    operator = instance.operator
    if operator.diagonal_rescaling:
        D1, D2 = operator.rescaling_diagonals()
        return D1.square(), D2.square()
    return operator.rescaling_squares()


def forms_dense_apply(operator: MeasurementOperator) -> bool:
    """True when the operator's ``apply_factored`` falls back to forming L R^T (dense kinds)."""
    return type(operator).apply_factored is MeasurementOperator.apply_factored


def forms_dense_adjoint(operator: MeasurementOperator) -> bool:
    """True when the operator's factored adjoint products fall back to forming A^*(y) (dense kinds).

    Such operators (dense, identity) pay one pass over their data per adjoint, so objectives form
    A^*(y) once and reuse it; structured operators (rank-one, masks) keep their factored routines.
    """
    kind = type(operator)
    return (
        kind.adjoint_matmul is MeasurementOperator.adjoint_matmul
        and kind.adjoint_t_matmul is MeasurementOperator.adjoint_t_matmul
    )


class AdjointAction:
    """The matrix G = A^*(y) (d1, d2) as an action on factors: G V, G^T U and P^T G Q^T.

    For dense kinds G is formed once (one pass over the operator's data however many products follow);
    for structured kinds every product goes through the operator's factored routines and G is never
    formed. Use :func:`adjoint_actions` to build several at once (one batched pass for dense kinds).
    """

    def __init__(self, operator: MeasurementOperator, y: torch.Tensor, dense: torch.Tensor | None) -> None:
        self._operator = operator
        self._y = y
        self._dense = dense

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """Return A^*(y) V for V (d2, k)."""
        if self._dense is not None:
            return self._dense @ V
        return self._operator.adjoint_matmul(self._y, V)

    def t_matmul(self, U: torch.Tensor) -> torch.Tensor:
        """Return A^*(y)^T U for U (d1, k)."""
        if self._dense is not None:
            return self._dense.mT @ U
        return self._operator.adjoint_t_matmul(self._y, U)

    def sandwich(self, P: torch.Tensor | None, Q: torch.Tensor | None) -> torch.Tensor:
        """Return P^T A^*(y) Q^T for P (d1, a), Q (b, d2); ``None`` stands for an identity."""
        if P is None and Q is None:
            return self._dense if self._dense is not None else self._operator.adjoint(self._y)
        if P is None:
            return self.matmul(typing.cast(torch.Tensor, Q).mT)
        left = self.t_matmul(P).mT
        return left if Q is None else left @ Q.mT


def adjoint_actions(operator: MeasurementOperator, *ys: torch.Tensor) -> list[AdjointAction]:
    """Return one :class:`AdjointAction` per y (each (m,)); dense kinds form all A^*(y) in one pass."""
    if forms_dense_adjoint(operator):
        dense = operator.adjoint(torch.stack(ys))
        return [AdjointAction(operator, y, G) for y, G in zip(ys, dense, strict=True)]
    return [AdjointAction(operator, y, None) for y in ys]
