"""The Hessian trace as the exact Gauss-Newton trace plus a block-diagonal Hutchinson residual.

For the mean loss L(w) = (1/N) sum_n l(f_n(w), y_n) of a model with outputs f_n = f(x_n; w) and output
Jacobians J_n, the Hessian splits into the generalized Gauss-Newton matrix and a residual (Martens 2020):

    H = G + R,   G = (1/N) sum_n J_n^T Lambda_n J_n,   R = (1/N) sum_n sum_k r_{n,k} grad^2 f_{n,k},

with Lambda_n = d^2 l / df_n^2 and r_n = dl / df_n. ``ggn_control_trace`` computes tr H = tr G + tr R:

* tr G exactly, without probes. Factor Lambda_n = S_n S_n^T; then tr G = (1/N) sum_n ||J_n^T S_n||_F^2 =
  (1/N) sum_n sum_c ||J_n^T s_{n,c}||^2, one per-example vector-Jacobian product per column s_{n,c}
  (the square-root factorization behind BackPACK's exact GGN diagonal, Dangel, Kunstner, Hennig 2020).
  Cross-entropy: Lambda = diag(p) - p p^T = S S^T, e.g. S = diag(sqrt p) - p sqrt(p)^T (expand, using
  sum p = 1; columns sqrt(p_c) (e_c - p)); since Lambda 1 = 0, :mod:`._ggn_exact` uses a factor with
  C - 1 columns. Squared error over D outputs: S = sqrt(2/D) I, D columns. The products run under
  ``torch.func.vmap`` over the examples of a batch, in chunks sized to a memory budget, streamed over
  the batches: C - 1 (or D) per-example gradient passes in all.
* tr R by Hutchinson on the diagonal blocks only. R is the Hessian of phi(w) = (1/N) sum_n r_n . f_n(w)
  with r_n held at its value at the point, so R v is a Hessian-vector product of phi (built on the
  Hessian operator's own model copy, data stream, mode and process group). With a probe z_l supported
  on one parameter block l (one module by default), E[z_l^T R z_l] = tr R_ll and
  tr R = sum_l tr R_ll; a sample is sum_l z_l^T R_ll z_l (one product per block), of variance
  2 sum_l (||R_ll||_F^2 - sum_i (R_ll)_ii^2) for Rademacher probes, 2 sum_l ||R_ll||_F^2 for Gaussian.
  The off-diagonal blocks never enter. Where f is piecewise linear in each module's own parameters
  with the others fixed (Linear and convolutions with their biases, eval-mode BatchNorm, ReLU, max and
  average pooling, residual sums), grad^2_ll f_k = 0, so R_ll = 0 and H_ll = G_ll (Botev, Ritter, Barber
  2017): then tr H = tr G exactly. A screening pass with one Gaussian probe per block finds such blocks:
  z^T R_ll z = 0 has probability 0 for a Gaussian z unless R_ll = 0, and autograd's second derivative
  of ReLU and pooling is exactly 0, so the form is exactly 0.0 in floating point. Those blocks are
  dropped (value 0, no variance) and the remaining blocks are sampled until ``rtol`` is reached, one
  by one or (``joint=True``) together, one product per sample with the cross-block terms in the
  variance.

Per-example products need the examples to be independent: BatchNorm in train mode (batch statistics)
couples them, and is refused, as is train-mode dropout; every chunk's per-example outputs are also
compared with the batched outputs, which catches any other layer that mixes the examples.

References:
    J. Martens. New insights and perspectives on the natural gradient method. JMLR 21, 2020
        (arXiv:1412.1193, 2014).
    M. F. Hutchinson. A stochastic estimator of the trace of the influence matrix for Laplacian smoothing
        splines. Comm. Statist. Simulation Comput., 1990.
    F. Dangel, F. Kunstner, P. Hennig. BackPACK: packing more into backprop. ICLR 2020.
    A. Botev, H. Ritter, D. Barber. Practical Gauss-Newton optimisation for deep learning. ICML 2017.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from flatminima._checks import check_int_in_range
from flatminima.curvature import _ggn_exact, taylor
from flatminima.curvature._model import ModelSource, batch_norm_modules, dropout_modules
from flatminima.curvature._types import Params
from flatminima.curvature.curvature_outputs import true_label_gradients
from flatminima.curvature.estimate import Estimate, check_sampling, draw_probes, sample_until
from flatminima.curvature.hessian import HessianOperator
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError


@dataclasses.dataclass(frozen=True)
class GGNControlTrace(Estimate):
    """tr H = tr G + tr R: an :class:`Estimate` (value, stderr, num_matvecs, ...) with its two parts.

    ``value`` is ``ggn_trace + residual``; ``stderr`` is the residual's (tr G is exact);
    ``num_matvecs`` counts the residual's Hessian-vector products (screening included) and
    ``num_samples`` its samples (each one probe per remaining block, or one joint probe).

    Attributes:
        ggn_trace: tr G, exact (up to rounding).
        residual: the estimate of tr R = tr H - tr G (exactly 0.0 when every block screened to 0).
        block_residuals: the estimate of tr R_ll per block (0.0 for the screened-out blocks); with
            ``joint=True`` the blocks probed together share one entry, their names joined by "+".
        zero_blocks: the blocks whose screening form was exactly 0, so R_ll = 0 (almost surely).
        num_examples: N, the examples over which tr G was summed.
        vjps_per_example: per-example vector-Jacobian products spent on tr G per example (C - 1 classes
            for cross-entropy, D outputs for the squared error).
    """

    ggn_trace: float = 0.0
    residual: float = 0.0
    block_residuals: dict[str, float] = dataclasses.field(default_factory=dict)
    zero_blocks: tuple[str, ...] = ()
    num_examples: int = 0
    vjps_per_example: int = 0


def check_control_operator(operator: Any) -> tuple[ModelSource, str]:
    """The operator's model source and loss kind, if :func:`ggn_control_trace` applies to it.

    Raises:
        InputTypeError: if ``operator`` is not a :class:`HessianOperator`.
        InputDataError: if it was not built by ``HessianOperator.from_model`` (no model or data).
        ConfigurationError: for a loss other than cross-entropy or mean squared error, or a model with
            BatchNorm or dropout measured in train mode (they couple the examples of a batch).
    """
    if not isinstance(operator, HessianOperator):
        raise InputTypeError(
            "ggn_control_trace needs the HessianOperator of a model (HessianOperator.from_model); "
            f"got {type(operator).__name__}."
        )
    source = operator.source
    if source is None:
        raise InputDataError(
            "ggn_control_trace needs the model and its data; build the operator with "
            "HessianOperator.from_model(model, loss_fn, batches, mode=...)."
        )
    kind = taylor.loss_kind(source.loss_fn)
    if kind is None:
        raise ConfigurationError(
            "ggn_control_trace needs loss_fn to be cross-entropy or mean squared error "
            "(torch.nn.functional.cross_entropy / mse_loss or nn.CrossEntropyLoss() / nn.MSELoss() at "
            f"their defaults); got {source.loss_fn!r}. Use hutchinson_trace for any other loss."
        )
    coupled = batch_norm_modules(source.model) + dropout_modules(source.model)
    if source.mode == "train" and coupled:
        raise ConfigurationError(
            f"ggn_control_trace needs independent examples, but in mode='train' {', '.join(coupled)} "
            "couple the examples of a batch (batch statistics, per-batch dropout masks); build the "
            "operator with mode='eval', or use hutchinson_trace."
        )
    return source, kind


def ggn_control_trace(
    operator: HessianOperator,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    rtol: float | None = None,
    min_probes: int = 10,
    batch_size: int = 32,
    blocks: str = "module",
    screen: bool = True,
    joint: bool = False,
    chunk_size: int | None = None,
) -> GGNControlTrace:
    """The trace of a model's Hessian: the exact Gauss-Newton trace plus a block-diagonal residual.

    See the module docstring for the method. The trace is over the operator's selection (its
    parameters with the others held fixed), in its mode, on its data stream and process group. Cost:
    one pass over the data with K per-example vector-Jacobian products per example for tr G (K the
    classes, or the outputs of a squared error), then one Hessian-vector product per block to screen
    and one per remaining block per sample; memory: a chunk of per-example gradients plus what a
    Hessian-vector product of the operator needs.

    Args:
        operator: the model's Hessian, from ``HessianOperator.from_model`` with cross-entropy or mean
            squared error (a selection of it is fine).
        num_probes: the budget of residual samples (each one probe per remaining block).
        generator: the random stream of the probes (required).
        distribution: "rademacher" (default) or "gaussian" residual probes (screening is Gaussian).
        rtol: stop once the residual's stderr <= rtol |tr G + tr R| (never before ``min_probes``
            samples); None for exactly ``num_probes`` samples.
        min_probes: the fewest residual samples behind a stderr (>= 2).
        batch_size: probes of one block applied together (vectorized Hessian-vector products).
        blocks: the diagonal blocks: "module" (default: parameters of one layer) or "parameter".
        screen: drop the blocks whose residual form on one Gaussian probe is exactly 0 (R_ll = 0).
        joint: after screening, probe the remaining blocks together (one product per sample over
            their union A, unbiased for tr R_AA = sum_l tr R_ll, variance 2 ||R_AA||_F^2 with the
            cross-block terms) instead of one by one (one product per block per sample, variance
            2 sum_l ||R_ll||_F^2); False by default.
        chunk_size: examples per vmapped per-example call (default: from a memory budget of 384 MiB on
            CPU, 2 GiB on an accelerator, for the examples x columns x parameters gradients).

    Returns:
        A :class:`GGNControlTrace`.

    Raises:
        InputTypeError, InputDataError, ConfigurationError: see :func:`check_control_operator`; for
            bad sampling arguments as :func:`~flatminima.curvature.trace.hutchinson_trace`; if the
            model cannot run per example under ``torch.func.vmap`` or mixes the examples of a batch.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()
        >>> x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
        >>> H = HessianOperator.from_model(net, torch.nn.functional.cross_entropy, [(x, y)], mode="eval")
        >>> result = ggn_control_trace(H, generator=g)  # a ReLU network: tr H = tr G exactly
        >>> (result.residual, result.stderr, result.zero_blocks)
        (0.0, 0.0, ('0', '2'))

    References:
        Martens (2020); Hutchinson (1990); Dangel, Kunstner, Hennig (2020); Botev, Ritter, Barber (2017).
    """
    source, kind = check_control_operator(operator)
    generator = check_sampling(num_probes, min_probes, rtol, batch_size, distribution, generator)
    if blocks not in ("module", "parameter"):
        raise ConfigurationError(f"blocks must be 'module' or 'parameter'; got blocks={blocks!r}.")
    if not isinstance(screen, bool) or not isinstance(joint, bool):
        raise InputTypeError(f"screen and joint must be bools; got screen={screen!r}, joint={joint!r}.")
    if chunk_size is not None:
        check_int_in_range("chunk_size", chunk_size, low=1)
    ggn, columns = _ggn_exact.ggn_trace(operator, source, kind, chunk_size)
    R = _residual_operator(operator, source, kind)
    parts = _blocks(R, blocks)
    active, matvecs = list(parts), 0
    if screen:
        Z = draw_probes(
            R.size, 1, distribution="gaussian", generator=generator, dtype=R.dtype, device=R.device
        )
        forms = _block_forms(parts, active, Z, batch_size)
        matvecs += len(active)
        active = [name for name, form in zip(active, forms[:, 0].tolist(), strict=True) if form != 0.0]
    zero = tuple(name for name in parts if name not in active)
    totals = dict.fromkeys(parts, 0.0)
    if not active:
        return GGNControlTrace(
            ggn, 0.0, matvecs, 1, True, ggn, 0.0, totals, zero, source.num_examples, columns
        )
    if joint and len(active) > 1:  # one probe over every remaining block: one product per sample
        key = "+".join(active)
        parts[key] = _part(R, [name for block in active for name in parts[block][0].names])
        totals = {**{block: 0.0 for block in zero}, key: 0.0}
        active = [key]

    def sample(Z: torch.Tensor) -> torch.Tensor:
        forms = _block_forms(parts, active, Z, batch_size)
        for name, row in zip(active, forms.to(torch.float64).sum(dim=1).tolist(), strict=True):
            totals[name] += row
        return forms.sum(dim=0)

    stats, converged = sample_until(
        sample,
        R,
        num_probes=num_probes,
        min_probes=min_probes,
        rtol=rtol,
        batch_size=batch_size,
        distribution=distribution,
        generator=generator,
        offset=ggn,
    )
    residual, stderr = stats.mean_and_stderr()
    means = {name: total / stats.count for name, total in totals.items()}
    return GGNControlTrace(
        ggn + residual,
        stderr,
        matvecs + len(active) * stats.count,
        stats.count,
        converged,
        ggn,
        residual,
        means,
        zero,
        source.num_examples,
        columns,
    )


# ---- tr R: the Hessian of phi(w) = (1/N) sum_n r_n . f_n(w), probed block by block -----------------
class _ResidualTerms:
    """(n_b / N, params -> (1/n_b) sum_n r_n . f_n(params)) per batch, r_n = dl/df_n held at the point."""

    def __init__(self, source: ModelSource, kind: str) -> None:
        self.source, self.kind = source, kind

    def __iter__(self) -> Iterator[tuple[float, Callable[[Params], torch.Tensor]]]:
        source = self.source
        for index, inputs, targets in source.batches.stream():

            def phi(params: Params, index: int = index, inputs: Any = inputs, targets: Any = targets) -> Any:
                outputs = source.forward_on(params, index, inputs)
                r = true_label_gradients(self.kind, outputs.detach(), targets)
                return (r * outputs.reshape(r.shape)).sum() / r.shape[0]

            yield source.weights[index], phi

    def __len__(self) -> int:
        return len(self.source.weights)


def _residual_operator(operator: HessianOperator, source: ModelSource, kind: str) -> HessianOperator:
    """R = H - G as the Hessian of phi, on the operator's model copy, data, selection and group."""
    terms = _ResidualTerms(source, kind)
    parts = {**operator._parts(), "terms": terms, "hessian_terms": terms, "closed_quadratic_forms": None}
    return HessianOperator._create(**parts)


