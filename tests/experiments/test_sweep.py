"""Sweeps in-process: store every trial once, resume, retry failures, export and plot from the store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas
import pytest

from flatminima.errors import ConfigurationError
from flatminima.experiments import (
    METHODS,
    InProcessExecutor,
    Method,
    MethodContext,
    Store,
    parse_spec,
    run_sweep,
)
from flatminima.experiments.runner import export_store, plot_store


def test_sweep_stores_every_trial_once_and_resumes(tmp_path: Path, make_spec: Any) -> None:
    spec = parse_spec(make_spec())
    with Store(tmp_path / "s.sqlite") as store:
        result = run_sweep(spec, store, executor=InProcessExecutor(), progress=False)
        assert (result.total, result.skipped, result.completed, result.failed) == (8, 0, 8, 0)
        assert result.trials_per_second > 0 and result.executor == "in-process"
        assert store.finished_keys() == {t.key for t in spec.trials()}
        again = run_sweep(spec, store, executor=InProcessExecutor(), progress=False)
        assert (again.skipped, again.completed) == (8, 0)
        assert store.count() == 8
        frame = store.dataframe(spec.name)
    # m = 30 > d^2 = 25 measurements: every solver recovers; m = 10 < 2 r d: no solver does.
    success = frame.groupby("num_measurements")["success"].mean()
    assert success[30] == 1.0 and success[10] == 0.0


def test_sweep_grows_with_the_spec(tmp_path: Path, make_spec: Any) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        run_sweep(parse_spec(make_spec(draws=1)), store, executor=InProcessExecutor(), progress=False)
        grown = run_sweep(parse_spec(make_spec(draws=2)), store, executor=InProcessExecutor(), progress=False)
        assert (grown.skipped, grown.completed) == (4, 4)
        assert store.count() == 8


@pytest.fixture
def flaky_method() -> Iterator[list[bool]]:
    """A registered method that fails while ``switch[0]`` is True."""
    switch = [True]

    def run(instance: Any, options: Mapping[str, Any], context: MethodContext) -> dict[str, Any]:
        if switch[0]:
            raise ValueError("flaky failure")
        return {"error": 0.0}

    METHODS["test_flaky"] = Method(name="test_flaky", summary="test", function=run)
    yield switch
    del METHODS["test_flaky"]


def test_failures_are_stored_and_the_sweep_goes_on(
    tmp_path: Path, make_spec: Any, flaky_method: list[bool]
) -> None:
    spec = parse_spec(make_spec(solvers=["least_norm", "test_flaky"]))
    with Store(tmp_path / "s.sqlite") as store:
        result = run_sweep(spec, store, executor=InProcessExecutor(), progress=False)
        assert (result.completed, result.failed) == (8, 4)
        failed = store.records(status="failed")
        assert {r.error for r in failed} == {"ValueError: flaky failure"}
        assert run_sweep(spec, store, executor=InProcessExecutor(), progress=False).completed == 0
        flaky_method[0] = False
        retried = run_sweep(spec, store, executor=InProcessExecutor(), progress=False, retry_failed=True)
        assert (retried.completed, retried.failed) == (4, 0)
        assert store.count() == 8 and store.count(status="failed") == 0


def test_executor_exception_becomes_a_failed_record(tmp_path: Path, make_spec: Any) -> None:
    class Broken(InProcessExecutor):
        def map_unordered(self, function: Any, items: Any) -> Iterator[tuple[Any, Any]]:
            for item in items:
                yield item, RuntimeError("worker lost")

    spec = parse_spec(make_spec())
    with Store(tmp_path / "s.sqlite") as store:
        result = run_sweep(spec, store, executor=Broken(), progress=False)
        assert result.failed == 8
        assert store.records()[0].error == "task failed on the executor: RuntimeError: worker lost"


def test_progress_bar_runs(tmp_path: Path, make_spec: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec = parse_spec(make_spec(draws=1))
    with Store(tmp_path / "s.sqlite") as store:
        run_sweep(spec, store, executor=InProcessExecutor(), progress=True)
    err = capsys.readouterr().err
    assert "done 4" in err and "failed 0" in err and "remaining 0" in err


def test_export_csv_and_parquet(tmp_path: Path, make_spec: Any) -> None:
    spec = parse_spec(make_spec())
    with Store(tmp_path / "s.sqlite") as store:
        run_sweep(spec, store, executor=InProcessExecutor(), progress=False)
    path, rows = export_store(tmp_path / "s.sqlite", tmp_path / "out.csv")
    assert rows == 8
    csv = pandas.read_csv(path)
    assert len(csv) == 8 and {"key", "label", "error", "success", "status", "host"} <= set(csv.columns)
    path, rows = export_store(tmp_path / "s.sqlite", tmp_path / "out.parquet", sweep="tiny")
    parquet = pandas.read_parquet(path)
    assert sorted(parquet["key"]) == sorted(csv["key"])
    with pytest.raises(ConfigurationError, match=r"must end in .csv or .parquet"):
        export_store(tmp_path / "s.sqlite", tmp_path / "out.xlsx")
    with pytest.raises(ConfigurationError, match=r"--sweep 'nope': not in the store; stored: tiny"):
        export_store(tmp_path / "s.sqlite", tmp_path / "out.csv", sweep="nope")


def test_plot_store_draws_each_sweep(tmp_path: Path, make_spec: Any) -> None:
    two_d = make_spec(
        name="grid2",
        problem={"name": "matrix_sensing", "rank": 1},
        grid={"dim": [4, 5], "num_measurements": [10, 30]},
        draws=1,
    )
    with Store(tmp_path / "s.sqlite") as store:
        run_sweep(parse_spec(make_spec(draws=1)), store, executor=InProcessExecutor(), progress=False)
        run_sweep(parse_spec(two_d), store, executor=InProcessExecutor(), progress=False)
    paths = plot_store(tmp_path / "s.sqlite", tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["grid2.png", "tiny.png"]
    assert all(p.stat().st_size > 5000 for p in paths)
    assert sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 12
