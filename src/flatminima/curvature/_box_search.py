"""The searches behind :func:`~flatminima.curvature.flat_box.flat_box`: lines, bisection, box points.

A *line* is a direction d from the weights w (+-e_i for a coordinate, +-s for a random corner s of a
parameter tensor); :func:`largest_steps` finds, for many lines in lockstep, the largest step t with
L(w + t d) <= L(w) + eps, so the points of one step are evaluated together (vmapped in chunks by
:class:`._loss_points.LossEvaluator`). Random corners and box points are drawn from seeds taken from the
caller's generator, one seed per direction or point, and rebuilt on demand: memory stays at one chunk
of points however many are used, and the same seed gives the same point at every step (common random
numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from flatminima.curvature.hessian import HessianOperator
from flatminima.errors import InputDataError

#: halvings below the starting step before a line is declared infeasible at every step.
_MAX_HALVINGS = 60

#: excess(ids, steps) = L - (L(w) + eps) at each step along each line of ids, float64 CPU.
Excess = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: (number of lines, build(ids, steps) -> points (k, n), owner of each line, describe(line) -> str).
Lines = tuple[int, Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor, Callable[[int], str]]


def largest_steps(
    excess: Excess, count: int, *, start: float, upper: float, depth: int, describe: Callable[[int], str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per line, the largest step t in (0, upper] with excess <= 0 (bracketing, then bisection).

    ``excess(ids, t)`` is L - (L(w) + eps) at step t along each line of ``ids`` (NaN counts as a
    violation). Returns the feasible steps and whether each line reached ``upper`` (saturated).
    """
    lo = torch.zeros(count, dtype=torch.float64)
    hi = torch.full((count,), math.inf, dtype=torch.float64)
    t = torch.full((count,), min(start, upper), dtype=torch.float64)
    floor = min(start, upper) * 2.0**-_MAX_HALVINGS
    while True:
        ids = (((hi == math.inf) & (lo < upper)) | (lo == 0)).nonzero().flatten()
        if ids.numel() == 0:
            break
        stuck = ids[(lo[ids] == 0) & (t[ids] < floor)]
        if stuck.numel() > 0:
            raise InputDataError(
                f"the loss exceeds L(w) + epsilon at every step down to {floor:.3g} along "
                f"{describe(int(stuck[0]))}; is the loss discontinuous at w, or epsilon too small?"
            )
        ok = excess(ids, t[ids]) <= 0
        lo[ids[ok]] = t[ids[ok]]
        hi[ids[~ok]] = t[ids[~ok]]
        t = torch.where(hi == math.inf, torch.clamp(2.0 * lo, max=upper), 0.5 * hi)
    inside = (hi < math.inf).nonzero().flatten()
    for _ in range(depth if inside.numel() > 0 else 0):
        middle = 0.5 * (lo[inside] + hi[inside])
        ok = excess(inside, middle) <= 0
        lo[inside[ok]] = middle[ok]
        hi[inside[~ok]] = middle[~ok]
    return lo, hi == math.inf


def coordinate_lines(w: torch.Tensor) -> Lines:
    """2n lines: +e_i (line i) and -e_i (line n + i); owner i."""
    n = w.numel()

    def build(ids: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        signs = torch.where(ids < n, 1.0, -1.0).to(torch.float64)
        points = w.expand(len(ids), n).clone()
        rows = torch.arange(len(ids), device=w.device)
        coordinates = (ids % n).to(w.device)
        points[rows, coordinates] += (signs * steps).to(device=w.device, dtype=w.dtype)
        return points

    def what(line: int) -> str:
        return f"{'+' if line < n else '-'}e_{line % n} (coordinate {line % n})"

    return 2 * n, build, torch.arange(2 * n) % n, what


def tensor_lines(operator: HessianOperator, num_directions: int, generator: torch.Generator) -> Lines:
    """2 K T lines: +-s along K random corner directions s of each of the T selected tensors; owner g."""
    w = operator.point
    sizes = [math.prod(operator.shapes[name]) for name in operator.names]
    offsets = [sum(sizes[:g]) for g in range(len(sizes))]
    seeds = _seeds(len(sizes) * num_directions, generator)

    def build(ids: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        points = w.expand(len(ids), w.numel()).clone()
        for row, (line, step) in enumerate(zip(ids.tolist(), steps.tolist(), strict=True)):
            direction, sign = divmod(line, 2)
            g = direction // num_directions
            s = _draw(seeds[direction], sizes[g], corner=True, like=w, generator=generator)
            points[row, offsets[g] : offsets[g] + sizes[g]] += (-step if sign else step) * s
        return points

    def what(line: int) -> str:
        g = (line // 2) // num_directions
        return f"a random corner direction of tensor {operator.names[g]!r}"

    owners = torch.arange(2 * len(sizes) * num_directions) // (2 * num_directions)
    return 2 * len(sizes) * num_directions, build, owners, what


def expand(operator: HessianOperator, per_tensor: torch.Tensor) -> torch.Tensor:
    """Per-tensor half-widths repeated over each tensor's coordinates, flat (n,)."""
    sizes = torch.tensor([math.prod(operator.shapes[name]) for name in operator.names])
    return per_tensor.repeat_interleave(sizes)


def _seeds(count: int, generator: torch.Generator) -> list[int]:
    return torch.randint(0, 2**62, (count,), generator=generator, device=generator.device).tolist()


def _draw(
    seed: int, size: int, *, corner: bool, like: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """A corner of [-1, 1]^size (random signs) or a uniform point of it, from its own seed."""
    local = torch.Generator(device=generator.device).manual_seed(seed)
    if corner:
        bits = torch.randint(0, 2, (size,), generator=local, device=generator.device)
        point = 2.0 * bits.to(torch.float64) - 1.0
    else:
        point = 2.0 * torch.rand(size, generator=local, device=generator.device, dtype=torch.float64) - 1.0
    return point.to(device=like.device, dtype=like.dtype)


def box_points(
    count: int, w: torch.Tensor, generator: torch.Generator
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``count`` fixed points of [-1, 1]^n, even indices corners, odd ones uniform; rows built on demand."""
    seeds = _seeds(count, generator)

    def points(indices: torch.Tensor) -> torch.Tensor:
        rows = [
            _draw(seeds[j], w.numel(), corner=j % 2 == 0, like=w, generator=generator)
            for j in indices.tolist()
        ]
        return torch.stack(rows)

    return points
