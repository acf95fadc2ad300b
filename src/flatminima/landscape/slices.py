"""Loss along lines and planes through parameter space: 1-D interpolation and 2-D slices.

* :func:`interpolate`: f((1 - t) w_a + t w_b) for t on a grid (Goodfellow et al. 2015; Keskar et al.
  2017 plot it between a small-batch and a large-batch minimizer, t in [-1, 2]);
* :func:`slice_1d`: f(w + t d) along one direction;
* :func:`slice_2d`: f(w + x d_1 + y d_2) on a grid (Li et al. 2018), with d_1, d_2 random filter-normalized
  or the top Hessian eigenvectors (:mod:`flatminima.landscape.directions`);
* :func:`basin_width`: the distance along a slice to where f first exceeds f(w) + delta on each side.

Every function takes named functions ``{name: f(params) -> scalar}`` (e.g. train and test loss, error)
and evaluates each at every grid point; :func:`model_functions` builds the usual ones for a classifier.

References:
    I. Goodfellow, O. Vinyals, A. Saxe. Qualitatively characterizing neural network optimization
    problems. ICLR 2015.
    H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein. Visualizing the loss landscape of neural nets.
    NeurIPS 2018.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import InputDataError, InputTypeError
from flatminima.landscape.directions import Params, as_params

ParamFunction = Callable[[Mapping[str, torch.Tensor]], "torch.Tensor | float"]


@dataclasses.dataclass(frozen=True)
class Curve:
    """Values of named functions along a line: ``values[name][i]`` at coordinate ``ts[i]``."""

    ts: torch.Tensor
    values: dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Surface:
    """Values on a grid: ``values[name][i, j]`` at (x = ``xs[j]``, y = ``ys[i]``)."""

    xs: torch.Tensor
    ys: torch.Tensor
    values: dict[str, torch.Tensor]


def model_functions(
    model: nn.Module, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, ParamFunction]:
    """Cross-entropy and 0-1 error of a classifier at given parameters, per data split.

    Returns:
        ``{"<split>_loss": ..., "<split>_error": ...}`` for every split (e.g. {"train": (x, y)}); each
        evaluates ``torch.func.functional_call(model, params, x)`` without gradients.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    out: dict[str, ParamFunction] = {}
    for split, (x, y) in splits.items():

        def logits(p: Mapping[str, torch.Tensor], x: torch.Tensor = x) -> torch.Tensor:
            with torch.no_grad():
                return torch.func.functional_call(model, dict(p), (x,))

        def loss(p: Mapping[str, torch.Tensor], y: torch.Tensor = y, f: Any = logits) -> torch.Tensor:
            return nn.functional.cross_entropy(f(p), y)

        def error(p: Mapping[str, torch.Tensor], y: torch.Tensor = y, f: Any = logits) -> torch.Tensor:
            return (f(p).argmax(1) != y).double().mean()

        out[f"{split}_loss"] = loss
        out[f"{split}_error"] = error
    return out


def _check_functions(functions: Mapping[str, ParamFunction]) -> dict[str, ParamFunction]:
    if not isinstance(functions, Mapping) or not functions:
        raise InputTypeError("functions must be a non-empty mapping from names to f(params) -> scalar.")
    for name, f in functions.items():
        if not callable(f):
            raise InputTypeError(f"functions[{name!r}] must be callable; got {type(f).__name__}.")
    return dict(functions)


def _check_compatible(point: Params, other: Params, name: str) -> None:
    for key, w in point.items():
        if key not in other or other[key].shape != w.shape:
            got = tuple(other[key].shape) if key in other else "missing"
            raise InputDataError(f"{name}[{key!r}] must have shape {tuple(w.shape)}; got {got}.")


