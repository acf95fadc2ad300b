"""Architectures under curvature passes: attention kernels, layers that cannot be measured, diagnoses.

A Hessian-vector product differentiates the loss twice (reverse over reverse, H v = d(grad L)^T v, or
forward over reverse, H v = d/dt grad L(w + t v)), so every operation of the forward pass needs a
second derivative. Three kinds of layers need care:

* fused attention: ``scaled_dot_product_attention`` (used by ``nn.MultiheadAttention`` without
  attention weights and by ``nn.TransformerEncoderLayer``) picks flash or memory-efficient kernels
  whose backward has no derivative of its own. Every curvature forward pass runs under
  ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` (:func:`math_attention`), the reference
  implementation written in differentiable operations; the user's model and global settings are
  untouched once the pass returns.
* sparse embedding gradients (``nn.Embedding(sparse=True)``) cannot be differentiated again; the
  measured copy of the model uses dense gradients (:func:`prepare_copy`), which is the same function.
* randomness in train mode other than ``nn.Dropout`` (whose masks are fixed per batch): attention
  dropout and recurrent inter-layer dropout draw new masks at every call, so the loss would change
  between products. :func:`check_train_mode_layers` rejects them by name, and
  :func:`find_random_layer` names any other layer whose output differs between two passes.

When a layer has no second derivative at all (e.g. a custom ``autograd.Function`` without functorch
support, or an operation without forward-mode AD under ``ad_mode="forward"``), :func:`probe` finds it
on the first batch when the operator is built and :func:`diagnose` names it.

References:
    A. Vaswani et al. Attention Is All You Need. NeurIPS 2017 (the attention the MATH backend computes).
    T. Dao et al. FlashAttention. NeurIPS 2022 (the fused kernels without double backward).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils import _pytree

from flatminima.curvature._types import Params
from flatminima.errors import ConfigurationError

_DIFFERENTIATION_ERRORS = (RuntimeError, NotImplementedError)


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Run ``scaled_dot_product_attention`` with its MATH backend (twice differentiable) inside."""
    with sdpa_kernel(SDPBackend.MATH):
        yield


@contextlib.contextmanager
def quiet_forward_ad() -> Iterator[None]:
    """Silence torch's warning that it scripts forward-AD decompositions (about torch, not the caller)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        yield


def describe(name: str, module: nn.Module) -> str:
    """``layer 'name' (Type)``, or ``the model (Type)`` for the root module."""
    return f"layer {name!r} ({type(module).__name__})" if name else f"the model ({type(module).__name__})"


def prepare_copy(model: nn.Module) -> None:
    """Make the measured copy twice differentiable without changing its function (dense embeddings)."""
    for module in model.modules():
        if isinstance(module, nn.Embedding | nn.EmbeddingBag) and module.sparse:
            module.sparse = False


def check_train_mode_layers(model: nn.Module) -> None:
    """Reject layers whose train-mode randomness cannot be fixed per batch, naming them.

    Raises:
        ConfigurationError: for ``nn.MultiheadAttention`` with attention dropout and recurrent layers
            with inter-layer dropout.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention) and module.dropout > 0:
            raise ConfigurationError(
                f"mode='train' cannot fix the attention dropout of {describe(name, module)}, "
                f"dropout={module.dropout}: it draws new masks at every call. Set its dropout to 0 "
                "or use mode='eval'."
            )
        if isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1:
            raise ConfigurationError(
                f"mode='train' cannot fix the inter-layer dropout of {describe(name, module)}, "
                f"dropout={module.dropout}: it draws new masks at every call. Set its dropout to 0 "
                "or use mode='eval'."
            )


def _capture(model: nn.Module, run: Callable[[], Any]) -> list[tuple[str, nn.Module, Any, Any, Any]]:
    """(name, module, args, kwargs, output) of every module call of ``run()``, in completion order."""
    calls: list[tuple[str, nn.Module, Any, Any, Any]] = []
    handles = []
    for name, module in model.named_modules():

        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any, name: str = name) -> None:
            calls.append((name, module, args, kwargs, output))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return calls


def find_random_layer(model: nn.Module, run: Callable[[], Any]) -> str | None:
    """The description of the first layer whose output differs between two calls of ``run()``, if any."""
    first, second = _capture(model, run), _capture(model, run)
    for (name, module, _, _, one), (_, _, _, _, other) in zip(first, second, strict=False):
        left, right = _pytree.tree_leaves(one), _pytree.tree_leaves(other)
        tensors = [(a, b) for a, b in zip(left, right, strict=False) if isinstance(a, torch.Tensor)]
        if any(not isinstance(b, torch.Tensor) or not torch.equal(a, b) for a, b in tensors):
            return describe(name, module)
    return None


