"""Building the parts of a :class:`~flatminima.curvature.hessian.HessianOperator` from its sources.

A Hessian operator is a weighted sum of scalar loss closures over a dict of named tensors (one per data
batch for a model, streamed: :class:`StreamedTerms` re-reads the batches at every iteration), the point,
the names that are variables, and optional closed forms. This module turns models and objectives into
those parts and validates parameter dicts. A model's batches may be one rank's shard of the dataset
(:mod:`._distributed`): the weights n_b / N then use the N of every rank's shards, and the operator sums
its rank-local results over the process group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_same_dtype_device, check_tensor
from flatminima.curvature import _arch, _distributed, taylor
from flatminima.curvature._model import ModelSource, resolve_mode
from flatminima.curvature._types import LossClosure, Params
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError


def check_params(params: Mapping[str, torch.Tensor]) -> Params:
    """Return detached copies of the references in ``params`` after checking names, dtypes, devices.

    Raises:
        InputTypeError: if ``params`` is not a mapping of string names to floating tensors.
        InputDataError: if it is empty or mixes dtypes or devices.
    """
    if not isinstance(params, Mapping):
        raise InputTypeError(f"params must be a mapping from names to tensors; got {type(params).__name__}.")
    if not params:
        raise InputDataError("params must hold at least one tensor; got an empty mapping.")
    point = {}
    for name, tensor in params.items():
        if not isinstance(name, str):
            raise InputTypeError(f"parameter names must be strings; got {name!r}.")
        check_tensor(f"params[{name!r}]", tensor, finite=False)
        point[name] = tensor.detach()
    check_same_dtype_device(**point)
    return point


def model_parts(
    model: nn.Module,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    batches: Iterable[Any],
    *,
    mode: str | None,
    generator: torch.Generator | None,
    vectorize: bool,
    ad_mode: str = "reverse",
    process_group: Any = None,
) -> dict[str, Any]:
    """The parts of the Hessian of the example-weighted dataset loss of ``model``, its data streamed.

    One pass over ``batches`` validates and counts them (:meth:`ModelSource.scan`); on the first batch
    one Hessian-vector product in ``ad_mode`` checks that the model can be differentiated twice, and
    names the layer that cannot (:func:`._arch.diagnose`). The terms re-read the data at every pass.
    Under a process group (:func:`._distributed.resolve_group`), ``batches`` is this rank's shard: N is
    summed over the ranks and Taylor-mode forms are used only if every rank's batches allow them.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    resolved = resolve_mode(model, mode)
    named = dict(model.named_parameters())
    variables = tuple(name for name, p in named.items() if p.requires_grad)
    if not variables:
        raise InputDataError(
            "no parameter of the model requires grad, so there is no Hessian to measure; "
            "call requires_grad_(True) on the parameters to measure."
        )
    point = check_params(named)
    group = _distributed.resolve_group(process_group)
    source = ModelSource(model, loss_fn, batches, mode=resolved, generator=generator)
    kind = taylor.loss_kind(loss_fn)
    taylor_ready = kind is not None and taylor.supports(source.model, loss_fn, resolved)
    for index, inputs, targets, outputs in source.scan(point):
        shape = outputs.shape if isinstance(outputs, torch.Tensor) else None
        taylor_ready = taylor_ready and taylor.batches_supported(kind or "", shape, inputs, targets)
        if index == 0:
            loss = source.batch_loss(index, inputs, targets)

            def failure(error: BaseException, inputs: Any = inputs) -> ConfigurationError:
                return _arch.diagnose(
                    source.model, lambda: source.forward_on(point, 0, inputs), ad_mode, error
                )

            _arch.probe(loss, point, variables, ad_mode, failure)
    if group is not None:
        total, (taylor_ready,) = _distributed.combine_shards(
            source.num_examples, point, (taylor_ready,), group
        )
        source.num_examples = total
        source.weights = [size / total for size in source.batches.sizes]
    return {
        "terms": StreamedTerms(source),
        "point": point,
        "variables": variables,
        "names": variables,
        "closed_hvp": None,
        "closed_grad": None,
        "closed_quadratic_forms": _taylor_quadratic_forms(source, point) if taylor_ready else None,
        "source": source,
        "vectorize": vectorize,
        "process_group": group,
    }


