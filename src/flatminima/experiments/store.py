"""The persistent trial store: one SQLite file (stdlib ``sqlite3``) in WAL mode.

Tables:

* ``schema_version(version)``: one row; a store written by another schema is refused, never guessed at;
* ``sweeps(name, spec, created, updated)``: the validated spec of every sweep run into the store
  (figures read their axes and captions from it);
* ``trials``: one row per trial, ``key`` UNIQUE (the hash of the trial's canonical JSON), with ``sweep``,
  ``params`` (the trial as JSON), ``metrics`` (JSON), ``status`` ('ok' | 'failed'), ``error`` text,
  ``duration`` (s), ``host``, ``version`` (flatminima's) and ``created`` (UTC);
* ``claims(key, owner, expires)``: trials being computed by a driver (:mod:`.claims`). It was added
  without changing the schema version: opening a store written before it in write mode adds the table,
  older code ignores it, and read-only opening does without it.

Each record is committed in its own transaction, so a driver killed at any instant loses at most the
trials still running and never leaves half a row; ``INSERT OR IGNORE`` on the unique key means a record is
never duplicated, and claims mean that drivers sharing a store never compute a trial twice.

What is opened: only a flatminima store. Another application's SQLite database, a text file, a
directory or a damaged file is refused with a one-line :class:`ConfigurationError` and left untouched
(it is inspected through a read-only connection before anything is written). A 0-byte file (``touch``,
``mktemp``) holds nothing to lose: write mode turns it into a new store, read-only mode refuses it.

Read-only opening (``read_only=True``; ``export`` and ``plot``) uses SQLite's ``mode=ro`` URI: it never
switches the journal mode, creates no table and writes nothing to the file. Reading a WAL file needs a
``-shm`` index file next to it; where the folder is not writable and the store has no pending
write-ahead log, the store is opened ``immutable`` instead (no lock and no side file is needed, and no
writer can exist there); ``-wal``/``-shm`` files that the read-only connection itself had to create are
removed again on :meth:`Store.close` when no other connection uses them.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flatminima.errors import ConfigurationError
from flatminima.experiments.claims import ClaimsMixin, chunks, immediate
from flatminima.experiments.spec_checks import spec_grows, trial_changes
from flatminima.experiments.store_schema import (
    COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    classify,
    inspect_path,
    open_read_only,
    remove_side_files,
)
from flatminima.experiments.trial import TrialRecord, canonical_json, trial_key

if TYPE_CHECKING:
    import pandas


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class SweepSpecMismatch(ConfigurationError):
    """A sweep name is stored with a spec whose trials differ from the new spec's.

    Attributes:
        name: the sweep's name.
        differences: the field paths that differ (e.g. ``["grid.num_measurements", "tolerance"]``).
        stored: the number of trials stored under the name.
    """

    def __init__(self, name: str, differences: list[str], stored: int) -> None:
        self.name, self.differences, self.stored = name, differences, stored
        super().__init__(
            f"sweep {name!r} is stored with a different spec (differs in: {', '.join(differences)}); "
            f"its {stored} stored trials would be mixed with the new ones: give the changed spec a new "
            f"name, or rename the stored sweep first (Store.rename_sweep)"
        )


class Store(ClaimsMixin):
    """A SQLite trial store.

    Args:
        path: the database file.
        create: create the file (and its tables) if missing; with False a missing file is an error.
        read_only: open for reading only (implies ``create=False``): no write, no journal-mode switch, no
            table created; writing methods raise :class:`ConfigurationError`.

    Raises:
        ConfigurationError: (one line naming the path) a missing file (``create=False``), a directory, a
            file that is not a flatminima store (another SQLite database, text, empty in read-only mode),
            another schema version, a folder or file without the needed permission.

    Example:
        >>> import tempfile, os
        >>> with Store(os.path.join(tempfile.mkdtemp(), "s.sqlite")) as store:
        ...     store.count()
        0
    """

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._tidy = False
        name = repr(str(self.path))
        exists = inspect_path(self.path, create=create and not read_only, write=not read_only)
        if exists:  # look before touching: refuse what is not a store, leaving it as it was
            probe, created = open_read_only(self.path, probe=True)
            try:
                blank = classify(probe, name, read_only=read_only)
            finally:
                probe.close()
                if created:
                    remove_side_files(self.path)
            if read_only:
                self._connection, self._tidy = open_read_only(self.path)
                return
        elif read_only:  # pragma: no cover - _inspect_path refuses a missing file first
            raise ConfigurationError(f"store {name} does not exist")
        else:
            blank = True
        try:
            self._connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            with immediate(self._connection) as connection:  # all tables and the version, or nothing
                for statement in SCHEMA:
                    connection.execute(statement)
                if blank and not connection.execute("SELECT 1 FROM schema_version").fetchone():
                    connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as error:
            with contextlib.suppress(Exception):
                self._connection.close()
            raise ConfigurationError(f"store {name} cannot be opened for writing: {error}") from None

    # ---- context manager -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent); a read-only store removes the empty side files it made."""
        self._connection.close()
        if self._tidy:
            self._tidy = False
            remove_side_files(self.path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_writable(self, action: str) -> None:
        if self.read_only:
            raise ConfigurationError(f"store {str(self.path)!r} is open read-only: cannot {action}")

    # ---- sweeps --------------------------------------------------------------------------------
    def register_sweep(self, spec: Mapping[str, Any]) -> None:
        """Record a sweep's spec (a mapping with a ``name``), or check it against the stored one.

        A new name is recorded. An existing name is accepted when its spec is the same, differs only in
        free text (description, figure hints), only grows the sweep (more draws, grid values or solvers:
        every stored trial still belongs to it), or has no stored trial yet; the stored spec is then
        replaced. Any other change is refused, because the stored trials would be reported and exported
        with the new ones as if they were one sweep.

        Raises:
            SweepSpecMismatch: the name is stored with a spec of other trials.
        """
        self._require_writable("register a sweep")
        name, text = spec["name"], canonical_json(dict(spec))
        with immediate(self._connection) as connection:
            row = connection.execute("SELECT spec FROM sweeps WHERE name = ?", (name,)).fetchone()
            if row is None:
                now = _now()
                connection.execute(
                    "INSERT INTO sweeps (name, spec, created, updated) VALUES (?, ?, ?, ?)",
                    (name, text, now, now),
                )
                return
            if row[0] == text:
                return
            stored = json.loads(row[0])
            changes = trial_changes(stored, json.loads(text))
            count = self.count(name)
            if changes and count and not spec_grows(stored, json.loads(text)):
                raise SweepSpecMismatch(name, changes, count)
            connection.execute("UPDATE sweeps SET spec = ?, updated = ? WHERE name = ?", (text, _now(), name))

    def rename_sweep(self, name: str, new_name: str) -> int:
        """Rename a stored sweep and its trials (keys are recomputed: the sweep's name is part of a trial).

        The explicit way to keep a sweep's results and run a changed spec under the old name. Refused
        while any trial of the store is claimed by a running driver.

        Returns:
            The number of trials renamed.

        Raises:
            ConfigurationError: unknown ``name``, ``new_name`` already used, or drivers running.
        """
        self._require_writable("rename a sweep")
        with immediate(self._connection) as connection:
            if connection.execute("SELECT 1 FROM sweeps WHERE name = ?", (name,)).fetchone() is None:
                raise ConfigurationError(f"sweep {name!r} is not in store {str(self.path)!r}")
            used = connection.execute(
                "SELECT 1 FROM sweeps WHERE name = ? UNION SELECT 1 FROM trials WHERE sweep = ?",
                (new_name, new_name),
            ).fetchone()
            if used is not None:
                raise ConfigurationError(f"sweep {new_name!r} already exists in store {str(self.path)!r}")
            if self.live_claims():
                raise ConfigurationError(
                    f"store {str(self.path)!r} has trials being computed by running drivers; "
                    "rename the sweep when they have finished"
                )
            spec = json.loads(
                connection.execute("SELECT spec FROM sweeps WHERE name = ?", (name,)).fetchone()[0]
            )
            spec["name"] = new_name
            connection.execute(
                "UPDATE sweeps SET name = ?, spec = ?, updated = ? WHERE name = ?",
                (new_name, canonical_json(spec), _now(), name),
            )
            rows = connection.execute("SELECT id, params FROM trials WHERE sweep = ?", (name,)).fetchall()
            for row_id, params in rows:
                trial = {**json.loads(params), "sweep": new_name}
                connection.execute(
                    "UPDATE trials SET key = ?, sweep = ?, params = ? WHERE id = ?",
                    (trial_key(trial), new_name, canonical_json(trial), row_id),
                )
        return len(rows)

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

        With ``replace`` an existing row of the same key is overwritten (retrying failed trials). The
        key's claim, whoever holds it, is deleted in the same transaction: the trial is finished.
        """
        self._require_writable("write a record")
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
        with immediate(self._connection) as connection:
            cursor = connection.execute(
                f"{verb} INTO trials ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values
            )
            connection.execute("DELETE FROM claims WHERE key = ?", (record.key,))
        return cursor.rowcount > 0

    def finished_keys(self, keys: Iterable[str] | None = None, *, include_failed: bool = True) -> set[str]:
        """Keys already stored (of ``keys`` if given, in chunks); failed ones count unless told not to."""
        status = "" if include_failed else " AND status = 'ok'"
        if keys is None:
            query = "SELECT key FROM trials WHERE 1" + status
            return {row[0] for row in self._connection.execute(query)}
        return set(self.statuses(keys, include_failed=include_failed))

    def statuses(self, keys: Iterable[str], *, include_failed: bool = True) -> dict[str, str]:
        """The stored status (``'ok'`` / ``'failed'``) of each stored key of ``keys``."""
        status = "" if include_failed else " AND status = 'ok'"
        out: dict[str, str] = {}
        for chunk in chunks(keys):
            marks = ",".join("?" * len(chunk))
            rows = self._connection.execute(
                f"SELECT key, status FROM trials WHERE key IN ({marks}){status}", chunk
            )
            out.update((key, value) for key, value in rows)
        return out

    def count(self, sweep: str | None = None, status: str | None = None) -> int:
        """Number of stored trials (of one sweep, of one status)."""
        clauses, args = self._where(sweep, status)
        return int(self._connection.execute(f"SELECT COUNT(*) FROM trials{clauses}", args).fetchone()[0])

    def records(self, sweep: str | None = None, status: str | None = None) -> list[TrialRecord]:
        """Stored records in insertion order (of one sweep, of one status)."""
        clauses, args = self._where(sweep, status)
        rows = self._connection.execute(f"SELECT {COLUMNS} FROM trials{clauses} ORDER BY id", args).fetchall()
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