def _blocks(R: HessianOperator, blocks: str) -> dict[str, tuple[HessianOperator, list[slice]]]:
    """Each block's diagonal block R_ll (a selection) and the coordinates of its members in R's vectors."""
    return {block: _part(R, members) for block, members in R.groups(blocks).items()}


def _part(R: HessianOperator, names: Sequence[str]) -> tuple[HessianOperator, list[slice]]:
    """R restricted to ``names`` and the coordinates of its parameters in R's vectors, in its order."""
    offsets, start = {}, 0
    for name in R.names:
        size = math.prod(R.shapes[name])
        offsets[name] = slice(start, start + size)
        start += size
    selected = R.select(*names)
    return selected, [offsets[name] for name in selected.names]


def _block_forms(
    parts: dict[str, tuple[HessianOperator, list[slice]]], active: list[str], Z: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """(z_{l,j}^T R_ll z_{l,j}) for the active blocks l and the columns j of Z, shape (blocks, b).

    z_{l,j} is the part of column j on block l; each block is its own selection of R, so its
    Hessian-vector products differentiate back to that block only.
    """
    rows = []
    for name in active:
        block, pieces = parts[name]
        Z_l = torch.cat([Z[piece] for piece in pieces])
        rows.append(torch.cat([block.quadratic_forms(chunk) for chunk in Z_l.split(batch_size, dim=1)]))
    return torch.stack(rows)