class StreamedTerms:
    """The terms (n_b / N, params -> L_b(params)) of a model's dataset loss, re-read at every iteration."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source

    def __iter__(self) -> Iterator[tuple[float, LossClosure]]:
        return self.source.terms()

    def __len__(self) -> int:
        return len(self.source.weights)


def objective_parts(
    objective: Any,
    params: Iterable[torch.Tensor],
    *,
    names: Iterable[str] | None,
    hvp: str,
    vectorize: bool,
) -> dict[str, Any]:
    """The parts of the Hessian of an objective over a tuple of tensors (see ``from_objective``)."""
    if not callable(getattr(objective, "value", None)):
        raise InputTypeError(f"objective must have a value(params) method; got {type(objective).__name__}.")
    if hvp not in ("auto", "autograd", "closed_form"):
        raise ConfigurationError(f"hvp must be 'auto', 'autograd' or 'closed_form'; got hvp={hvp!r}.")
    tensors = tuple(params)
    keys = _objective_names(objective, names, len(tensors))
    point = check_params(dict(zip(keys, tensors, strict=True)))

    def as_tuple(p: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(p[key] for key in keys)

    value_fn = objective.value_function() if callable(getattr(objective, "value_function", None)) else None
    pure = value_fn if value_fn is not None else objective.value
    curvature = (
        objective.curvature_model(as_tuple(point))
        if callable(getattr(objective, "curvature_model", None))
        else pure
    )
    has_hvp = callable(getattr(objective, "hvp", None))
    if hvp == "closed_form" and not has_hvp:
        raise ConfigurationError(
            f"hvp='closed_form' needs an objective with an hvp(params, direction) method; "
            f"{type(objective).__name__} has none. Use hvp='autograd'."
        )
    use_closed = hvp == "closed_form" or (hvp == "auto" and has_hvp and (value_fn is None or not vectorize))
    closed_hvp = closed_grad = None
    if use_closed:

        def closed_hvp(direction: Params) -> Params:
            return dict(zip(keys, objective.hvp(as_tuple(point), as_tuple(direction)), strict=True))

    if callable(getattr(objective, "grad", None)):

        def closed_grad(p: Params) -> Params:
            return dict(zip(keys, objective.grad(as_tuple(p)), strict=True))

    closed_quadratic_forms = None
    if callable(getattr(objective, "hessian_quadratic_forms", None)):

        def closed_quadratic_forms(directions: Params) -> torch.Tensor:
            return objective.hessian_quadratic_forms(as_tuple(point), as_tuple(directions))

    weights = getattr(objective, "block_weights", None)
    block_weights = None
    if isinstance(weights, tuple | list) and len(weights) == len(keys):
        block_weights = {key: float(w) for key, w in zip(keys, weights, strict=True)}
    return {
        "terms": ((1.0, lambda p: objective.value(as_tuple(p))),),
        "hessian_terms": ((1.0, lambda p: curvature(as_tuple(p))),),
        "point": point,
        "variables": keys,
        "names": keys,
        "closed_hvp": closed_hvp,
        "closed_grad": closed_grad,
        "closed_quadratic_forms": closed_quadratic_forms,
        "source": None,
        "vectorize": vectorize,
        "block_weights": block_weights,
    }


def _objective_names(objective: Any, names: Iterable[str] | None, count: int) -> tuple[str, ...]:
    if names is not None:
        keys = tuple(names)
    else:
        declared = getattr(objective, "names", None)
        if isinstance(declared, tuple | list) and len(declared) == count:
            keys = tuple(declared)
        else:
            keys = tuple(map(str, range(count)))
    if len(keys) != count or len(set(keys)) != len(keys) or not all(isinstance(k, str) for k in keys):
        raise InputDataError(f"names must give one distinct string per parameter ({count}); got {keys!r}.")
    return keys


def _taylor_quadratic_forms(source: ModelSource, point: Params) -> Callable[[Params], torch.Tensor]:
    """Directions -> v^T H v of the dataset loss by Taylor mode (:mod:`.taylor`), streamed over the data."""
    model, kind = source.model, taylor.loss_kind(source.loss_fn) or ""

    def quadratic_forms(directions: Params) -> torch.Tensor:
        first = next(iter(directions.values()))
        total = first.new_zeros(first.shape[0])
        for index, inputs, targets in source.batches.stream():
            forms = taylor.quadratic_forms(model, kind, point, directions, inputs, targets)
            total = total + source.weights[index] * forms
        return total

    return quadratic_forms