def _grid(extent: tuple[float, float], num_points: int, name: str) -> torch.Tensor:
    check_int_in_range(f"{name} num_points", num_points, low=2)
    low = check_real(f"{name} extent[0]", extent[0])
    high = check_real(f"{name} extent[1]", extent[1])
    if not low < high:
        raise InputDataError(f"{name} extent must satisfy extent[0] < extent[1]; got extent={extent}.")
    return torch.linspace(low, high, num_points, dtype=torch.float64)


def _evaluate(functions: dict[str, ParamFunction], params: Params) -> dict[str, float]:
    return {name: float(f(params)) for name, f in functions.items()}


def interpolate(
    functions: Mapping[str, ParamFunction],
    start: nn.Module | Mapping[str, torch.Tensor],
    end: nn.Module | Mapping[str, torch.Tensor],
    *,
    extent: tuple[float, float] = (-0.5, 1.5),
    num_points: int = 41,
) -> Curve:
    """f((1 - t) w_a + t w_b) for t in ``linspace(*extent, num_points)`` (t = 0: start, t = 1: end).

    Raises:
        InputDataError: if the two points have different parameters or the grid is empty.

    Example:
        >>> f = {"f": lambda p: (p["w"] ** 2).sum()}
        >>> a, b = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
        >>> interpolate(f, a, b, extent=(0.0, 1.0), num_points=3).values["f"]
        tensor([0.0000, 0.2500, 1.0000], dtype=torch.float64)
    """
    fs = _check_functions(functions)
    wa, wb = as_params(start), as_params(end)
    _check_compatible(wa, wb, "end")
    ts = _grid(extent, num_points, "interpolate")
    rows = [_evaluate(fs, {k: (1 - float(t)) * wa[k] + float(t) * wb[k] for k in wa}) for t in ts]
    return Curve(ts, {name: torch.tensor([r[name] for r in rows], dtype=torch.float64) for name in fs})


def slice_1d(
    functions: Mapping[str, ParamFunction],
    center: nn.Module | Mapping[str, torch.Tensor],
    direction: Mapping[str, torch.Tensor],
    *,
    extent: tuple[float, float] = (-1.0, 1.0),
    num_points: int = 41,
) -> Curve:
    """f(w + t d) for t in ``linspace(*extent, num_points)``; parameters missing from d are held fixed."""
    fs = _check_functions(functions)
    w = as_params(center)
    d = {k: v for k, v in dict(direction).items()}
    _check_compatible({k: w[k] for k in d if k in w}, d, "direction")
    if not set(d) <= set(w):
        raise InputDataError(f"direction names parameters the point lacks: {sorted(set(d) - set(w))}.")
    ts = _grid(extent, num_points, "slice_1d")
    rows = [_evaluate(fs, {k: w[k] + float(t) * d[k] if k in d else w[k] for k in w}) for t in ts]
    return Curve(ts, {name: torch.tensor([r[name] for r in rows], dtype=torch.float64) for name in fs})


def slice_2d(
    functions: Mapping[str, ParamFunction],
    center: nn.Module | Mapping[str, torch.Tensor],
    direction_x: Mapping[str, torch.Tensor],
    direction_y: Mapping[str, torch.Tensor],
    *,
    extent: tuple[float, float] = (-1.0, 1.0),
    num_points: int = 21,
) -> Surface:
    """f(w + x d_x + y d_y) on the square grid ``linspace(*extent, num_points)`` squared.

    Example:
        >>> f = {"f": lambda p: (p["w"] ** 2).sum()}
        >>> s = slice_2d(f, {"w": torch.zeros(2)}, {"w": torch.tensor([1.0, 0.0])},
        ...              {"w": torch.tensor([0.0, 2.0])}, num_points=3)
        >>> s.values["f"]
        tensor([[5., 4., 5.],
                [1., 0., 1.],
                [5., 4., 5.]], dtype=torch.float64)
    """
    fs = _check_functions(functions)
    w = as_params(center)
    for name, d in (("direction_x", direction_x), ("direction_y", direction_y)):
        _check_compatible(w, dict(d), name)
    grid = _grid(extent, num_points, "slice_2d")
    values = {name: torch.empty(num_points, num_points, dtype=torch.float64) for name in fs}
    for i, y in enumerate(grid):
        for j, x in enumerate(grid):
            point = {k: w[k] + float(x) * direction_x[k] + float(y) * direction_y[k] for k in w}
            for name, value in _evaluate(fs, point).items():
                values[name][i, j] = value
    return Surface(grid, grid.clone(), values)


