"""Store misuse: read-only opening leaves no trace, files that are not stores are refused and left
byte-identical, unwritable places give one-line errors, and stores of the previous layout stay readable."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flatminima.errors import ConfigurationError
from flatminima.experiments import InProcessExecutor, Store, parse_spec, run_sweep

_SPEC = {
    "name": "misuse",
    "draws": 3,
    "problem": {"name": "matrix_sensing", "rank": 1, "dim": 4},
    "grid": {"num_measurements": [20]},
    "solvers": ["least_norm"],
}

#: the schema of stores written before claims existed (schema version 1, no claims table).
_PREVIOUS_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE sweeps (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, sweep TEXT NOT NULL,
    params TEXT NOT NULL, metrics TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT, duration REAL NOT NULL, host TEXT NOT NULL, version TEXT NOT NULL, created TEXT NOT NULL
);
CREATE INDEX trials_sweep ON trials (sweep);
INSERT INTO schema_version (version) VALUES (1);
INSERT INTO sweeps VALUES ('old', '{"name":"old"}', '2024-01-01T00:00:00', '2024-01-01T00:00:00');
INSERT INTO trials (key, sweep, params, metrics, status, error, duration, host, version, created) VALUES
    ('k1', 'old', '{"sweep":"old","problem":"matrix_sensing","params":{},"cell":{},"method":"m","label":"m",'
     || '"options":{},"seed":0,"draw":0,"truth":"cell","tolerance":1e-06}', '{"success":true}', 'ok', NULL,
     0.1, 'h', '0.0', '2024-01-01T00:00:00');
"""


