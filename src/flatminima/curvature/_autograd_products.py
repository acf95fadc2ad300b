"""Hessian-vector products of a loss closure by automatic differentiation, for a block of vectors.

H v = (d grad L(w))^T v (reverse over reverse, exact because H is symmetric) or d/dt grad L(w + t v)
at t = 0 (forward over reverse). The products of a block share one gradient pass, and either

* go through ``torch.func.vmap`` in chunks of probes (:func:`single_product`), turning matrix-vector
  work into matrix-matrix work, or
* loop over the block on one plain-autograd graph of the gradient, one double backward per vector, as
  PyHessian does (:func:`reverse_loop`): one probe's intermediates in memory at a time and autograd's
  in-place gradient accumulation, which ``torch.func`` forgoes.

Which is faster depends on the size of the saved activations (:func:`probes_per_call`). Vmapping saves
the fixed cost of each operation (dispatch, autograd bookkeeping) per probe and pays in memory traffic:
per probe, one copy of every intermediate. On CPU (benchmarks/bench_networks.py) small CNNs with
~0.4-1.5 MiB per saved activation took 5-10x a gradient per probe vmapped over 32 probes and 1.7-2.7x
looped on one gradient graph, while a transformer layer with ~0.1 MiB per activation was 15% faster
vmapped over 8 than looped. So on CPU: loop when the mean saved activation of one forward pass reaches
:data:`LOOP_ACTIVATION_BYTES_CPU`, else vmap chunks whose activations add up to at most
:data:`CHUNK_BYTES_CPU` (about a last-level cache). On an accelerator only the memory of a chunk is
capped (:data:`CHUNK_BYTES_ACCELERATOR`).

Reference:
    B. A. Pearlmutter. Fast exact multiplication by the Hessian. Neural Computation 6(1), 1994.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from flatminima.curvature._layout import ParameterLayout
from flatminima.curvature._types import LossClosure, Params

LOOP_ACTIVATION_BYTES_CPU = 256 * 2**10
CHUNK_BYTES_CPU = 32 * 2**20
CHUNK_BYTES_ACCELERATOR = 2 * 2**30
#: the probes per call meaning "the whole block at once".
WHOLE_BLOCK = 2**31


def _leaves(layout: ParameterLayout) -> Params:
    """The selected parameters as fresh leaves that require grad."""
    return {name: layout.point[name].detach().requires_grad_(True) for name in layout.names}


def probes_per_call(loss: LossClosure, layout: ParameterLayout, device: torch.device) -> int:
    """Probes per vmapped call: 1 (loop) on CPU for large activations, else the memory budget's count.

    One forward pass measures the saved activations; :data:`WHOLE_BLOCK` if nothing was measured.
    """
    leaves = _leaves(layout)
    sizes = activation_bytes(lambda: loss(layout.with_selected(leaves)))
    cpu = device.type == "cpu"
    if not sizes:
        return WHOLE_BLOCK
    if cpu and sum(sizes) >= LOOP_ACTIVATION_BYTES_CPU * len(sizes):
        return 1
    return max(1, (CHUNK_BYTES_CPU if cpu else CHUNK_BYTES_ACCELERATOR) // sum(sizes))


def reverse_loop(loss: LossClosure, layout: ParameterLayout, tangents: Params, batch: int) -> Params:
    """H v_j = (d grad)^T v_j for each of the ``batch`` tangents, one double backward each, one graph."""
    leaves = _leaves(layout)
    inputs = tuple(leaves.values())
    with torch.enable_grad():
        gradient = torch.autograd.grad(
            loss(layout.with_selected(leaves)),
            inputs,
            create_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
    out = {name: torch.zeros_like(t) for name, t in tangents.items()}
    linked = [(g, name) for g, name in zip(gradient, leaves, strict=True) if g.requires_grad]
    if not linked:  # a loss linear in the parameters: H = 0
        return out
    outputs = tuple(g for g, _ in linked)
    for j in range(batch):
        products = torch.autograd.grad(
            outputs,
            inputs,
            grad_outputs=tuple(tangents[name][j].contiguous() for _, name in linked),
            retain_graph=j < batch - 1,
            allow_unused=True,
            materialize_grads=True,
        )
        for name, product in zip(leaves, products, strict=True):
            out[name][j] = product
    return out


def single_product(loss: LossClosure, layout: ParameterLayout, ad_mode: str) -> Callable[[Params], Params]:
    """The map v -> H v through ``torch.func`` (vmappable): vjp ("reverse") or jvp ("forward") of grad."""
    primal = {name: layout.point[name] for name in layout.names}
    gradient = torch.func.grad(lambda s: loss(layout.with_selected(s)))
    if ad_mode == "reverse":
        # H v = (d grad)^T v by symmetry: one gradient graph per call, then a (vmapped) backward.
        vjp = torch.func.vjp(gradient, primal)[1]
        return lambda tangent: vjp(tangent)[0]

    def single(tangent: Params) -> Params:
        return torch.func.jvp(gradient, (primal,), (tangent,))[1]

    return single


def activation_bytes(forward: Callable[[], Any]) -> list[int] | None:
    """Bytes of each tensor that depends on the variables and that ``forward()`` saves for its backward.

    These are the intermediates a Hessian-vector product carries per probe (constants such as the
    data are shared by all probes and not counted). One forward pass under a saved-tensor hook; its
    graph is dropped without a backward pass. None if the pass fails (then nothing is chunked).
    """
    sizes: list[int] = []

    def pack(tensor: torch.Tensor) -> None:
        if tensor.requires_grad:
            sizes.append(tensor.numel() * tensor.element_size())

    def unpack(_: None) -> torch.Tensor:  # pragma: no cover - the graph is never differentiated
        raise RuntimeError("the activation-size pass keeps no tensors")

    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            forward()
    except Exception:  # a loss that cannot run under the hook keeps the unchunked path
        return None
    return sizes
