"""The Hessian of any PyTorch loss as a matrix-free linear operator over (a group of) its parameters.

H = grad^2 L(w) at the point w, applied to vectors by automatic differentiation of the gradient: by
default reverse over reverse, H v = (d grad L(w))^T v (``torch.func.vjp`` of ``torch.func.grad``, exact
because H is symmetric), or forward over reverse, H v = d/dt grad L(w + t v) |_{t=0} (``torch.func.jvp``
of ``torch.func.grad``); the b Hessian-vector products of a block share one gradient pass and go
through ``torch.func.vmap`` in chunks, except where the network's activations are large (on CPU, e.g.
convolutional networks): there reverse mode loops over the block on one autograd graph of the
gradient, one double backward per vector (:mod:`._autograd_products`). Three sources:

* a loss closure ``loss(params) -> scalar`` over a dict of named tensors (:class:`HessianOperator`);
* a model, a loss function and a dataset, averaged exactly over every example, in an explicit train or
  eval mode (:meth:`HessianOperator.from_model`); the data is streamed, one batch at a time, at every
  product (a list or a ``torch.utils.data.DataLoader``), and may be sharded over ``torch.distributed``
  ranks, whose results are summed (:mod:`._distributed`);
* an objective of :mod:`flatminima.objectives` or anything with ``value(params)`` and optionally a
  closed-form ``hvp(params, direction)`` over a tuple of tensors (:meth:`HessianOperator.from_objective`).

:meth:`HessianOperator.select` restricts the operator to a parameter group (the diagonal block
H_gg of the Hessian, other parameters held fixed), so every measure can be reported per layer or per
factor. Vectors are flat: the selected parameters, each flattened, concatenated in parameter order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from flatminima.curvature import _autograd_products
from flatminima.curvature._distributed import all_reduce_sum
from flatminima.curvature._layout import LayoutOperator, ParameterLayout
from flatminima.curvature._model import ModelSource
from flatminima.curvature._sources import check_params, model_parts, objective_parts
from flatminima.curvature._types import LossClosure, Params
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

GroupLevel = str


def _check_ad_mode(ad_mode: str) -> None:
    if ad_mode not in ("reverse", "forward"):
        raise ConfigurationError(f"ad_mode must be 'reverse' or 'forward'; got ad_mode={ad_mode!r}.")


class HessianOperator(LayoutOperator):
    """The Hessian of ``loss`` at ``params`` (optionally restricted to a parameter group).

    Args:
        loss: a function of a dict of named tensors returning a scalar (0-dim) tensor.
        params: the point w, a mapping from names to floating tensors of one dtype and device; every
            tensor is a variable (use :meth:`select` to restrict).
        vectorize: apply blocks of vectors with ``torch.func.vmap`` where it pays (fall back to a loop
            when False).
        ad_mode: how Hessian-vector products are differentiated: "reverse" (default; reverse over
            reverse, H v = vjp of the gradient, using the symmetry of H) or "forward" (forward over
            reverse, jvp of the gradient). Both are exact; on torch 2.13 (CPU) forward mode copies
            large constant matrices of the loss (e.g. a sensing operator) at every call, which made it
            2-3x slower in benchmarks/bench_curvature.py.

    Raises:
        InputTypeError: if ``loss`` is not callable or a parameter is not a floating tensor.
        InputDataError: if ``params`` is empty, mixes dtypes/devices, or ``loss`` is not a finite scalar.

    Example:
        >>> w = {"x": torch.tensor([1.0, 2.0], dtype=torch.float64)}
        >>> H = HessianOperator(lambda p: (p["x"] ** 2).sum() + p["x"].prod(), w)
        >>> H.dense()
        tensor([[2., 1.],
                [1., 2.]], dtype=torch.float64)
    """

    def __init__(
        self,
        loss: LossClosure,
        params: Mapping[str, torch.Tensor],
        *,
        vectorize: bool = True,
        ad_mode: str = "reverse",
    ) -> None:
        if not callable(loss):
            raise InputTypeError(f"loss must be callable; got {type(loss).__name__}.")
        point = check_params(params)
        self._setup(
            terms=((1.0, loss),),
            point=point,
            variables=tuple(point),
            names=tuple(point),
            closed_hvp=None,
            closed_grad=None,
            source=None,
            vectorize=vectorize,
            ad_mode=ad_mode,
        )
        self._check_loss()

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
        batches: Iterable[Any],
        *,
        mode: str | None = None,
        generator: torch.Generator | None = None,
        vectorize: bool = True,
        ad_mode: str = "reverse",
        process_group: Any = None,
    ) -> HessianOperator:
        """The Hessian of the dataset loss (1/N) sum_i loss(model(x_i), y_i) over trainable parameters.

        Args:
            model: the network; it is deep-copied and never modified.
            loss_fn: ``loss_fn(outputs, targets)`` averaging over its batch (``reduction="mean"``).
            batches: a re-iterable of (inputs, targets) pairs covering the dataset (a list, a
                ``DataLoader``, anything whose ``__iter__`` returns a fresh iterator; not a one-shot
                generator), never stored: every loss, gradient and product streams over it, one batch
                at a time (:mod:`._data`). The batch losses are weighted by batch size, so the total
                is the mean over all examples; every pass must give the same batch sizes.
            mode: "train" or "eval". In train mode BatchNorm uses batch statistics (the result then
                depends on the batching) and running statistics are never updated; each ``nn.Dropout``
                uses one fixed mask per batch, drawn from a seed hashed from (a seed drawn from
                ``generator``, the batch index, the layer), so every pass sees the same masks; other
                random layers are rejected. If None, eval mode, with a :class:`CurvatureWarning` when
                the model has BatchNorm or dropout.
            generator: draws the dropout masks' seed (required for mode="train" with dropout).
            vectorize: see the class.
            ad_mode: see the class.
            process_group: None (the default), ``"local"`` or a ``torch.distributed.ProcessGroup``.
                When a group of several processes applies (None: the default group if
                ``torch.distributed`` is initialized), ``batches`` is this rank's shard, N is summed
                over the ranks, and every loss, gradient, product and quadratic form is the dataset's,
                all-reduced, on every rank; the ranks must make the same calls with identically seeded
                probe generators (:mod:`._distributed`). ``"local"`` measures this process's data alone.

        Attention runs on ``scaled_dot_product_attention``'s MATH backend in every curvature pass
        (:mod:`._arch`: the fused kernels have no second derivative); the model is untouched.

        Raises:
            InputTypeError: if ``model`` is not an ``nn.Module``, ``batches`` is not re-iterable, or
                ``process_group`` is not None, "local" or a ProcessGroup.
            InputDataError: naming the batch, if it is malformed (see :func:`._data.check_batch`), or
                the model or ``loss_fn`` fails on it; if no parameter requires grad; or if the ranks'
                model parameters differ.
            ConfigurationError: if ``mode`` is not "train", "eval" or None, ``loss_fn`` does not
                average over its batch (e.g. ``reduction="sum"``), or a layer cannot be measured
                (named: random in train mode, or not twice differentiable on the first batch).

        Example:
            >>> g = torch.Generator().manual_seed(0)
            >>> net = torch.nn.Linear(3, 1).double()
            >>> x = torch.randn(8, 3, generator=g, dtype=torch.float64)
            >>> y = torch.zeros(8, 1, dtype=torch.float64)
            >>> H = HessianOperator.from_model(net, torch.nn.functional.mse_loss, [(x, y)], mode="eval")
            >>> H.size
            4
        """
        _check_ad_mode(ad_mode)
        parts = model_parts(
            model,
            loss_fn,
            batches,
            mode=mode,
            generator=generator,
            vectorize=vectorize,
            ad_mode=ad_mode,
            process_group=process_group,
        )
        return cls._create(**parts, ad_mode=ad_mode)  # the data pass of model_parts checked the loss

    @classmethod
    def from_objective(
        cls,
        objective: Any,
        params: Iterable[torch.Tensor],
        *,
        names: Iterable[str] | None = None,
        hvp: str = "auto",
        vectorize: bool = True,
        ad_mode: str = "reverse",
    ) -> HessianOperator:
        """The Hessian of an objective over a tuple of parameter tensors (e.g. the factors (L, R)).

        Works with the objectives of :mod:`flatminima.objectives` and, by duck typing, with anything
        that has ``value(params)`` returning a scalar. Optional attributes are used when present:
        ``names`` (parameter names, e.g. ("L", "R")), ``block_weights`` (the scaled-trace weights),
        ``value_function()`` (an unchecked pure loss, safe in ``torch.func``), ``curvature_model(params)``
        (the C^2 function whose Hessian the objective reports, e.g. the local model of robust PCA),
        ``hvp(params, direction)`` and ``grad(params)`` (closed forms), ``hessian_quadratic_forms(params,
        directions)`` (v^T H v for a batch of directions, used by :meth:`quadratic_forms` and hence by
        Hutchinson; e.g. one data pass per direction for least-squares objectives). Groups are selected
        by index (``select(0)`` is the first factor) or by name.

        Args:
            objective: the objective.
            params: the point, a sequence of floating tensors.
            names: parameter names; default ``objective.names``, else "0", "1", ...
            hvp: "autograd" (forward-over-reverse on the curvature model, vmapped over vectors),
                "closed_form" (``objective.hvp``; vmapped when it allows, else one vector at a
                time), or "auto": autograd when the objective offers ``value_function`` (closed-form
                HVPs with input validation cannot be vmapped), else closed form if present.
            vectorize: see the class.
            ad_mode: see the class.

        Raises:
            InputTypeError: if ``objective`` has no callable ``value``.
            InputDataError: on bad names or parameters, as the class.
            ConfigurationError: if ``hvp`` is unknown or "closed_form" without ``objective.hvp``.

        Example:
            >>> class Quadratic:
            ...     def value(self, params):
            ...         (x,) = params
            ...         return 1.5 * (x**2).sum()
            >>> H = HessianOperator.from_objective(Quadratic(), (torch.ones(2, dtype=torch.float64),))
            >>> H.dense()
            tensor([[3., 0.],
                    [0., 3.]], dtype=torch.float64)
        """
        operator = cls._create(
            **objective_parts(objective, params, names=names, hvp=hvp, vectorize=vectorize),
            ad_mode=ad_mode,
        )
        operator._check_loss()
        return operator

    @classmethod
    def _create(cls, **parts: Any) -> HessianOperator:
        operator = cls.__new__(cls)
        operator._setup(**parts)
        return operator

    def _setup(
        self,
        *,
        terms: Iterable[tuple[float, LossClosure]],
        hessian_terms: Iterable[tuple[float, LossClosure]] | None = None,
        block_weights: dict[str, float] | None = None,
        point: Params,
        variables: tuple[str, ...],
        names: tuple[str, ...],
        closed_hvp: Callable[[Params], Params] | None,
        closed_grad: Callable[[Params], Params] | None,
        closed_quadratic_forms: Callable[[Params], torch.Tensor] | None = None,
        source: ModelSource | None,
        vectorize: bool,
        ad_mode: str = "reverse",
        process_group: Any = None,
    ) -> None:
        _check_ad_mode(ad_mode)
        #: the resolved torch.distributed group whose ranks' results are summed, or None.
        self.process_group = process_group
        self._terms = terms
        self._hessian_terms = hessian_terms if hessian_terms is not None else terms
        self._block_weights = block_weights
        self._layout = ParameterLayout(point, variables, names)
        self._closed_hvp = closed_hvp
        self._closed_grad = closed_grad
        self._closed_quadratic_forms = closed_quadratic_forms
        self.source = source
        self.vectorize = bool(vectorize)
        self.ad_mode = ad_mode
        self._probe_chunk: int | None = None  # probes per vmapped call, from the first product
        first = point[names[0]]
        self._dtype, self._device = first.dtype, first.device

    def _parts(self) -> dict[str, Any]:
        return {
            "terms": self._terms,
            "hessian_terms": self._hessian_terms,
            "block_weights": self._block_weights,
            "point": self._layout.point,
            "variables": self._layout.variables,
            "names": self.names,
            "closed_hvp": self._closed_hvp,
            "closed_grad": self._closed_grad,
            "closed_quadratic_forms": self._closed_quadratic_forms,
            "source": self.source,
            "vectorize": self.vectorize,
            "ad_mode": self.ad_mode,
            "process_group": self.process_group,
        }

    def _check_loss(self) -> None:
        for _, loss in self._terms:
            value = loss(dict(self._layout.point))
            if not isinstance(value, torch.Tensor) or value.ndim != 0:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise InputDataError(
                    f"loss must return a scalar (0-dim) tensor; got {shape}. Reduce it, e.g. with "
                    ".mean() or .sum()."
                )
            if not bool(torch.isfinite(value)):
                raise InputDataError(f"loss must be finite at the given parameters; got {float(value)}.")

    # ---- structure (names, shapes, size, dtype, device, point, unflatten: LayoutOperator) -----------
    def parameters(self) -> Params:
        """All parameters at the point (selected or not), by name; the tensors are detached."""
        return dict(self._layout.point)

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate the selected entries of ``params`` into a flat (n,) vector."""
        return self._layout.flatten(params)

    # ---- parameter groups ------------------------------------------------------------------------
    def select(self, *selectors: str | int) -> HessianOperator:
        """The operator restricted to the parameters matching any selector (others held fixed).

        Args:
            selectors: parameter names, glob patterns (``"layers.0.*"``) or integer positions in
                :attr:`parameter_names` (``0`` is the first factor of an objective).

        Raises:
            InputDataError: if no selector is given, a selector matches nothing, or an index is out
                of range; the message lists the parameter names.
        """
        return self._create(**{**self._parts(), "names": self._layout.selection(selectors)})

    def groups(self, level: GroupLevel = "parameter") -> dict[str, tuple[str, ...]]:
        """Parameter groups of the current selection.

        Args:
            level: "parameter" (one group per tensor) or "module" (parameters sharing the prefix
                before their last ".", e.g. one group per layer).
        """
        return self._layout.groups(level)

    def block_scale(self, block_weights: Mapping[str, float] | None = None) -> torch.Tensor:
        """The diagonal scale s with s_i^2 = weight of the block holding coordinate i, shape (n,).

        The default weight of a block of shape (rows, ...) is 1 / rows (or the objective's
        ``block_weights``): for the factors L (d1 x k) and R (d2 x k) of Ding et al. this gives the
        scaled trace tr(S H S) = tr H_LL / d1 + tr H_RR / d2.

        Raises:
            InputDataError: if a weight is negative or names an unselected parameter.
        """
        return self._layout.block_scale(self._block_weights or {}, block_weights or {})

    # ---- the loss ----------------------------------------------------------------------------------
    def value(self) -> torch.Tensor:
        """The loss at the point (a 0-dim tensor)."""
        return self.value_at(self.point)

    def value_at(self, x: torch.Tensor) -> torch.Tensor:
        """The loss with the selected parameters set to the flat vector ``x`` (others at the point)."""
        self._check_vectors("x", x, ndim=1)
        params = self._layout.with_selected(self._layout.unflatten(x))
        with torch.no_grad():
            total = sum(
                (weight * loss(params) for weight, loss in self._terms),
                torch.zeros((), dtype=self.dtype, device=self.device),
            )
        return all_reduce_sum(total, self.process_group)

    def value_and_grad_at(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and its gradient with respect to the selected parameters, at the flat vector ``x``."""
        self._check_vectors("x", x, ndim=1)
        selected = self._layout.unflatten(x)
        if self._closed_grad is not None:
            full = self._layout.with_selected(selected)
            return self.value_at(x), self.flatten(self._closed_grad(full))
        value = torch.zeros((), dtype=self.dtype, device=self.device)
        grad = torch.zeros_like(x)
        place = self._layout.with_selected
        for weight, loss in self._terms:
            g, v = torch.func.grad_and_value(lambda s, loss=loss: loss(place(s)))(selected)
            value = value + weight * v.detach()
            grad = grad + weight * self.flatten(g).detach()
        if self.process_group is None:
            return value, grad
        total = all_reduce_sum(torch.cat([value[None], grad]), self.process_group)  # one collective
        return total[0], total[1:]

    # ---- Hessian-vector products -----------------------------------------------------------------
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            # torch scripts its forward-AD decompositions on first use and warns that
            # torch.jit.script is deprecated; that concerns torch internals, not the caller.
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
            )
            return self._matmat_quietly(V)

    def _matmat_quietly(self, V: torch.Tensor) -> torch.Tensor:
        batch = int(V.shape[1])
        tangents = self._layout.unflatten(V.mT)
        if self._closed_hvp is not None:
            out = self._apply_batched(self._closed_single, tangents, batch)
        else:
            out = {name: torch.zeros_like(t) for name, t in tangents.items()}
            for weight, loss in self._hessian_terms:
                part = self._autograd_block(loss, tangents, batch)
                out = {name: out[name] + weight * part[name] for name in self.names}
        return all_reduce_sum(self._layout.flatten_batched(out, batch).mT.detach(), self.process_group)

    def _autograd_block(self, loss: LossClosure, tangents: Params, batch: int) -> Params:
        """H V of one loss term for a block of tangents (leading dimension ``batch``), by autograd.

        All products of the block share one gradient graph: vmapped over chunks of probes, or looped
        on one plain-autograd graph when the intermediates are large or ``vectorize`` is False
        (:mod:`._autograd_products`).
        """
        if self._probe_chunk is None:  # measured once, on the first product
            self._probe_chunk = _autograd_products.probes_per_call(loss, self._layout, self.device)
        chunk = max(1, min(batch, self._probe_chunk))
        if self.ad_mode == "reverse" and (chunk == 1 or not self.vectorize):
            return _autograd_products.reverse_loop(loss, self._layout, tangents, batch)
        single = _autograd_products.single_product(loss, self._layout, self.ad_mode)
        return self._apply_batched(single, tangents, batch, chunk)

    def _quadratic_forms(self, V: torch.Tensor) -> torch.Tensor:
        if self._closed_quadratic_forms is None:
            return super()._quadratic_forms(V)
        full = self._layout.all_variables(self._layout.unflatten(V.mT), lead=(int(V.shape[1]),))
        return all_reduce_sum(self._closed_quadratic_forms(full).detach(), self.process_group)

    def _closed_single(self, tangent: Params) -> Params:
        out = self._closed_hvp(self._layout.all_variables(tangent))  # type: ignore[misc]
        return {name: out[name] for name in self.names}

    def _apply_batched(
        self, single: Callable[[Params], Params], tangents: Params, batch: int, chunk: int | None = None
    ) -> Params:
        if batch == 1:  # one vector: no vmap overhead
            out = single({name: t[0] for name, t in tangents.items()})
            return {name: out[name].unsqueeze(0) for name in self.names}
        if self.vectorize:
            try:
                size = chunk if chunk is not None and chunk < batch else None
                return torch.func.vmap(single, chunk_size=size)(tangents)
            except RuntimeError:
                if self._closed_hvp is None:
                    raise
                # A closed-form hvp that validates its inputs cannot run under vmap: loop instead.
                self.vectorize = False
        columns = [single({name: t[j] for name, t in tangents.items()}) for j in range(batch)]
        return {name: torch.stack([c[name] for c in columns]) for name in self.names}