def _query(path: Path, sql: str) -> list[Any]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file of ``folder`` with its content hash and modification time."""
    return {p.name: (_digest(p), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        run_sweep(parse_spec(_SPEC), store, executor=InProcessExecutor(), progress=False)
    return path


def _one_line(error: pytest.ExceptionInfo[ConfigurationError], path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


# ---- read-only opening ------------------------------------------------------------------------------
def test_read_only_reads_and_leaves_no_trace(store_path: Path) -> None:
    before = _snapshot(store_path.parent)
    with Store(store_path, read_only=True) as store:
        assert store.count() == 3 and store.count("misuse") == 3 and store.sweeps() == ["misuse"]
        assert len(store.records("misuse")) == 3 and store.sweep_spec("misuse") is not None
        assert len(store.dataframe("misuse")) == 3
    assert _snapshot(store_path.parent) == before  # no -wal/-shm left, bytes and mtime unchanged
    assert _query(store_path, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.parametrize(
    ("action", "verb"),
    [
        (lambda s: s.register_sweep({"name": "x"}), "register a sweep"),
        (lambda s: s.claim(["k"], "me", 10.0), "claim trials"),
        (lambda s: s.release("me"), "release claims"),
        (lambda s: s.rename_sweep("misuse", "other"), "rename a sweep"),
    ],
)
def test_read_only_refuses_writes(store_path: Path, action: Callable[[Store], Any], verb: str) -> None:
    digest = _digest(store_path)
    with Store(store_path, read_only=True) as store:
        with pytest.raises(ConfigurationError, match=rf"is open read-only: cannot {verb}$"):
            action(store)
        with pytest.raises(ConfigurationError, match=r"is open read-only: cannot write a record$"):
            store.write(store.records()[0])
    assert _digest(store_path) == digest


def test_read_only_sees_a_running_writer(store_path: Path) -> None:
    writer = Store(store_path)
    try:
        record = writer.records()[0]
        with Store(store_path, read_only=True) as reader:
            assert reader.count() == 3
            writer.write(dataclasses.replace(record, key="z" * 32))  # committed while the reader is open
            assert reader.count() == 4
    finally:
        writer.close()
    assert not Path(f"{store_path}-wal").exists()


@pytest.fixture
def without_mode_ro(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make SQLite's ``mode=ro`` fail as it does in a folder the user cannot write (works as root too)."""
    real = sqlite3.connect

    def connect(target: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if isinstance(target, str) and "mode=ro" in target:
            return real("file:/nonexistent-flatminima-folder/x.sqlite?mode=ro", uri=True)
        return real(target, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    yield


def test_read_only_falls_back_to_immutable(store_path: Path, without_mode_ro: None) -> None:
    before = _snapshot(store_path.parent)
    with Store(store_path, read_only=True) as store:
        assert store.count("misuse") == 3
        assert _snapshot(store_path.parent) == before  # immutable: not even a side file meanwhile
    assert _snapshot(store_path.parent) == before


def test_read_only_refuses_a_pending_log_it_cannot_read(store_path: Path) -> None:
    writer = sqlite3.connect(store_path, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE trials SET host = 'elsewhere'")  # committed to the -wal only
    try:
        real = sqlite3.connect

        def connect(target: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
            if isinstance(target, str) and "mode=ro" in target:
                return real("file:/nonexistent-flatminima-folder/x.sqlite?mode=ro", uri=True)
            return real(target, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sqlite3, "connect", connect)
            with pytest.raises(ConfigurationError, match=r"has a write-ahead log .* cannot be read") as error:
                Store(store_path, read_only=True)
        _one_line(error, store_path)
    finally:
        writer.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_in_a_read_only_folder(store_path: Path) -> None:
    folder = store_path.parent
    before = _snapshot(folder)
    folder.chmod(0o555)
    try:
        with Store(store_path, read_only=True) as store:
            assert store.count() == 3
        with pytest.raises(ConfigurationError, match=r"is not writable") as error:
            Store(store_path)
        _one_line(error, store_path)
    finally:
        folder.chmod(0o755)
    assert _snapshot(folder) == before


# ---- files that are not stores ----------------------------------------------------------------------
def _foreign_sqlite(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE users (name TEXT)")
    connection.execute("INSERT INTO users VALUES ('ada')")
    connection.commit()
    connection.close()


def _foreign_wal_sqlite(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE trials (x)")  # one of our table names, but not our store
    connection.execute("CREATE TABLE runs (y)")
    connection.commit()
    connection.close()


def _tableless_sqlite(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 7")
    connection.commit()
    connection.close()


def _our_names_with_data(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE trials (key TEXT)")
    connection.execute("INSERT INTO trials VALUES ('not ours')")
    connection.commit()
    connection.close()


_NOT_STORES: dict[str, tuple[Callable[[Path], None], str]] = {
    "foreign-sqlite": (_foreign_sqlite, r"SQLite database of another application \(tables: users\)"),
    "foreign-wal-sqlite": (_foreign_wal_sqlite, r"another application \(tables: runs\)"),
    "tableless-sqlite": (_tableless_sqlite, r"SQLite database without tables, not a flatminima store"),
    "our-table-names": (_our_names_with_data, r"not a flatminima store \(it has no schema version\)"),
    "text": (lambda p: p.write_text("name,value\na,1\n" * 20), r"exists and is not a SQLite database"),
    "short": (lambda p: p.write_bytes(b"SQLite format 3\x00"), r"exists and is not a SQLite database"),
    "corrupt": (
        lambda p: p.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16),
        r"not a readable SQLite database",
    ),
}


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "write"])
@pytest.mark.parametrize("kind", sorted(_NOT_STORES))
def test_not_a_store_is_refused_and_untouched(tmp_path: Path, kind: str, read_only: bool) -> None:
    make, pattern = _NOT_STORES[kind]
    path = tmp_path / "thing.db"
    make(path)
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigurationError, match=pattern) as error:
        Store(path, read_only=read_only)
    _one_line(error, path)
    assert _snapshot(tmp_path) == before  # byte-identical, same mtime, no side file


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    with pytest.raises(ConfigurationError, match=r"is an empty file, not a flatminima store") as error:
        Store(path, read_only=True)
    _one_line(error, path)
    assert path.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]
    with Store(path) as store:  # write mode: a 0-byte file holds nothing to lose; it becomes a store
        assert store.count() == 0
    with Store(path, read_only=True) as store:
        assert store.sweeps() == []


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "write"])
def test_directories_and_missing_paths(tmp_path: Path, read_only: bool) -> None:
    with pytest.raises(ConfigurationError, match=r"is a directory; give a file path$") as error:
        Store(tmp_path, read_only=read_only)
    _one_line(error, tmp_path)
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(ConfigurationError, match=r"does not exist \(run a sweep into it first\)$"):
        Store(missing, read_only=True)
    assert not missing.exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigurationError, match=r"the folder '.*file.txt' does not exist"):
        Store(a_file / "s.sqlite")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_new_store_in_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ConfigurationError, match=r"the folder .* is not writable") as error:
            Store(folder / "s.sqlite")
        _one_line(error, folder / "s.sqlite")
    finally:
        folder.chmod(0o755)


# ---- schema versions --------------------------------------------------------------------------------
def test_previous_layout_is_read_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path)
    connection.executescript(_PREVIOUS_SCHEMA)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.close()
    before = _snapshot(tmp_path)
    with Store(path, read_only=True) as store:  # read-only: used as it is, no table added
        assert store.count("old") == 1 and store.records()[0].key == "k1"
        assert store.claimed_elsewhere(["k1", "k2"]) == set() and store.live_claims() == 0
    assert _snapshot(tmp_path) == before
    with Store(path) as store:  # write mode adds the claims table, keeps every row
        assert store.count("old") == 1
        assert store.claim(["k1", "k2"], "me", 60.0) == ["k2"]  # k1 is stored
    tables = {row[0] for row in _query(path, "SELECT name FROM sqlite_master")}
    assert {"claims", "trials", "sweeps", "schema_version"} <= tables
    with Store(path, read_only=True) as store:
        assert store.count() == 1 and store.live_claims() == 1


def test_other_schema_version_is_refused_read_only(store_path: Path) -> None:
    connection = sqlite3.connect(store_path)
    connection.execute("UPDATE schema_version SET version = 99")
    connection.commit()
    connection.close()
    digest = _digest(store_path)
    for read_only in (True, False):
        with pytest.raises(ConfigurationError, match=r"has schema version 99; this flatminima reads"):
            Store(store_path, read_only=read_only)
    assert _digest(store_path) == digest