def basin_width(curve: Curve, name: str, delta: float, *, center: float = 0.0) -> float:
    """The width of the sublevel set {f <= f(center) + delta} around ``center`` along a curve.

    Walks the grid from the point nearest ``center`` to each side until the value first exceeds
    f(center) + delta and interpolates linearly between the two grid points; a side that never exceeds it
    counts to the end of the grid (the width is then a lower bound).

    Raises:
        InputDataError: if ``name`` is not a function of the curve or ``delta`` <= 0.
    """
    if name not in curve.values:
        raise InputDataError(f"name must be one of {sorted(curve.values)}; got name={name!r}.")
    check_real("delta", delta, low=0.0, low_open=True)
    ts, f = curve.ts, curve.values[name]
    i0 = int(torch.argmin((ts - center).abs()))
    level = float(f[i0]) + delta
    ends = []
    for step in (-1, 1):
        i = i0
        while 0 <= i + step < len(ts) and float(f[i + step]) <= level:
            i += step
        if 0 <= i + step < len(ts):
            f0, f1 = float(f[i]), float(f[i + step])
            frac = (level - f0) / (f1 - f0) if f1 != f0 else 0.0
            ends.append(float(ts[i]) + frac * float(ts[i + step] - ts[i]))
        else:
            ends.append(float(ts[i]))
    return abs(ends[1] - ends[0])


def directional_width(
    function: ParamFunction,
    center: nn.Module | Mapping[str, torch.Tensor],
    direction: Mapping[str, torch.Tensor],
    delta: float,
    *,
    extent: float = 1.0,
    num_points: int = 21,
    tolerance: float = 1e-6,
) -> float:
    """The width of {t in [-extent, extent] : f(w + s d) <= f(w) + delta for all s between 0 and t}.

    On each side the first grid point (``num_points`` per side) above the level brackets the crossing,
    which is then located by bisection to ``tolerance * extent``; unlike :func:`basin_width` on a fixed
    grid, narrow basins are resolved. A side that stays below the level counts to ``extent`` (the width
    is then a lower bound).

    Raises:
        InputDataError: if ``delta`` or ``extent`` is not positive, or the direction does not fit.

    Example:
        >>> f = lambda p: (p["w"] ** 2).sum()
        >>> round(directional_width(f, {"w": torch.zeros(1)}, {"w": torch.ones(1)}, 0.01), 6)  # |t| <= 0.1
        0.2
    """
    if not callable(function):
        raise InputTypeError(f"function must be callable; got {type(function).__name__}.")
    check_real("delta", delta, low=0.0, low_open=True)
    limit = check_real("extent", extent, low=0.0, low_open=True)
    check_int_in_range("num_points", num_points, low=2)
    check_real("tolerance", tolerance, low=0.0, low_open=True)
    w = as_params(center)
    d = dict(direction)
    _check_compatible(w, d, "direction")

    def at(t: float) -> float:
        return float(function({k: w[k] + t * d[k] for k in w}))

    level = at(0.0) + delta
    total = 0.0
    for sign in (-1.0, 1.0):
        low, high = 0.0, None
        for i in range(1, num_points + 1):
            t = limit * i / num_points
            if at(sign * t) > level:
                high = t
                break
            low = t
        if high is None:
            total += limit
            continue
        while high - low > tolerance * limit:
            middle = 0.5 * (low + high)
            if at(sign * middle) > level:
                high = middle
            else:
                low = middle
        total += 0.5 * (low + high)
    return total
