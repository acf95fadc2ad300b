"""The persistent trial store: one SQLite file (stdlib ``sqlite3``) in WAL mode.

Tables:

* ``schema_version(version)``: one row; a store written by another schema is refused, never guessed at;
* ``sweeps(name, spec, created, updated)``: the validated spec of every sweep run into the store
  (figures read their axes and captions from it);
* ``trials``: one row per trial, ``key`` UNIQUE (the hash of the trial's canonical JSON), with ``sweep``,
  ``params`` (the trial as JSON), ``metrics`` (JSON), ``status`` ('ok' | 'failed'), ``error`` text,
  ``duration`` (s), ``host``, ``version`` (flatminima's) and ``created`` (UTC).

Each record is committed in its own transaction, so a driver killed at any instant loses at most the
trials still running and never leaves half a row; ``INSERT OR IGNORE`` on the unique key means a record is
never duplicated. Only the driver process writes.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flatminima.errors import ConfigurationError
from flatminima.experiments.trial import TrialRecord, canonical_json

if TYPE_CHECKING:
    import pandas

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    sweep TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    duration REAL NOT NULL,
    host TEXT NOT NULL,
    version TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_sweep ON trials (sweep);
"""
_COLUMNS = "key, sweep, params, metrics, status, error, duration, host, version, created"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class Store:
    """A SQLite trial store.

    Args:
        path: the database file.
        create: create the file (and its tables) if missing; with False a missing file is an error
            (the read-only commands ``plot`` and ``export``).

    Raises:
        ConfigurationError: the path cannot be opened for writing, is not a SQLite database, or holds
            another schema version.

    Example:
        >>> import tempfile, os
        >>> with Store(os.path.join(tempfile.mkdtemp(), "s.sqlite")) as store:
        ...     store.count()
        0
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ConfigurationError(f"store {str(self.path)!r} does not exist (run a sweep into it first)")
        if self.path.is_dir():
            raise ConfigurationError(f"store {str(self.path)!r} is a directory; give a file path")
        parent = self.path.parent
        if create and not parent.is_dir():
            raise ConfigurationError(f"store {str(self.path)!r}: the folder {str(parent)!r} does not exist")
        if create and not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigurationError(f"store {str(self.path)!r}: the folder {str(parent)!r} is not writable")
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open("rb") as handle:
                if handle.read(16) != b"SQLite format 3\x00":
                    raise ConfigurationError(f"store {str(self.path)!r} exists and is not a SQLite database")
        try:
            self._connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.executescript(_SCHEMA)
            rows = self._connection.execute("SELECT version FROM schema_version").fetchall()
            if not rows:
                self._connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif rows[0][0] != SCHEMA_VERSION:
                raise ConfigurationError(
                    f"store {str(self.path)!r} has schema version {rows[0][0]}; this flatminima reads "
                    f"version {SCHEMA_VERSION} (export it with the version that wrote it)"
                )
        except (sqlite3.Error, OSError) as error:
            raise ConfigurationError(
                f"store {str(self.path)!r} cannot be opened for writing: {error}"
            ) from None

    # ---- context manager -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sweeps --------------------------------------------------------------------------------
    def register_sweep(self, spec: Mapping[str, Any]) -> None:
        """Record (or update) a sweep's spec, a mapping with a ``name``."""
        now = _now()
        self._connection.execute(
            "INSERT INTO sweeps (name, spec, created, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, updated = excluded.updated",
            (spec["name"], canonical_json(dict(spec)), now, now),
        )

    def sweeps(self) -> list[str]:
        """Names of the sweeps in the store, oldest first."""
        rows = self._connection.execute("SELECT name FROM sweeps ORDER BY created, name").fetchall()
        return [row[0] for row in rows]

    def sweep_spec(self, name: str) -> dict[str, Any] | None:
        """The stored spec of sweep ``name`` (None if unknown)."""
        row = self._connection.execute("SELECT spec FROM sweeps WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    # ---- trials --------------------------------------------------------------------------------
    def write(self, record: TrialRecord, *, replace: bool = False) -> bool:
        """Insert one record in its own transaction; return False if its key was already stored.

        With ``replace`` an existing row of the same key is overwritten (retrying failed trials).
        """
        values = (
            record.key,
            record.sweep,
            canonical_json(dict(record.trial)),
            canonical_json(dict(record.metrics)),
            record.status,
            record.error,
            float(record.duration),
            record.host,
            record.version,
            record.created,
        )
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        cursor = self._connection.execute(
            f"{verb} INTO trials ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values
        )
        return cursor.rowcount > 0

    def finished_keys(self, keys: Iterable[str] | None = None, *, include_failed: bool = True) -> set[str]:
        """Keys already stored (of ``keys`` if given); failed trials count unless ``include_failed=False``."""
        query = "SELECT key FROM trials" + ("" if include_failed else " WHERE status = 'ok'")
        stored = {row[0] for row in self._connection.execute(query)}
        return stored if keys is None else stored & set(keys)

    def count(self, sweep: str | None = None, status: str | None = None) -> int:
        """Number of stored trials (of one sweep, of one status)."""
        clauses, args = self._where(sweep, status)
        return int(self._connection.execute(f"SELECT COUNT(*) FROM trials{clauses}", args).fetchone()[0])

    def records(self, sweep: str | None = None, status: str | None = None) -> list[TrialRecord]:
        """Stored records in insertion order (of one sweep, of one status)."""
        clauses, args = self._where(sweep, status)
        rows = self._connection.execute(
            f"SELECT {_COLUMNS} FROM trials{clauses} ORDER BY id", args
        ).fetchall()
        return [
            TrialRecord(
                key=key,
                trial=json.loads(params),
                metrics=json.loads(metrics),
                status=status_,
                error=error,
                duration=duration,
                host=host,
                version=version,
                created=created,
            )
            for key, _, params, metrics, status_, error, duration, host, version, created in rows
        ]

    @staticmethod
    def _where(sweep: str | None, status: str | None) -> tuple[str, tuple[str, ...]]:
        clauses, args = [], []
        if sweep is not None:
            clauses.append("sweep = ?")
            args.append(sweep)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)

    def dataframe(self, sweep: str | None = None) -> pandas.DataFrame:
        """One row per trial, as a pandas DataFrame.

        Columns: key, sweep, problem, method, label, draw, seed, the cell's grid keys, the problem
        parameters (``param.*``), the metrics (``metric.<name>`` where a name is already a column),
        status, error_message, duration, host, version, created.
        """
        return records_frame(self.records(sweep))


def records_frame(records: Iterable[TrialRecord]) -> pandas.DataFrame:
    """Flatten records into a pandas DataFrame (see :meth:`Store.dataframe`)."""
    import pandas

    rows = []
    for record in records:
        trial = record.trial
        row: dict[str, Any] = {
            "key": record.key,
            "sweep": trial["sweep"],
            "problem": trial["problem"],
            "method": trial["method"],
            "label": trial["label"],
            "draw": trial["draw"],
            "seed": trial["seed"],
        }
        row.update({key: value for key, value in trial["cell"].items()})
        for key, value in trial["params"].items():
            row[f"param.{key}"] = "x".join(map(str, value)) if isinstance(value, list) else value
        for key, value in record.metrics.items():
            name = f"metric.{key}" if key in row else key  # never shadow a grid key or a column
            row[name] = value if not isinstance(value, list | dict) else json.dumps(value)
        row.update(
            status=record.status,
            error_message=record.error,
            duration=record.duration,
            host=record.host,
            version=record.version,
            created=record.created,
        )
        rows.append(row)
    return pandas.DataFrame(rows)
