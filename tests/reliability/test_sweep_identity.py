"""Sweep identity and bounds: a changed spec never mixes with stored trials under one name, counts equal
distinct trials, huge grids are refused at once, and bad values are refused before anything runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from flatminima.errors import ConfigurationError
from flatminima.experiments import (
    MAX_TRIALS,
    InProcessExecutor,
    Store,
    SweepSpecMismatch,
    check_trial_limit,
    load_spec,
    parse_spec,
    run_sweep,
)
from flatminima.experiments.spec import SweepSpec


def _spec(**overrides: Any) -> dict[str, Any]:
    """Gaussian sensing, d = 4, rank 1, m in {12, 20}, least_norm, 2 draws: 4 trials of milliseconds."""
    data: dict[str, Any] = {
        "name": "ident",
        "seed": 1,
        "draws": 2,
        "problem": {"name": "matrix_sensing", "rank": 1, "dim": 4},
        "grid": {"num_measurements": [12, 20]},
        "solvers": ["least_norm"],
    }
    data.update(overrides)
    return data


def _run(store: Store, data: dict[str, Any], **options: Any) -> Any:
    return run_sweep(parse_spec(data), store, executor=InProcessExecutor(), progress=False, **options)


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigurationError) as info:
        parse_spec(data)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- identity -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "paths"),
    [
        ({"grid": {"num_measurements": [12, 16]}}, "grid.num_measurements"),
        ({"tolerance": 1e-3}, "tolerance"),
        ({"seed": 2}, "seed"),
        ({"draws": 1}, "draws"),
        ({"solvers": [{"name": "least_norm", "options": {"cg_tolerance": 1e-10}}]}, "solvers[0].options"),
        ({"problem": {"name": "matrix_sensing", "rank": 2, "dim": 4}}, "problem.rank"),
    ],
)
def test_changed_spec_under_a_stored_name_is_refused(
    tmp_path: Path, change: dict[str, Any], paths: str
) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        _run(store, _spec())
        stored = store.sweep_spec("ident")
        with pytest.raises(SweepSpecMismatch) as info:
            _run(store, _spec(**change))
        message = str(info.value)
        assert message.startswith(f"sweep 'ident' is stored with a different spec (differs in: {paths}")
        assert "its 4 stored trials would be mixed" in message and "new name" in message
        assert "\n" not in message and isinstance(info.value, ConfigurationError)
        assert store.sweep_spec("ident") == stored and store.count() == 4  # nothing changed or run


def test_same_cosmetic_or_growing_spec_resumes(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        assert _run(store, _spec()).completed == 4
        again = _run(store, _spec(description="now with a caption", figure={"kind": "table"}))
        assert (again.skipped, again.completed) == (4, 0)
        assert store.sweep_spec("ident")["description"] == "now with a caption"
        grown = _run(store, _spec(draws=3, grid={"num_measurements": [20, 12, 30]}))
        assert (grown.total, grown.skipped, grown.completed) == (9, 4, 5)
        assert store.count("ident") == 9 and store.sweep_spec("ident")["draws"] == 3
        with pytest.raises(SweepSpecMismatch, match=r"differs in: draws, grid.num_measurements\)"):
            _run(store, _spec())  # shrinking back would leave 5 stored trials outside the spec


def test_rename_then_reuse_the_name(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        _run(store, _spec())
        assert store.rename_sweep("ident", "ident-v1") == 4
        assert store.sweeps() == ["ident-v1"] and store.count("ident") == 0
        moved = _run(store, _spec(name="ident-v1"))  # the renamed rows are exactly that spec's trials
        assert (moved.skipped, moved.completed) == (4, 0)
        changed = _run(store, _spec(tolerance=1e-3))
        assert (changed.skipped, changed.completed) == (0, 4)
        assert store.count("ident") == 4 and store.count() == 8
        with pytest.raises(ConfigurationError, match=r"sweep 'ident' already exists"):
            store.rename_sweep("ident-v1", "ident")
        with pytest.raises(ConfigurationError, match=r"sweep 'nope' is not in store"):
            store.rename_sweep("nope", "x")


def test_duplicate_grid_values_are_refused() -> None:
    message = _error(_spec(grid={"num_measurements": [20, 12, 20]}))
    assert (
        message == "grid.num_measurements[2]: repeats grid.num_measurements[0] (give each value once), got 20"
    )
    ratio = _error(
        _spec(
            problem={"name": "matrix_sensing", "rank": 1}, grid={"dim": [4], "measurements_per_dim": [2, 2.0]}
        )
    )
    assert ratio.startswith("grid.measurements_per_dim[1]: repeats grid.measurements_per_dim[0]")
    spec = parse_spec(_spec())
    with pytest.raises(ConfigurationError, match=r"grid.num_measurements\[1\]: repeats"):
        SweepSpec(
            name="direct",
            problem=spec.problem,
            fixed=spec.fixed,
            grid=(("num_measurements", (12, 12)),),
            solvers=spec.solvers,
        )


def test_counts_are_distinct_trials(tmp_path: Path) -> None:
    spec = parse_spec(_spec(draws=3, solvers=["least_norm", {"name": "least_norm", "label": "ln2"}]))
    keys = [t.key for t in spec.iter_trials()]
    assert spec.num_trials == len(keys) == len(set(keys)) == 12
    with Store(tmp_path / "s.sqlite") as store:
        result = run_sweep(spec, store, executor=InProcessExecutor(), progress=False)
        assert result.total == result.completed == store.count("ident") == 12


# ---- bounds ---------------------------------------------------------------------------------------
def _huge() -> dict[str, Any]:
    values = list(range(20, 2020))  # 2000 x 2000 cells x 300 draws = 1.2e9 trials
    return _spec(draws=300, grid={"num_measurements": values, "noise_std": [i / 1000 for i in range(2000)]})


def test_billions_of_trials_are_refused_at_once(tmp_path: Path) -> None:
    start = time.perf_counter()
    spec = parse_spec(_huge())
    assert spec.num_trials == 2000 * 2000 * 300
    first = next(spec.iter_trials())  # lazy: the first trial without building the rest
    assert first.draw == 0 and first.cell == {"num_measurements": 20, "noise_std": 0.0}
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(ConfigurationError) as info:
            run_sweep(spec, store, executor=InProcessExecutor(), progress=False)
        assert str(info.value) == (
            f"sweep ident has 1200000000 trials, more than the limit {MAX_TRIALS}; "
            "pass --max-trials 1200000000 to run it anyway"
        )
        assert store.sweeps() == [] and store.count() == 0  # nothing registered or run
    assert time.perf_counter() - start < 5.0


def test_max_trials_override(tmp_path: Path) -> None:
    spec = parse_spec(_spec())
    with pytest.raises(ConfigurationError, match=r"has 4 trials, more than the limit 3; pass --max-trials 4"):
        check_trial_limit(spec, 3)
    with pytest.raises(ConfigurationError, match=r"max_trials: must be a positive integer, got 0"):
        check_trial_limit(spec, 0)
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(ConfigurationError, match=r"more than the limit 3"):
            run_sweep(spec, store, executor=InProcessExecutor(), progress=False, max_trials=3)
        assert store.sweeps() == []
        assert (
            run_sweep(spec, store, executor=InProcessExecutor(), progress=False, max_trials=4).completed == 4
        )


# ---- validation before anything runs --------------------------------------------------------------
@pytest.mark.parametrize(
    ("solver", "expected"),
    [
        (
            {"name": "flat", "options": {"max_iterations": -5}},
            "solvers[0].options.max_iterations: must be an integer >= 1, got -5",
        ),
        (
            {"name": "flat", "options": {"tolerance": float("nan")}},
            "solvers[0].options.tolerance: must be a finite number > 0, got nan",
        ),
        (
            {"name": "nuclear_norm", "options": {"tolerance": float("inf")}},
            "solvers[0].options.tolerance: must be a finite number > 0, got inf",
        ),
        (
            {"name": "flat", "options": {"time_limit": -1}},
            "solvers[0].options.time_limit: must be a finite number > 0, got -1",
        ),
        (
            {"name": "flat", "options": {"eps": -0.5}},
            "solvers[0].options.eps: must be a finite number >= 0, got -0.5",
        ),
        (
            {"name": "least_norm", "options": {"cg_tolerance": 0.0}},
            "solvers[0].options.cg_tolerance: must be a finite number > 0, got 0.0",
        ),
    ],
)
def test_bad_solver_options(solver: dict[str, Any], expected: str) -> None:
    assert _error(_spec(solvers=[solver])) == expected


def test_bad_sizes_and_top_level_values() -> None:
    huge_dim = _error(_spec(problem={"name": "matrix_sensing", "rank": 1, "dim": 10**9}))
    assert huge_dim.startswith("grid cell (num_measurements=12): one matrix_sensing instance needs about")
    assert "more than the limit of 64 GiB" in huge_dim
    overflow = _error(_spec(grid={"num_measurements": [12, 10**30]}))
    assert overflow.startswith("grid cell (num_measurements=1000000000000000000000000000000): one matrix")
    ratio = _error(
        _spec(
            problem={"name": "matrix_sensing", "rank": 1}, grid={"dim": [4], "measurements_per_dim": [1e308]}
        )
    )
    assert "measurements_per_dim * dim overflows" in ratio
    assert _error(_spec(tolerance=float("inf"))) == "tolerance: must be a finite positive number, got inf"
    assert _error(_spec(tolerance=float("nan"))) == "tolerance: must be a finite positive number, got nan"


def test_large_grids_are_validated_at_their_corners() -> None:
    start = time.perf_counter()
    bad = _huge()
    bad["grid"]["num_measurements"][-1] = 10**25  # only the largest value is too large
    assert "one matrix_sensing instance needs about" in _error(bad)
    assert time.perf_counter() - start < 5.0


def test_spec_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigurationError) as info:
        load_spec(path)
    message = str(info.value)
    assert message == (
        f"sweep file {str(path)!r} is not UTF-8 text (byte 0xe9 at offset 11); TOML files are UTF-8"
    )