def hessian_vector_product(
    loss: Callable[[Params], torch.Tensor], primal: Params, tangent: Params, ad_mode: str
) -> Params:
    """H v of ``loss`` at ``primal`` for one tangent (reverse over reverse or forward over reverse)."""
    gradient = torch.func.grad(loss)
    with quiet_forward_ad():
        if ad_mode == "forward":
            return torch.func.jvp(gradient, (primal,), (tangent,))[1]
        return torch.func.vjp(gradient, primal)[1](tangent)[0]


def probe(
    loss: Callable[[Params], torch.Tensor],
    point: Params,
    names: tuple[str, ...],
    ad_mode: str,
    diagnose_failure: Callable[[BaseException], ConfigurationError],
) -> None:
    """One Hessian-vector product of ``loss`` (a batch loss) to find missing second derivatives early.

    Raises:
        ConfigurationError: from ``diagnose_failure`` if the product fails.
    """
    primal = {name: point[name] for name in names}
    tangent = {name: torch.ones_like(tensor) for name, tensor in primal.items()}
    try:
        hessian_vector_product(lambda s: loss({**point, **s}), primal, tangent, ad_mode)
    except _DIFFERENTIATION_ERRORS as error:
        raise diagnose_failure(error) from error


def _module_fails(module: nn.Module, args: Any, kwargs: Any, ad_mode: str) -> BaseException | None:
    """The error of a Hessian-vector product through ``module`` alone on its recorded inputs, if any."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    buffers = dict(module.named_buffers())
    leaves, spec = _pytree.tree_flatten((args, kwargs))
    floating = [
        i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()
    ]
    primal = {**{f"p:{n}": t for n, t in params.items()}, **{f"x:{i}": leaves[i] for i in floating}}
    if not primal:
        return None

    def loss(variables: Params) -> torch.Tensor:
        values = list(leaves)
        for i in floating:
            values[i] = variables[f"x:{i}"]
        call_args, call_kwargs = _pytree.tree_unflatten(values, spec)
        weights = {n: variables[f"p:{n}"] for n in params}
        with math_attention():
            output = torch.func.functional_call(module, {**weights, **buffers}, call_args, call_kwargs)
        tensors = [
            t for t in _pytree.tree_leaves(output) if isinstance(t, torch.Tensor) and t.is_floating_point()
        ]
        return sum((0.5 * t.square().sum() for t in tensors), torch.zeros((), dtype=tensors[0].dtype))

    tangent = {name: torch.ones_like(t) for name, t in primal.items()}
    try:
        hessian_vector_product(loss, primal, tangent, ad_mode)
    except _DIFFERENTIATION_ERRORS as error:
        return error
    except Exception:  # a module that cannot run alone on its recorded inputs is not the one to blame
        return None
    return None


def diagnose(
    model: nn.Module, run: Callable[[], Any], ad_mode: str, error: BaseException
) -> ConfigurationError:
    """The error naming the innermost layer through which no Hessian-vector product passes.

    ``run()`` evaluates the model on one batch; each module is then differentiated twice alone, on the
    inputs it received, and the first failing module without a failing submodule is named.
    """
    failing: dict[str, tuple[nn.Module, BaseException]] = {}
    for name, module, args, kwargs, _ in _capture(model, run):
        if name in failing or any(other.startswith(f"{name}.") or not name for other in failing):
            continue  # a submodule already failed: it is the one to name
        failure = _module_fails(module, args, kwargs, ad_mode)
        if failure is not None:
            failing[name] = (module, failure)
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if not failing:
        return ConfigurationError(
            f"the model cannot be differentiated twice ({ad_mode} over reverse mode), so no "
            f"Hessian-vector product passes through it: {cause}"
        )
    name, (module, failure) = next(iter(failing.items()))
    cause = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
    hint = ""
    if ad_mode == "forward":
        _, _, args, kwargs, _ = next(call for call in _capture(model, run) if call[0] == name)
        if _module_fails(module, args, kwargs, "reverse") is None:
            hint = " (ad_mode='reverse' supports it)"
    return ConfigurationError(
        f"{describe(name, module)} cannot be differentiated twice ({ad_mode} over reverse mode), so no "
        f"Hessian-vector product passes through it{hint}: {cause}"
    )
