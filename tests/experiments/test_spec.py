"""Sweep specifications: parsing, expansion into trials, and one-line errors naming the field path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from flatminima.errors import ConfigurationError
from flatminima.experiments import load_spec, parse_spec
from flatminima.experiments.spec import SweepSpec


def test_parse_and_expand(make_spec: Any) -> None:
    spec = parse_spec(make_spec())
    assert isinstance(spec, SweepSpec)
    assert spec.problem == "matrix_sensing"
    assert spec.cells() == [{"num_measurements": 10}, {"num_measurements": 30}]
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 2  # cells x draws x solvers
    assert len({t.key for t in trials}) == len(trials)
    assert trials[0].params == {"rank": 1, "shape": [5, 5], "num_measurements": 10}
    assert {t.label for t in trials} == {"least_norm", "flat"}


def test_derived_keys_dim_and_ratio(make_spec: Any) -> None:
    data = make_spec(
        problem={"name": "matrix_sensing", "rank": 2}, grid={"dim": [6, 8], "measurements_per_dim": [2.5, 4]}
    )
    spec = parse_spec(data)
    params = [spec.problem_params(cell) for cell in spec.cells()]
    assert params[0] == {"rank": 2, "shape": [6, 6], "num_measurements": 15}
    assert params[-1] == {"rank": 2, "shape": [8, 8], "num_measurements": 32}


def test_keys_are_stable_and_round_trip(make_spec: Any) -> None:
    spec = parse_spec(make_spec())
    again = parse_spec(spec.to_dict())
    assert [t.key for t in spec.trials()] == [t.key for t in again.trials()]
    other_seed = parse_spec(make_spec(seed=4))
    assert not {t.key for t in spec.trials()} & {t.key for t in other_seed.trials()}


def test_load_spec_reads_toml(make_spec: Any, write_spec: Any) -> None:
    spec = load_spec(
        write_spec(
            make_spec(solvers=["least_norm", {"name": "flat", "label": "f", "options": {"tolerance": 1e-9}}])
        )
    )
    assert [s.label for s in spec.solvers] == ["least_norm", "f"]
    assert spec.solvers[1].options == {"tolerance": 1e-9}


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigurationError) as info:
        parse_spec(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_negative_grid_value_names_path(make_spec: Any) -> None:
    data = make_spec(grid={"num_measurements": [10, 20, 30, -5]})
    assert _error(data) == "grid.num_measurements[3]: must be a positive integer, got -5"


def test_negative_dimension(make_spec: Any) -> None:
    data = make_spec(problem={"name": "matrix_sensing", "rank": 1, "dim": -4})
    assert _error(data) == "problem.dim: must be a positive integer, got -4"


def test_unknown_problem_lists_valid(make_spec: Any) -> None:
    message = _error(make_spec(problem={"name": "matrix_sensin", "rank": 1}))
    assert message.startswith("problem.name: must be one of ")
    assert "matrix_sensing" in message and "quadratic_network" in message
    assert message.endswith("got 'matrix_sensin'")


def test_unknown_solver_lists_valid(make_spec: Any) -> None:
    message = _error(make_spec(solvers=["least_norm", "flatt"]))
    assert message.startswith("solvers[1].name: unknown solver 'flatt'; valid: ")
    assert "nuclear_norm" in message and "flat_cvxpy" in message


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"draws": 0}, r"^draws: must be a positive integer, got 0$"),
        ({"seed": -1}, r"^seed: must be a non-negative integer, got -1$"),
        ({"truth": "grid"}, r"^truth: must be one of cell, draw, got 'grid'$"),
        ({"tolerance": -1.0}, r"^tolerance: must be a positive number, got -1.0$"),
        ({"name": "bad name"}, r"^name: must be a name of .*, got 'bad name'$"),
        ({"colour": 1}, r"^colour: unknown key \(valid: name, .*\), got 1$"),
        ({"grid": {"num_measurements": []}}, r"^grid.num_measurements: must be a non-empty list, got \[\]$"),
        ({"grid": {"num_measurements": 10}}, r"^grid.num_measurements: must be a non-empty list, got 10$"),
        (
            {"grid": {"rnak": [1]}},
            r"^grid.rnak: unknown parameter of matrix_sensing \(valid: .*rank.*\), got \[1\]$",
        ),
        ({"grid": {"rank": [1]}}, r"^grid.rank: is also set in \[problem\]; set it in one place, got \[1\]$"),
        (
            {"grid": {"num_measurements": [2.5]}},
            r"^grid.num_measurements\[0\]: must be a positive integer, got 2.5$",
        ),
        ({"solvers": []}, r"^solvers: must be a non-empty list of solver names or tables, got \[\]$"),
        (
            {"solvers": ["flat", "flat"]},
            r"^solvers\[1\].label: must be unique among the solvers .*, got 'flat'$",
        ),
        (
            {"solvers": ["flat_hadamard"]},
            r"^solvers\[0\].name: solver 'flat_hadamard' does not accept problem",
        ),
        (
            {"solvers": [{"name": "least_norm", "options": {"cg_tol": 1.0}}]},
            r"^solvers\[0\].options.cg_tol: unknown option of 'least_norm' \(valid: cg_tolerance\), got 1.0$",
        ),
        (
            {"solvers": [{"name": "least_norm", "options": {"cg_tolerance": "x"}}]},
            r"^solvers\[0\].options.cg_tolerance: must be of type float, got 'x'$",
        ),
        (
            {"solvers": [{"name": "flat", "options": {"tolerence": 1e-9}}]},
            r"^solvers\[0\].options.tolerence: unknown solver option; valid: .*tolerance",
        ),
        ({"figure": {"kind": "pie"}}, r"^figure.kind: must be one of success, .*, got 'pie'$"),
        ({"figure": {"x": "dim"}}, r"^figure.x: must be a grid key \(num_measurements\), got 'dim'$"),
    ],
)
def test_invalid_fields(make_spec: Any, override: dict[str, Any], pattern: str) -> None:
    assert re.search(pattern, _error(make_spec(**override)))


def test_missing_problem_parameter(make_spec: Any) -> None:
    data = make_spec(problem={"name": "matrix_sensing", "dim": 5})
    assert (
        _error(data)
        == "problem: misses the parameter 'rank' of matrix_sensing (set it in [problem] or [grid]), got None"
    )


def test_problem_checks_run_on_every_cell(make_spec: Any) -> None:
    data = make_spec(
        problem={"name": "matrix_sensing", "dim": 5}, grid={"rank": [1, 9], "num_measurements": [10]}
    )
    message = _error(data)
    assert message.startswith("grid cell (rank=9, num_measurements=10): rank must satisfy 1 <= rank")


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[problem\nname = 1\n')
    with pytest.raises(ConfigurationError, match=r"bad.toml: invalid TOML: .*line 2") as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot read sweep file '.*nope.toml'"):
        load_spec(tmp_path / "nope.toml")


def test_the_example_sweep_file_is_valid() -> None:
    """examples/sweep_completion.toml (referenced by the README) parses and expands into trials."""
    spec = load_spec(Path(__file__).parents[2] / "examples" / "sweep_completion.toml")
    assert spec.name == "completion-example"
    assert len(spec.trials()) == 2 * 4 * 5 * 2  # dims x probabilities x draws x solvers
