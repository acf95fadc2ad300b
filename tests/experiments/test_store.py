"""The SQLite store: WAL mode, schema version, one row per key, refusal of bad paths."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from flatminima.errors import ConfigurationError
from flatminima.experiments import SCHEMA_VERSION, Store, Trial, TrialRecord, run_trial


def _record(draw: int = 0, status: str = "ok") -> TrialRecord:
    trial = Trial(
        sweep="s",
        problem="matrix_sensing",
        params={"shape": [4, 4], "rank": 1, "num_measurements": 20},
        cell={"num_measurements": 20},
        method="least_norm",
        label="least_norm",
        options={},
        seed=0,
        draw=draw,
    )
    record = run_trial(trial)
    return dataclasses.replace(record, status=status, error=None if status == "ok" else "boom")


def test_schema_wal_and_version(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        assert store.count() == 0
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    columns = {row[1] for row in connection.execute("PRAGMA table_info(trials)")}
    assert {
        "key",
        "params",
        "metrics",
        "status",
        "error",
        "duration",
        "host",
        "version",
        "created",
    } <= columns
    connection.close()
    with Store(path) as store:  # reopening keeps the single version row
        assert store.count() == 0
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1


def test_write_once_per_key_and_read_back(tmp_path: Path) -> None:
    record = _record()
    with Store(tmp_path / "s.sqlite") as store:
        assert store.write(record) is True
        assert store.write(record) is False  # the unique key: never duplicated
        assert store.write(_record(draw=1, status="failed")) is True
        assert store.count() == 2 and store.count(status="failed") == 1 and store.count(sweep="other") == 0
        (back, failed) = store.records()
        assert back == record
        assert failed.error == "boom"
        assert store.finished_keys() == {record.key, failed.key}
        assert store.finished_keys(include_failed=False) == {record.key}
        assert store.finished_keys([record.key, "zzz"]) == {record.key}
        fixed = dataclasses.replace(failed, status="ok", error=None)
        assert store.write(fixed, replace=True) is True
        assert store.count() == 2 and store.count(status="failed") == 0
        frame = store.dataframe()
    assert list(frame["num_measurements"]) == [20, 20]
    assert list(frame["param.shape"]) == ["4x4", "4x4"]
    assert {"error", "success", "status", "error_message", "host", "version"} <= set(frame.columns)


def test_sweeps_table(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.register_sweep({"name": "a", "grid": {}})
        store.register_sweep({"name": "b", "grid": {"x": [1]}})
        store.register_sweep({"name": "a", "grid": {"y": [2]}})
        assert store.sweeps() == ["a", "b"]
        assert store.sweep_spec("a") == {"name": "a", "grid": {"y": [2]}}
        assert store.sweep_spec("c") is None


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    connection = sqlite3.connect(path)
    connection.execute("UPDATE schema_version SET version = 99")
    connection.commit()
    connection.close()
    with pytest.raises(ConfigurationError, match=r"has schema version 99; this flatminima reads version 1"):
        Store(path)


def test_unwritable_paths(tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigurationError, match=r"the folder '.*file.txt' does not exist"):
        Store(a_file / "s.sqlite")
    with pytest.raises(ConfigurationError, match=r"is a directory; give a file path"):
        Store(tmp_path)
    with pytest.raises(ConfigurationError, match=r"exists and is not a SQLite database"):
        Store(a_file)
    assert a_file.read_text() == "x"  # never overwritten
    with pytest.raises(ConfigurationError, match=r"does not exist \(run a sweep into it first\)"):
        Store(tmp_path / "missing.sqlite", create=False)
