"""Sweep specifications: TOML files validated into typed, frozen objects that expand into trials.

A sweep is the Cartesian product of a grid of problem parameters, times ``draws`` measurement draws per
grid cell, times a list of solvers (methods)::

    name = "sensing-small"        # letters, digits, '.', '_', '-'
    description = "Gaussian sensing, rank 2"
    seed = 0                      # base seed of every random stream (>= 0)
    draws = 10                    # draws per grid cell and solver (>= 1)
    truth = "cell"                # one ground truth per grid cell ("cell") or per draw ("draw")
    tolerance = 1e-6              # success iff ||X - M||_F < tolerance

    [problem]                     # a name from flatminima.problems.PROBLEMS and fixed parameters
    name = "matrix_sensing"
    rank = 2

    [grid]                        # swept parameters, each a non-empty list
    dim = [10, 20, 30]            # shape = (dim, dim) for the matrix models
    measurements_per_dim = [2, 4, 8]   # num_measurements = round(ratio * d)

    [[solvers]]                   # or: solvers = ["flat", "nuclear_norm"]
    name = "flat"
    options = { }                 # passed to the method
    label = "flat"                # defaults to name; labels are unique

    [figure]                      # optional: how `flatminima plot` draws the sweep
    kind = "success"              # success | regularity | hadamard | deep | table
    x = "dim"
    y = "measurements_per_dim"

Every error is one line naming the field path, the requirement and the value, e.g.
``grid.num_measurements[3]: must be a positive integer, got -5``. ``parse_spec`` also refuses what
could only fail later (:mod:`~flatminima.experiments.spec_checks`): out-of-range solver options, cells
too large to allocate, and a grid value given twice (refused, not dropped, so that the announced count
of trials is the count of distinct trials stored). :attr:`SweepSpec.num_trials` is arithmetic and
:meth:`SweepSpec.iter_trials` lazy; ``run_sweep`` refuses more than :data:`MAX_TRIALS` unless told.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import tomllib
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from flatminima._checks import check_real
from flatminima.errors import ConfigurationError, FlatminimaError
from flatminima.experiments.methods import resolve_method
from flatminima.experiments.spec_checks import check_cells, check_solver_options
from flatminima.experiments.spec_params import (
    DERIVED_KEYS,
    check_value,
    duplicate_index,
    problem_fields,
    resolve_params,
    valid_keys,
)
from flatminima.experiments.trial import TRUTH_MODES, Trial
from flatminima.problems import PROBLEMS

__all__ = [
    "DERIVED_KEYS",
    "MAX_TRIALS",
    "SolverSpec",
    "SweepSpec",
    "load_spec",
    "parse_spec",
    "resolve_params",
]

#: ``run_sweep`` refuses a sweep of more trials than this unless given ``max_trials``.
MAX_TRIALS = 1_000_000

FIGURE_KINDS = ("success", "regularity", "hadamard", "deep", "table")
_TOP_KEYS = (
    "name",
    "description",
    "seed",
    "draws",
    "truth",
    "tolerance",
    "problem",
    "grid",
    "solvers",
    "figure",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def _fail(path: str, requirement: str, value: Any) -> typing.NoReturn:
    raise ConfigurationError(f"{path}: {requirement}, got {value!r}")


def _refuse_repeats(key: str, checked: Sequence[Any], given: Sequence[Any]) -> None:
    """Refuse a grid axis that gives a value twice (it would repeat trials with the same keys)."""
    repeat = duplicate_index(tuple(checked))
    if repeat is not None:
        _fail(
            f"grid.{key}[{repeat[1]}]",
            f"repeats grid.{key}[{repeat[0]}] (give each value once)",
            given[repeat[1]],
        )


@dataclasses.dataclass(frozen=True)
class SolverSpec:
    """One solver of a sweep: a method name, its label and its options."""

    name: str
    label: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep (see the module docstring for the TOML form).

    Attributes:
        name: the sweep's name (rows of the store carry it).
        problem: the problem's registry name.
        fixed: the problem parameters shared by every cell.
        grid: (key, values) pairs; the cells are their Cartesian product in this order.
        solvers: the solvers, each run on every draw.
        draws: draws per cell and solver.
        seed: base seed.
        truth: ``"cell"`` or ``"draw"``.
        tolerance: success threshold on ||X - M||_F.
        description: free text (figure captions).
        figure: plotting hints (``kind``, ``x``, ``y``).
    """

    name: str
    problem: str
    fixed: Mapping[str, Any]
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    solvers: tuple[SolverSpec, ...]
    draws: int = 1
    seed: int = 0
    truth: str = "cell"
    tolerance: float = 1e-6
    description: str = ""
    figure: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, values in self.grid:  # a repeated value would repeat trials (same keys)
            _refuse_repeats(key, values, values)
        labels = [s.label for s in self.solvers]
        if len(set(labels)) != len(labels):
            _fail("solvers", "must have unique labels", labels)

    @property
    def num_cells(self) -> int:
        """Number of grid cells (the product of the grid's lengths; 1 for an empty grid)."""
        return math.prod(len(values) for _, values in self.grid)

    @property
    def num_trials(self) -> int:
        """Number of (distinct) trials: cells x draws x solvers, computed without building them."""
        return self.num_cells * self.draws * len(self.solvers)

    def iter_cells(self) -> Iterator[dict[str, Any]]:
        """The grid cells in order, one at a time (one empty cell for an empty grid)."""
        keys = [key for key, _ in self.grid]
        for values in itertools.product(*(v for _, v in self.grid)):
            yield dict(zip(keys, values, strict=True))

    def cells(self) -> list[dict[str, Any]]:
        """The grid cells in order (a list; see :meth:`iter_cells`)."""
        return list(self.iter_cells())

    def problem_params(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        """The problem's keyword arguments (JSON values) in one cell."""
        return resolve_params(self.problem, {**self.fixed, **cell})

    def iter_trials(self) -> Iterator[Trial]:
        """Every trial, lazily: cells x draws x solvers (solvers inner to draws, so cells finish together)."""
        for cell in self.iter_cells():
            params = self.problem_params(cell)
            for draw in range(self.draws):
                for solver in self.solvers:
                    yield Trial(
                        sweep=self.name,
                        problem=self.problem,
                        params=params,
                        cell=dict(cell),
                        method=solver.name,
                        label=solver.label,
                        options=dict(solver.options),
                        seed=self.seed,
                        draw=draw,
                        truth=self.truth,
                        tolerance=self.tolerance,
                    )

    def trials(self) -> list[Trial]:
        """Every trial as a list (see :meth:`iter_trials`; prefer it for large sweeps)."""
        return list(self.iter_trials())

    def to_dict(self) -> dict[str, Any]:
        """The spec in its TOML shape (plain values); :func:`parse_spec` reads it back."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "draws": self.draws,
            "truth": self.truth,
            "tolerance": self.tolerance,
            "problem": {"name": self.problem, **self.fixed},
            "grid": {key: list(values) for key, values in self.grid},
            "solvers": [{"name": s.name, "label": s.label, "options": dict(s.options)} for s in self.solvers],
        }
        if self.figure:
            out["figure"] = dict(self.figure)
        return out


# ---- parsing -------------------------------------------------------------------------------------
def _integer(data: Mapping[str, Any], key: str, default: int, low: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(key, "must be a positive integer" if low else "must be a non-negative integer", value)
    return int(value)


def _solvers(raw: Any, problem: str) -> tuple[SolverSpec, ...]:
    if not isinstance(raw, list) or not raw:
        _fail("solvers", "must be a non-empty list of solver names or tables", raw)
    out: list[SolverSpec] = []
    for index, entry in enumerate(raw):
        path = f"solvers[{index}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping):
            _fail(path, "must be a solver name or a table with name, label, options", entry)
        unknown = set(entry) - {"name", "label", "options"}
        if unknown:
            _fail(
                f"{path}.{sorted(unknown)[0]}",
                "unknown key (valid: name, label, options)",
                sorted(unknown)[0],
            )
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            _fail(f"{path}.name", "must be a solver name", name)
        try:
            method = resolve_method(name)
        except ConfigurationError as error:
            raise ConfigurationError(f"{path}.name: {error}") from None
        if method.kinds is not None and problem not in method.kinds:
            _fail(
                f"{path}.name",
                f"solver {name!r} does not accept problem {problem!r} (it accepts {', '.join(method.kinds)})",
                name,
            )
        label = entry.get("label", name)
        if not isinstance(label, str) or not _LABEL.match(label):
            _fail(f"{path}.label", "must be a name of letters, digits, '.', '_', '=', '+', '-'", label)
        if any(s.label == label for s in out):
            _fail(f"{path}.label", "must be unique among the solvers (set label = ...)", label)
        options = entry.get("options", {})
        if not isinstance(options, Mapping):
            _fail(f"{path}.options", "must be a table", options)
        for key, value in options.items():
            if "*" in method.options:
                continue
            if key not in method.options:
                valid = ", ".join(sorted(method.options)) or "none"
                _fail(f"{path}.options.{key}", f"unknown option of {name!r} (valid: {valid})", value)
            kind = method.options[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                _fail(f"{path}.options.{key}", f"must be of type {kind.__name__}", value)
        if method.check_options is not None:
            try:
                method.check_options(options)
            except ConfigurationError as error:
                raise ConfigurationError(f"{path}.options.{error}") from None
        check_solver_options(name, options, f"{path}.options")
        out.append(SolverSpec(name=name, label=label, options=dict(options)))
    return tuple(out)


def parse_spec(data: Mapping[str, Any]) -> SweepSpec:
    """Validate a sweep given as a mapping (the parsed TOML) into a :class:`SweepSpec`.

    Raises:
        ConfigurationError: one line naming the field path, the requirement and the value.
    """
    if not isinstance(data, Mapping):
        _fail("spec", "must be a table", data)
    for key in data:
        if key not in _TOP_KEYS:
            _fail(key, f"unknown key (valid: {', '.join(_TOP_KEYS)})", data[key])
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        _fail("name", "must be a name of letters, digits, '.', '_', '-', '/'", name)
    description = data.get("description", "")
    if not isinstance(description, str):
        _fail("description", "must be a string", description)
    seed = _integer(data, "seed", 0, 0)
    draws = _integer(data, "draws", 1, 1)
    truth = data.get("truth", "cell")
    if truth not in TRUTH_MODES:
        _fail("truth", f"must be one of {', '.join(TRUTH_MODES)}", truth)
    tolerance = data.get("tolerance", 1e-6)
    try:
        check_real("tolerance", tolerance, low=0.0, low_open=True)
    except FlatminimaError:
        finite = isinstance(tolerance, int | float) and math.isfinite(tolerance)
        _fail(
            "tolerance",
            "must be a positive number" if finite else "must be a finite positive number",
            tolerance,
        )

    problem_table = data.get("problem")
    if not isinstance(problem_table, Mapping):
        _fail("problem", "must be a table with a name", problem_table)
    problem = problem_table.get("name")
    if problem not in PROBLEMS:
        _fail("problem.name", f"must be one of {', '.join(sorted(PROBLEMS))}", problem)
    valid = valid_keys(problem)
    fixed: dict[str, Any] = {}
    for key, value in problem_table.items():
        if key == "name":
            continue
        if key not in valid:
            _fail(f"problem.{key}", f"unknown parameter of {problem} (valid: {', '.join(valid)})", value)
        fixed[key] = check_value(problem, key, value, f"problem.{key}")

    grid_table = data.get("grid", {})
    if not isinstance(grid_table, Mapping):
        _fail("grid", "must be a table of lists", grid_table)
    grid: list[tuple[str, tuple[Any, ...]]] = []
    for key, values in grid_table.items():
        if key not in valid:
            _fail(f"grid.{key}", f"unknown parameter of {problem} (valid: {', '.join(valid)})", values)
        if key in fixed:
            _fail(f"grid.{key}", "is also set in [problem]; set it in one place", values)
        if not isinstance(values, list) or not values:
            _fail(f"grid.{key}", "must be a non-empty list", values)
        checked = tuple(check_value(problem, key, v, f"grid.{key}[{i}]") for i, v in enumerate(values))
        _refuse_repeats(key, checked, values)
        grid.append((key, checked))

    present = set(fixed) | {k for k, _ in grid}
    fields = problem_fields(problem)
    aliases = {"shape": "dim", "num_measurements": "measurements_per_dim"}
    for field, (_, required, _) in fields.items():
        if required and field not in present and aliases.get(field) not in present:
            _fail(
                "problem",
                f"misses the parameter {field!r} of {problem} (set it in [problem] or [grid])",
                None,
            )

    solvers = _solvers(data.get("solvers"), problem)
    figure = data.get("figure", {})
    if not isinstance(figure, Mapping):
        _fail("figure", "must be a table", figure)
    if "kind" in figure and figure["kind"] not in FIGURE_KINDS:
        _fail("figure.kind", f"must be one of {', '.join(FIGURE_KINDS)}", figure["kind"])
    for axis in ("x", "y"):
        if axis in figure and figure[axis] not in {k for k, _ in grid}:
            _fail(
                f"figure.{axis}",
                f"must be a grid key ({', '.join(k for k, _ in grid) or 'none'})",
                figure[axis],
            )

    spec = SweepSpec(
        name=name,
        problem=problem,
        fixed=fixed,
        grid=tuple(grid),
        solvers=solvers,
        draws=draws,
        seed=seed,
        truth=truth,
        tolerance=float(tolerance),
        description=description,
        figure=dict(figure),
    )
    check_cells(spec)  # the problem's own checks (rank <= d, probability <= 1, ...) and sizes
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a TOML sweep file.

    Raises:
        ConfigurationError: unreadable file, not UTF-8, invalid TOML (with line and column), or invalid
            content.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"cannot read sweep file {str(path)!r}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigurationError(
            f"sweep file {str(path)!r} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}); TOML files are UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{path}: invalid TOML: {error}") from None
    return parse_spec(data)
