"""Shared helpers of the experiments tests: small sweep specs and a TOML writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def to_toml(data: dict[str, Any]) -> str:
    """A tiny TOML writer for the spec shapes used in the tests (tables, arrays of tables, scalars)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict | list) or k == "solvers"]
    lines = [line for line in lines if not line.startswith("solvers")]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    for solver in data.get("solvers", []):
        lines.append("[[solvers]]")
        entry = {"name": solver} if isinstance(solver, str) else solver
        lines += [f"{k} = {value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def sensing_spec(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """Gaussian sensing, rank 1, d = 5, m in {10, 30}, least_norm + flat, 2 draws: 8 trials."""
    spec: dict[str, Any] = {
        "name": name,
        "seed": 3,
        "draws": 2,
        "problem": {"name": "matrix_sensing", "rank": 1, "dim": 5},
        "grid": {"num_measurements": [10, 30]},
        "solvers": ["least_norm", "flat"],
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def make_spec() -> Any:
    """Factory of small sweep specs (see :func:`sensing_spec`)."""
    return sensing_spec


@pytest.fixture
def write_spec(tmp_path: Path) -> Any:
    """Write a spec mapping as TOML under tmp_path and return the path."""

    def write(data: dict[str, Any], name: str = "spec.toml") -> Path:
        path = tmp_path / name
        path.write_text(to_toml(data))
        return path

    return write
