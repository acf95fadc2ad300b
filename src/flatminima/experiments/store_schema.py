"""The store's schema and how an existing file is opened: inspected, classified, then connected.

See :mod:`flatminima.experiments.store` for what is accepted and refused, and why.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import urllib.parse
from pathlib import Path

from flatminima.errors import ConfigurationError
from flatminima.experiments.claims import CLAIMS_SCHEMA

SCHEMA_VERSION = 1

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS trials (
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
)""",
    "CREATE INDEX IF NOT EXISTS trials_sweep ON trials (sweep)",
    *CLAIMS_SCHEMA,
)
TABLES = {"schema_version", "sweeps", "trials", "claims"}
COLUMNS = "key, sweep, params, metrics, status, error, duration, host, version, created"
SQLITE_MAGIC = b"SQLite format 3\x00"


def inspect_path(path: Path, *, create: bool, write: bool) -> bool:
    """Check what is at ``path`` before SQLite touches it; return whether a file exists there.

    ``create``: a missing file may be created; ``write``: the store will be written (folder and file
    must be writable: WAL needs its side files next to the store).
    """
    name = repr(str(path))
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        info = None
    except OSError as error:
        raise ConfigurationError(f"store {name} cannot be accessed: {error.strerror or error}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"store {name} is a directory; give a file path")
    if info is None:
        if not create:
            raise ConfigurationError(f"store {name} does not exist (run a sweep into it first)")
        parent = path.parent
        if not parent.is_dir():
            raise ConfigurationError(f"store {name}: the folder {str(parent)!r} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigurationError(f"store {name}: the folder {str(parent)!r} is not writable")
        return False
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(f"store {name} is not a regular file")
    if write and not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"store {name}: the folder {str(path.parent)!r} is not writable (open the store read-only)"
        )
    if write and not os.access(path, os.W_OK):
        raise ConfigurationError(f"store {name} is not writable (open it read-only)")
    if info.st_size == 0:
        if not write:
            raise ConfigurationError(f"store {name} is an empty file, not a flatminima store")
        return True
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError as error:
        raise ConfigurationError(f"store {name} cannot be read: {error.strerror or error}") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise ConfigurationError(f"store {name} exists and is not a SQLite database (not a flatminima store)")
    return True


def _uri(path: Path, **options: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in options.items())
    return f"file:{urllib.parse.quote(str(path.absolute()))}?{query}"


def _wal_header(path: Path) -> bool:
    """Whether the database header says WAL mode (file format versions 2 at offsets 18 and 19)."""
    with contextlib.suppress(OSError), path.open("rb") as handle:
        header = handle.read(20)
        return len(header) == 20 and header[18] == 2
    return False


def _connect(path: Path, **options: str) -> sqlite3.Connection:
    """Connect with URI ``options`` and read the schema (SQLite opens lazily: errors show up here)."""
    connection = sqlite3.connect(_uri(path, **options), uri=True, timeout=30.0, isolation_level=None)
    try:
        connection.execute("SELECT name FROM sqlite_master").fetchall()
    except BaseException:
        connection.close()
        raise
    return connection


def open_read_only(path: Path, *, probe: bool = False) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection: ``mode=ro``, or ``immutable`` where that needs no care.

    ``immutable`` (no lock, no side file) is used to *probe* a WAL file that no connection has open (no
    ``-wal`` file: a first look at a file that may not even be ours leaves nothing behind), and where
    ``mode=ro`` fails because the folder is not writable (no writer can exist there) and no write-ahead
    log is pending. Otherwise ``mode=ro``, which sees concurrent writers' commits.

    Returns:
        (connection, whether this connection created the ``-wal``/``-shm`` side files).
    """
    name = repr(str(path))
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    existed = wal.exists() or shm.exists()
    try:
        if probe and not existed and _wal_header(path):
            return _connect(path, immutable="1"), False
        try:
            connection = _connect(path, mode="ro")
            return connection, not existed and (wal.exists() or shm.exists())
        except sqlite3.OperationalError as error:
            if "readonly" not in str(error) and "unable to open" not in str(error):
                raise
        if wal.exists() and wal.stat().st_size > 0:
            raise ConfigurationError(
                f"store {name} has a write-ahead log {str(wal)!r} that cannot be read without write access "
                "to its folder; open the store once in write mode where the folder is writable"
            )
        return _connect(path, immutable="1"), False
    except sqlite3.DatabaseError as error:
        raise ConfigurationError(f"store {name} is not a readable SQLite database: {error}") from None


def classify(connection: sqlite3.Connection, name: str, *, read_only: bool) -> bool:
    """Check that an existing database is a flatminima store; return True if it is still blank.

    Blank: a 0-byte file, or only (empty) tables of ours without a version row (a creation by an older
    version that was interrupted). Anything else that is not a complete store of our schema version is
    refused, including a non-empty SQLite file without tables (it may be another program's).
    """
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        tables = {t for t in tables if not t.startswith("sqlite_")}
        foreign = sorted(tables - TABLES)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ConfigurationError(
                f"store {name} is a SQLite database of another application (tables: {shown}), "
                "not a flatminima store; it was left untouched"
            )
        versions = (
            connection.execute("SELECT version FROM schema_version").fetchall()
            if "schema_version" in tables
            else []
        )
        if not versions:
            if any(connection.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in tables):
                raise ConfigurationError(f"store {name} is not a flatminima store (it has no schema version)")
            if not tables and connection.execute("PRAGMA page_count").fetchone()[0] > 0:
                raise ConfigurationError(
                    f"store {name} is a SQLite database without tables, not a flatminima store; it was "
                    "left untouched"
                )
            if read_only:
                raise ConfigurationError(f"store {name} is an empty SQLite database, not a flatminima store")
            return True
        if versions[0][0] != SCHEMA_VERSION:
            raise ConfigurationError(
                f"store {name} has schema version {versions[0][0]}; this flatminima reads "
                f"version {SCHEMA_VERSION} (export it with the version that wrote it)"
            )
        columns = {row[1] for row in connection.execute("PRAGMA table_info(trials)")}
        if not {c.strip() for c in COLUMNS.split(",")} <= columns or "sweeps" not in tables:
            raise ConfigurationError(
                f"store {name} is damaged: its trials or sweeps table is missing or altered"
            )
    except sqlite3.DatabaseError as error:
        raise ConfigurationError(f"store {name} is not a readable SQLite database: {error}") from None
    return False


def remove_side_files(path: Path) -> None:
    """Remove the empty ``-wal`` and the ``-shm`` a read-only connection left, if no one uses them.

    A read-write connection that opens and closes as the last one checkpoints an empty log (the file
    is unchanged) and deletes both side files; while another connection is open it deletes nothing.
    """
    wal = Path(f"{path}-wal")
    with contextlib.suppress(OSError, sqlite3.Error):
        if wal.exists() and wal.stat().st_size > 0:
            return
        connection = sqlite3.connect(_uri(path, mode="rw"), uri=True, timeout=1.0, isolation_level=None)
        try:
            connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        finally:
            connection.close()
