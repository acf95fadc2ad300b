"""Parameters of a sweep's problem: the constructor fields, derived grid keys, value checks, duplicates.

``dim`` sets ``shape = (dim, dim)`` for the matrix models; ``measurements_per_dim`` sets
``num_measurements = max(1, round(ratio * d))`` (refused when the product overflows).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

from flatminima.errors import ConfigurationError
from flatminima.experiments.spec_checks import derived_measurements
from flatminima.experiments.trial import canonical_json
from flatminima.problems import PROBLEMS

#: derived grid keys: ``dim`` sets shape = (dim, dim); ``measurements_per_dim`` sets num_measurements.
DERIVED_KEYS = ("dim", "measurements_per_dim")


def _fail(path: str, requirement: str, value: Any) -> typing.NoReturn:
    raise ConfigurationError(f"{path}: {requirement}, got {value!r}")


def problem_fields(problem: str) -> dict[str, tuple[Any, bool, Any]]:
    """Map each constructor field of the problem to (type, required, default)."""
    cls = PROBLEMS[problem]
    hints = typing.get_type_hints(cls)
    out = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        out[field.name] = (hints[field.name], required, None if required else field.default)
    return out


def valid_keys(problem: str) -> list[str]:
    """The keys a spec may set for ``problem``: its fields and the derived keys it supports."""
    fields = problem_fields(problem)
    derived = ["dim"] if "shape" in fields else []
    if "num_measurements" in fields:
        derived.append("measurements_per_dim")
    return sorted([*fields, *derived])


def check_value(problem: str, key: str, value: Any, path: str) -> Any:
    """Check one parameter value's type (ranges beyond positivity are the problem's own checks)."""
    if key == "dim" or key == "measurements_per_dim":
        kind, default = (int, None) if key == "dim" else (float, None)
    else:
        kind, _, default = problem_fields(problem)[key]
    if kind is int:
        low = 0 if default == 0 else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            _fail(path, "must be a positive integer" if low else "must be a non-negative integer", value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            _fail(path, "must be a finite number", value)
        if key == "measurements_per_dim" and value <= 0:
            _fail(path, "must be a positive number", value)
        value = float(value)
    elif typing.get_origin(kind) is tuple:
        ok = isinstance(value, list) and len(value) == 2
        if not ok or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            _fail(path, "must be a pair [d1, d2] of positive integers", value)
        value = list(value)
    return value


def resolve_params(problem: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn fixed + grid values (with derived keys) into the problem's keyword arguments."""
    params = dict(values)
    fields = problem_fields(problem)
    if "dim" in params and "shape" in fields:
        dim = params.pop("dim")
        params["shape"] = [dim, dim]
    if "measurements_per_dim" in params:
        ratio = params.pop("measurements_per_dim")
        d = params["shape"][0] if "shape" in params else params.get("dim", 1)
        params["num_measurements"] = derived_measurements(ratio, d)
    return params


def duplicate_index(values: tuple[Any, ...] | list[Any]) -> tuple[int, int] | None:
    """(first, repeat) indices of the first value given twice (as JSON: 20 and 20.0 are one), or None."""
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        text = canonical_json(
            float(value) if isinstance(value, int) and not isinstance(value, bool) else value
        )
        if text in seen:
            return seen[text], index
        seen[text] = index
    return None
