"""Checks of a sweep spec that go beyond types: solver option ranges, instance sizes, spec identity.

Solver options
    The option names the built-in methods share have one meaning everywhere (the solvers' own entry
    checks, :mod:`flatminima._checks`): iteration counts are integers >= 1, tolerances and time limits
    finite numbers > 0, ``eps`` a finite number >= 0. :func:`check_solver_options` applies these ranges to
    every built-in method at parse time, so ``max_iterations = -5`` or ``tolerance = nan`` is refused
    before any trial runs (a user method ``"module:function"`` gives its options its own meaning and is
    not checked here).

Instance sizes
    :func:`instance_bytes` is a lower bound on the memory of one sampled instance (float64): the dense
    Gaussian operator of matrix sensing alone holds m d1 d2 numbers. A cell above
    :data:`MAX_INSTANCE_BYTES` cannot be allocated on any ordinary machine (``dim = 10**9``, or a
    measurement count that overflows) and is refused by ``parse_spec``.

Spec identity
    A stored sweep is identified by its name *and* its spec. :func:`spec_differences` lists the field
    paths where two specs differ; :func:`spec_grows` says whether a new spec only *adds* trials to a stored
    one (more draws, more grid values, more solvers; description and figure hints are free text), in which
    case every stored trial still belongs to the sweep and the stored spec may be replaced.
"""

from __future__ import annotations

import itertools
import math
import typing
from collections.abc import Mapping
from typing import Any

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import ConfigurationError, FlatminimaError
from flatminima.experiments.trial import canonical_json

#: a cell whose sampled instance needs more bytes than this is refused (64 GiB).
MAX_INSTANCE_BYTES = 64 * 2**30

#: grids with more cells than this are checked at their corner cells only.
CELL_CHECK_LIMIT = 10_000
#: solver options that count iterations (or layers): integers >= the given minimum.
_COUNT_OPTIONS = {"max_iterations": 1, "max_outer": 1, "inner_iterations": 1, "width": 1, "depth": 1}
#: per-method minimums that differ from the shared ones (the Hadamard program needs depth >= 2).
_METHOD_MINIMUMS = {("flat_hadamard", "depth"): 2}
#: solver options that are finite numbers > 0.
_POSITIVE_OPTIONS = ("tolerance", "cg_tolerance", "feasibility", "time_limit")
#: solver options that are finite numbers >= 0.
_NONNEGATIVE_OPTIONS = ("eps",)
#: fields of a sweep spec that do not change its trials.
COSMETIC_FIELDS = ("description", "figure")


def _fail(path: str, requirement: str, value: Any) -> typing.NoReturn:
    raise ConfigurationError(f"{path}: {requirement}, got {value!r}")


def check_solver_options(method: str, options: Mapping[str, Any], path: str) -> None:
    """Refuse out-of-range values of the solver options shared by the built-in methods.

    Args:
        method: the method's registry name (``"module:function"`` methods are not checked).
        options: the solver's options from the spec.
        path: the options' field path, e.g. ``solvers[0].options``.

    Raises:
        ConfigurationError: ``<path>.<option>: must be ..., got <value>``.
    """
    if ":" in method:
        return
    for key, value in options.items():
        where = f"{path}.{key}"
        try:
            if key in _COUNT_OPTIONS:
                low = _METHOD_MINIMUMS.get((method, key), _COUNT_OPTIONS[key])
                check_int_in_range(key, value, low=low)
            elif key in _POSITIVE_OPTIONS:
                check_real(key, value, low=0.0, low_open=True)
            elif key in _NONNEGATIVE_OPTIONS:
                check_real(key, value, low=0.0)
        except FlatminimaError:
            if key in _COUNT_OPTIONS:
                low = _METHOD_MINIMUMS.get((method, key), _COUNT_OPTIONS[key])
                _fail(where, f"must be an integer >= {low}", value)
            strict = key in _POSITIVE_OPTIONS
            _fail(where, f"must be a finite number {'>' if strict else '>='} 0", value)


def _dims(params: Mapping[str, Any]) -> tuple[int, int]:
    if "shape" in params:
        d1, d2 = params["shape"]
        return int(d1), int(d2)
    dim = int(params.get("dim", 1))
    return dim, dim


def instance_bytes(problem: str, params: Mapping[str, Any]) -> int:
    """A lower bound on the bytes of one sampled instance of ``problem`` (float64 entries).

    Per problem: dense sensing m d1 d2 + d1 d2; bilinear sensing m (d1 + d2) + d1 d2; completion and
    robust PCA a few d1 x d2 matrices; quadratic networks m d + d^2; sparse recovery m d + d. An unknown
    problem is bounded like dense sensing. Exact integers, so overflowing counts are caught.
    """
    d1, d2 = _dims(params)
    m = int(params.get("num_measurements", 0))
    if problem == "sparse_recovery":
        entries = m * d1 + d1 + m
    elif problem == "quadratic_network":
        entries = m * d1 + d1 * d1 + m
    elif problem == "bilinear_sensing":
        entries = m * (d1 + d2) + d1 * d2 + m
    elif problem in ("matrix_completion", "robust_pca"):
        entries = 3 * d1 * d2
    else:
        entries = (m + 1) * d1 * d2 + m
    return 8 * entries


