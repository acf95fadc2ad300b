"""Hochreiter and Schmidhuber's flat minimum: the largest axis-aligned box of tolerable loss around w.

Definition (Hochreiter and Schmidhuber 1997): at tolerance eps > 0, a box of half-widths dw_i around the
weights w, B = {w + d : |d_i| <= dw_i}, is flat when L(w + d) <= L(w) + eps everywhere in it; the larger
the box, the flatter the minimum. Its log-volume (natural log) and its minimum-description-length reading,

    log_volume = sum_i log(2 dw_i),
    description_length_bits = -sum_i log2(dw_i / precision),

(a weight need only be given to within its box, so a wide box means few bits: flat minima are simple
networks) are the reported measures; ``precision`` (default 1) is the length against which a half-width
is counted, so the default gives -sum_i log2 dw_i, H&S's B(w) without its constant. Negative bits mean
boxes wider than ``precision``.

The largest box is a non-convex problem; it is approximated in three documented, checkable steps:

1. Axis half-widths a (the lines do not interact: each is a 1-D search). ``granularity="coordinate"``:
   for each coordinate i and sign s, the largest t with L(w + s t e_i) <= L(w) + eps, by bracketing
   (from ``initial_half_width``, doubling until the loss exceeds the tolerance or ``max_half_width`` is
   reached, halving while it exceeds it) and ``num_bisections`` bisection steps keeping the feasible
   end, so the 1-D segment found is feasible at its end up to the bracket's resolution 2^-num_bisections
   (relative); a_i = min over the two signs. Doubling from a small start finds the first crossing, not a
   later one, when the loss along the line is not monotone. ``granularity="tensor"``: one half-width a_g
   shared by the coordinates of each parameter tensor g, the same search along ``num_directions`` random
   corner directions s in {-1, +1}^{n_g} of the tensor (both signs), a_g = min over them. Bisecting all
   coordinates of a chunk at once would not be valid (they interact); the tensor search is along
   corners, which is why a joint scale follows.
2. Joint scale c in (0, 1]: the axes interact (for L = w^T H w / 2 with diagonal H, a_i = sqrt(2 eps /
   h_i) and every corner of the box of half-widths a has loss n eps), so the box is shrunk to c a, with c
   the largest value (bracketing down from 1 by halving, then ``num_bisections`` bisections) with L(w +
   c a * s_j) <= L(w) + eps at ``num_search_points`` fixed points s_j, alternately random corners
   (s_j in {-1, +1}^n) and uniform points of [-1, 1]^n (common random numbers: the same s_j at every c).
3. Verification: the final box dw = c a is checked at ``num_verification_points`` fresh points (again
   alternately corners and uniform points); the fraction f violating L <= L(w) + eps is reported with
   its standard error sqrt(f (1 - f) / m). A sample, not a proof: with no violation among m points, the
   violating fraction is below 3 / m with 95% confidence.

Cost, in loss evaluations: 2 n (|log2(a_i / initial_half_width)| + 1 + num_bisections) for coordinates
(raised as an error beyond ``max_coordinates`` coordinates), 2 K T (the same per line) for T tensors and
K directions, then num_search_points (log2(1 / c) + 1 + num_bisections) for the scale and
num_verification_points. The points of a step are evaluated together, vmapped in chunks of
``chunk_size`` where the loss allows it (:mod:`._loss_points`).

References:
    S. Hochreiter, J. Schmidhuber. Flat minima. Neural Computation 9(1), 1-42, 1997.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.curvature._box_search import box_points, coordinate_lines, expand, largest_steps, tensor_lines
from flatminima.curvature._loss_points import LossEvaluator
from flatminima.curvature.hessian import HessianOperator
from flatminima.curvature.measure_table import MeasureValue
from flatminima.errors import ConfigurationError, InputTypeError

GRANULARITIES: tuple[str, ...] = ("coordinate", "tensor")


@dataclasses.dataclass(frozen=True)
class FlatBox:
    """The result of :func:`flat_box`.

    Attributes:
        half_widths: dw = scale * axis_half_widths, the box's half-widths, flat (n,), in the operator's
            dtype and device.
        axis_half_widths: a, the half-widths of step 1 (before the joint scale), flat (n,).
        scale: c in (0, 1], the joint scale of step 2.
        log_volume: sum_i log(2 dw_i), natural log.
        description_length_bits: -sum_i log2(dw_i / precision).
        loss: L(w).
        epsilon: the tolerance eps.
        precision: the reference length of the description length.
        granularity: "coordinate" or "tensor".
        num_saturated: lines of step 1 that reached ``max_half_width`` (coordinates or tensors).
        violation_fraction: the fraction of verification points with L > L(w) + eps.
        violation_stderr: its standard error sqrt(f (1 - f) / m).
        num_verification_points: m.
        num_loss_evaluations: loss evaluations spent, L(w) included.
    """

    half_widths: torch.Tensor
    axis_half_widths: torch.Tensor
    scale: float
    log_volume: float
    description_length_bits: float
    loss: float
    epsilon: float
    precision: float
    granularity: str
    num_saturated: int
    violation_fraction: float
    violation_stderr: float
    num_verification_points: int
    num_loss_evaluations: int


def flat_box(
    operator: HessianOperator,
    epsilon: float = 0.01,
    *,
    precision: float = 1.0,
    granularity: str = "coordinate",
    max_coordinates: int = 10_000,
    initial_half_width: float = 1e-3,
    max_half_width: float = 10.0,
    num_bisections: int = 20,
    num_directions: int = 4,
    num_search_points: int = 32,
    num_verification_points: int = 64,
    chunk_size: int = 64,
    vectorize: bool = True,
    generator: torch.Generator | None = None,
) -> FlatBox:
    """Hochreiter and Schmidhuber's flat box around the operator's point (see the module for the method).

    Args:
        operator: a :class:`HessianOperator`; L is its loss over its selected parameters (the others
            held fixed), so a selected group gets its own box.
        epsilon: the tolerated loss increase eps (> 0), absolute.
        precision: the reference length of the description length (> 0).
        granularity: "coordinate" (one half-width per coordinate) or "tensor" (one per parameter tensor).
        max_coordinates: the largest n accepted with granularity="coordinate" (>= 1).
        initial_half_width: where the search of every line starts (> 0).
        max_half_width: the largest half-width of a line (> 0); lines reaching it are saturated.
        num_bisections: bisection steps per line and for the scale (>= 1).
        num_directions: random corner directions per tensor with granularity="tensor" (>= 1).
        num_search_points: the fixed points that set the joint scale (>= 1).
        num_verification_points: the fresh points that check the final box (>= 1).
        chunk_size: the most points per vmapped loss evaluation (>= 1).
        vectorize: vmap the loss over the points of a chunk where it can be.
        generator: draws the tensor directions and the search and verification points (required).

    Returns:
        FlatBox(half_widths, axis_half_widths, scale, log_volume, description_length_bits, loss,
        epsilon, precision, granularity, num_saturated, violation_fraction, violation_stderr,
        num_verification_points, num_loss_evaluations).

    Raises:
        InputDataError: if a number is out of range (epsilon, precision or a width <= 0, a count < 1),
            or the loss exceeds L(w) + eps at every step along a line down to 2^-60 initial_half_width.
        ConfigurationError: if ``granularity`` is unknown, or n > ``max_coordinates`` for coordinates.
        InputTypeError: if ``generator`` is missing or ``vectorize`` is not a bool.

    Example:
        >>> h = torch.tensor([1.0, 4.0], dtype=torch.float64)
        >>> w = {"w": torch.zeros(2, dtype=torch.float64)}
        >>> H = HessianOperator(lambda p: 0.5 * (h * p["w"] ** 2).sum(), w)
        >>> box = flat_box(H, 0.02, generator=torch.Generator().manual_seed(0))
        >>> [round(float(a), 4) for a in box.axis_half_widths]  # sqrt(2 eps / h_i)
        [0.2, 0.1]
        >>> round(box.scale, 4), box.violation_fraction  # every corner has loss c^2 n eps: c = 1/sqrt(2)
        (0.7071, 0.0)

    References:
        Hochreiter and Schmidhuber (1997), Sections 2-3.
    """
    generator = check_generator("generator", generator)
    _check_arguments(
        operator.size,
        epsilon=epsilon,
        precision=precision,
        granularity=granularity,
        max_coordinates=max_coordinates,
        initial_half_width=initial_half_width,
        max_half_width=max_half_width,
        num_bisections=num_bisections,
        num_directions=num_directions,
        num_search_points=num_search_points,
        num_verification_points=num_verification_points,
        chunk_size=chunk_size,
        vectorize=vectorize,
    )
    w = operator.point
    evaluator = LossEvaluator(operator, chunk_size=chunk_size, vectorize=vectorize)
    loss = float(evaluator.values(w[None])[0])
    threshold = loss + epsilon
    if granularity == "coordinate":
        lines = coordinate_lines(w)
    else:
        lines = tensor_lines(operator, num_directions, generator)
    count, build, owners, what = lines

    def line_excess(ids: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return evaluator.map(len(ids), lambda chunk: build(ids[chunk], steps[chunk])) - threshold

    steps, saturated = largest_steps(
        line_excess,
        count,
        start=initial_half_width,
        upper=max_half_width,
        depth=num_bisections,
        describe=what,
    )
    owner_count = int(owners.max()) + 1
    per_owner = torch.full((owner_count,), math.inf, dtype=torch.float64).scatter_reduce(
        0, owners, steps, reduce="amin"
    )
    owner_saturated = torch.ones(owner_count, dtype=torch.float64).scatter_reduce(
        0, owners, saturated.to(torch.float64), reduce="amin"
    )
    axes = per_owner if granularity == "coordinate" else expand(operator, per_owner)
    axes_w = axes.to(device=w.device, dtype=w.dtype)
    search = box_points(num_search_points, w, generator)

    def scale_excess(ids: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        c = float(scales[0])
        values = evaluator.map(num_search_points, lambda chunk: w + c * axes_w * search(chunk))
        return (values.max() - threshold).reshape(1)

    scale = float(
        largest_steps(
            scale_excess, 1, start=1.0, upper=1.0, depth=num_bisections, describe=lambda _: "the joint scale"
        )[0]
    )
    half_widths = scale * axes
    verify = box_points(num_verification_points, w, generator)
    dw = half_widths.to(device=w.device, dtype=w.dtype)
    values = evaluator.map(num_verification_points, lambda chunk: w + dw * verify(chunk))
    fraction = float((~(values <= threshold)).to(torch.float64).mean())
    return FlatBox(
        half_widths=dw,
        axis_half_widths=axes_w,
        scale=scale,
        log_volume=float(torch.log(2.0 * half_widths).sum()),
        description_length_bits=-float(torch.log2(half_widths / precision).sum()),
        loss=loss,
        epsilon=float(epsilon),
        precision=float(precision),
        granularity=granularity,
        num_saturated=int(owner_saturated.sum()),
        violation_fraction=fraction,
        violation_stderr=math.sqrt(fraction * (1.0 - fraction) / num_verification_points),
        num_verification_points=num_verification_points,
        num_loss_evaluations=evaluator.num_evaluations,
    )


def check_flat_box_options(size: int, options: Mapping[str, Any]) -> None:
    """Raise the error :func:`flat_box` would raise for ``options`` on an operator of size ``size``.

    Used by :func:`~flatminima.curvature.measure.measure` before any work; unknown keys are left to
    its option check.
    """
    parameters = inspect.signature(flat_box).parameters
    merged = {
        name: options.get(name, p.default)
        for name, p in parameters.items()
        if name not in ("operator", "generator")
    }
    _check_arguments(size, **merged)


def flat_box_measure(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    """Registry function of ``hochreiter_box``: description length in bits, violations as diagnostic."""
    box = flat_box(op, generator=generator, **options)
    return MeasureValue(
        box.description_length_bits,
        math.nan,
        0,
        math.nan,
        "violation_fraction",
        box.violation_fraction,
        box.violation_stderr,
    )


def _check_arguments(
    size: int,
    *,
    epsilon: Any,
    precision: Any,
    granularity: Any,
    max_coordinates: Any,
    initial_half_width: Any,
    max_half_width: Any,
    num_bisections: Any,
    num_directions: Any,
    num_search_points: Any,
    num_verification_points: Any,
    chunk_size: Any,
    vectorize: Any,
) -> None:
    for name, value in (("epsilon", epsilon), ("precision", precision)):
        check_real(name, value, low=0.0, low_open=True)
    for name, value in (("initial_half_width", initial_half_width), ("max_half_width", max_half_width)):
        check_real(name, value, low=0.0, low_open=True)
    for name, value in (
        ("max_coordinates", max_coordinates),
        ("num_bisections", num_bisections),
        ("num_directions", num_directions),
        ("num_search_points", num_search_points),
        ("num_verification_points", num_verification_points),
        ("chunk_size", chunk_size),
    ):
        check_int_in_range(name, value, low=1)
    if not isinstance(vectorize, bool):
        raise InputTypeError(
            f"vectorize must be a bool; got {vectorize!r} of type {type(vectorize).__name__}."
        )
    if granularity not in GRANULARITIES:
        raise ConfigurationError(
            f"granularity must be 'coordinate' or 'tensor'; got granularity={granularity!r}."
        )
    if granularity == "coordinate" and size > max_coordinates:
        raise ConfigurationError(
            f"granularity='coordinate' costs about 2 n (log2 steps + num_bisections) loss evaluations; "
            f"n = {size} exceeds max_coordinates = {max_coordinates}. Use granularity='tensor' or raise "
            "max_coordinates."
        )