def check_instance_size(problem: str, params: Mapping[str, Any]) -> None:
    """Refuse parameters whose instance cannot be allocated (see :data:`MAX_INSTANCE_BYTES`).

    Raises:
        ConfigurationError: ``one <problem> instance needs about N GiB (...), more than the limit ...``.
    """
    size = instance_bytes(problem, params)
    if size > MAX_INSTANCE_BYTES:
        gib = f"{size / 2**30:.3g}" if size < 2**1000 else f"2^{size.bit_length() - 31}"
        raise ConfigurationError(
            f"one {problem} instance needs about {gib} GiB "
            f"({', '.join(f'{k}={v}' for k, v in params.items())}), more than the limit of "
            f"{MAX_INSTANCE_BYTES // 2**30} GiB; use smaller dimensions or fewer measurements"
        )


def _corner_cells(grid: tuple[tuple[str, tuple[Any, ...]], ...]) -> list[dict[str, Any]]:
    """The cells with every grid axis at its smallest or largest value (pairs ordered by d1 d2)."""

    def size(value: Any) -> Any:
        return value[0] * value[1] if isinstance(value, list | tuple) else value

    keys, axes = [], []
    for key, values in grid:
        low, high = min(values, key=size), max(values, key=size)
        keys.append(key)
        axes.append([low] if canonical_json(low) == canonical_json(high) else [low, high])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]


def check_cells(spec: Any, limit: int = CELL_CHECK_LIMIT) -> None:
    """Run the problem's own checks and the size check on the grid cells of ``spec`` (a SweepSpec).

    Every cell when there are at most ``limit`` cells; above, the corner cells (each axis at its smallest
    and largest value), which hold the extremes of the monotone constraints (rank <= d, instance size),
    so that validating a huge grid does not take as long as enumerating it.

    Raises:
        ConfigurationError: ``grid cell (k=v, ...): <the problem's message>``.
    """
    from flatminima.experiments.trial import make_problem

    cells = spec.iter_cells() if spec.num_cells <= limit else iter(_corner_cells(spec.grid))
    for cell in cells:
        try:
            params = spec.problem_params(cell)
            make_problem(spec.problem, params)
            check_instance_size(spec.problem, params)
        except FlatminimaError as error:
            where = ", ".join(f"{k}={v}" for k, v in cell.items()) or "fixed parameters"
            raise ConfigurationError(f"grid cell ({where}): {error}") from None


def derived_measurements(ratio: float, dim: int) -> int:
    """``num_measurements = max(1, round(ratio * dim))``, refusing a product that overflows."""
    product = ratio * dim
    if not math.isfinite(product):
        raise ConfigurationError(
            f"measurements_per_dim * dim overflows ({ratio!r} * {dim}); use a smaller ratio or dimension"
        )
    return max(1, round(product))


# ---- spec identity -------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """``value`` as its JSON round trip (tuples become lists, equal numbers compare equal)."""
    import json

    return json.loads(canonical_json(value))


def spec_differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Field paths where two specs (JSON values) differ, e.g. ``["draws", "grid.num_measurements"]``."""
    old, new = _plain(old), _plain(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            where = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(where)
            else:
                out.extend(spec_differences(old[key], new[key], where))
        return out
    same_length = isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
    if same_length and path != "" and not path.startswith("grid."):
        out = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(spec_differences(a, b, f"{path}[{index}]"))
        return out
    return [] if old == new else [path or "spec"]


def spec_grows(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True iff every trial of the stored spec ``old`` is a trial of ``new`` (a sweep that only grows).

    Growing means: more or equal draws, the same grid keys each with a superset of values, a superset of
    solvers (same name, label and options), and everything else that enters a trial equal.
    """
    old, new = _plain(dict(old)), _plain(dict(new))
    shape = ("grid", "solvers", "draws")
    if not all(isinstance(spec, dict) and all(k in spec for k in shape) for spec in (old, new)):
        return False
    fixed = (*shape, *COSMETIC_FIELDS)
    if {k: v for k, v in old.items() if k not in fixed} != {k: v for k, v in new.items() if k not in fixed}:
        return False
    if not isinstance(old["draws"], int) or not isinstance(new["draws"], int) or new["draws"] < old["draws"]:
        return False
    if not isinstance(old["grid"], dict) or not isinstance(new["grid"], dict):
        return False
    if set(old["grid"]) != set(new["grid"]):
        return False
    for key, values in old["grid"].items():
        if not {canonical_json(v) for v in values} <= {canonical_json(v) for v in new["grid"][key]}:
            return False
    return {canonical_json(s) for s in old["solvers"]} <= {canonical_json(s) for s in new["solvers"]}


def trial_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The differences of two specs that change trials (cosmetic fields left out)."""
    cosmetic = set(COSMETIC_FIELDS)
    return [p for p in spec_differences(old, new) if p.split(".")[0].split("[")[0] not in cosmetic]
