"""Claims: which driver is computing which trial, so that drivers sharing one store never duplicate work.

Table ``claims(key PRIMARY KEY, owner, expires)``: a row says that driver ``owner`` is computing trial
``key`` until ``expires`` (seconds since the epoch, this machine's clock). Protocol:

* :meth:`ClaimsMixin.claim` takes, in one ``BEGIN IMMEDIATE`` transaction, the keys that are neither
  stored nor claimed by a live other owner (a claim whose lease has expired is taken over);
* writing a record (:meth:`flatminima.experiments.store.Store.write`) deletes the key's claim in the
  record's own transaction, so a key is always stored, claimed, or free, never in between;
* the holder renews its leases (:meth:`ClaimsMixin.renew`, or the :class:`LeaseKeeper` thread) while it
  runs; a driver that dies simply stops renewing, and its trials are taken over once the lease expires;
  a driver on *this* host whose process no longer exists (``kill -9``) is recognized at once from its
  owner id ``host:pid:token``, so a resume after a crash does not wait for the lease;
* :meth:`ClaimsMixin.release` gives claims back (Ctrl-C, errors).

A trial that outlives its lease without renewal may be computed twice, but it is stored once (the
trials table's unique key). Leases use wall-clock time, so drivers on several hosts need synchronized
clocks (SQLite over a network file system is discouraged anyway).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

#: default lease of a claim: a dead driver's trials are taken over after at most this long.
DEFAULT_LEASE_SECONDS = 600.0
#: keys per SQL statement (well under SQLite's limit on bound variables).
CHUNK = 500

CLAIMS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS claims_owner ON claims (owner)",
)


def new_owner() -> str:
    """A driver id unique across hosts and processes: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """True iff ``owner`` is a driver of this host whose process no longer exists.

    Owners of other hosts, and processes that exist (even if their pid was reused), count as alive:
    their claims expire with their leases.
    """
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists (another user's process)
        return False
    return False


def chunks(keys: Iterable[str], size: int = CHUNK) -> Iterator[list[str]]:
    """``keys`` in lists of at most ``size``."""
    chunk: list[str] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextlib.contextmanager
def immediate(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction (``BEGIN IMMEDIATE``: the write lock is taken before anything is read)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:  # an error, Ctrl-C, or a failed commit: nothing of it is kept
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise


def _dead(owner: str, cache: dict[str, bool]) -> bool:
    if owner not in cache:
        cache[owner] = owner_is_dead(owner)
    return cache[owner]


def _marks(count: int) -> str:
    return ",".join("?" * count)


def check_lease(lease_seconds: float) -> float:
    """Return ``lease_seconds`` as a float if it is a finite positive number; raise ConfigurationError."""
    from flatminima.errors import ConfigurationError

    if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, int | float) or not lease_seconds > 0:
        raise ConfigurationError(f"lease_seconds: must be a positive number, got {lease_seconds!r}")
    if lease_seconds == float("inf"):
        raise ConfigurationError("lease_seconds: must be finite (a dead driver's claims must expire)")
    return float(lease_seconds)


class ClaimsMixin:
    """The claim methods of :class:`~flatminima.experiments.store.Store` (see the module docstring)."""

    _connection: sqlite3.Connection

    def _require_writable(self, action: str) -> None:  # pragma: no cover - Store overrides it
        raise NotImplementedError

    def _has_claims_table(self) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'claims'"
        return self._connection.execute(query).fetchone() is not None

    def claim(
        self, keys: Iterable[str], owner: str, lease_seconds: float, *, retry_failed: bool = False
    ) -> list[str]:
        """Atomically claim the keys that are not stored and not held by a live other owner.

        Args:
            keys: trial keys (any number; claimed in chunks, each chunk in one transaction).
            owner: the claiming driver (see :func:`new_owner`).
            lease_seconds: the claims expire this long from now unless renewed.
            retry_failed: a key stored as failed counts as not stored (it will be rerun).

        Returns:
            The keys now claimed by ``owner`` (in the order given; keys it already held are included).
        """
        self._require_writable("claim trials")
        lease = check_lease(lease_seconds)
        stored = "SELECT key FROM trials WHERE key IN ({})" + (
            "" if not retry_failed else " AND status = 'ok'"
        )
        held = "SELECT key, owner FROM claims WHERE key IN ({}) AND owner != ? AND expires > ?"
        claimed: list[str] = []
        cache: dict[str, bool] = {}
        for chunk in chunks(dict.fromkeys(keys)):
            with immediate(self._connection) as connection:
                now = time.time()
                marks = _marks(len(chunk))
                busy = {row[0] for row in connection.execute(stored.format(marks), chunk)}
                rows = connection.execute(held.format(marks), [*chunk, owner, now]).fetchall()
                busy |= {key for key, holder in rows if not _dead(holder, cache)}
                free = [key for key in chunk if key not in busy]
                connection.executemany(
                    "INSERT INTO claims (key, owner, expires) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE "
                    "SET owner = excluded.owner, expires = excluded.expires",
                    [(key, owner, now + lease) for key in free],
                )
            claimed.extend(free)
        return claimed

    def renew(
        self, owner: str, keys: Iterable[str] | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> int:
        """Extend ``owner``'s claims (all of them, or those of ``keys``) to ``lease_seconds`` from now.

        Returns:
            The number of claims renewed.
        """
        self._require_writable("renew claims")
        expires = time.time() + check_lease(lease_seconds)
        if keys is None:
            cursor = self._connection.execute(
                "UPDATE claims SET expires = ? WHERE owner = ?", (expires, owner)
            )
            return max(cursor.rowcount, 0)
        count = 0
        for chunk in chunks(keys):
            cursor = self._connection.execute(
                f"UPDATE claims SET expires = ? WHERE owner = ? AND key IN ({_marks(len(chunk))})",
                [expires, owner, *chunk],
            )
            count += max(cursor.rowcount, 0)
        return count

    def release(self, owner: str, keys: Iterable[str] | None = None) -> int:
        """Give back ``owner``'s claims (all of them, or those of ``keys``); return how many."""
        self._require_writable("release claims")
        if keys is None:
            return max(self._connection.execute("DELETE FROM claims WHERE owner = ?", (owner,)).rowcount, 0)
        count = 0
        for chunk in chunks(keys):
            cursor = self._connection.execute(
                f"DELETE FROM claims WHERE owner = ? AND key IN ({_marks(len(chunk))})", [owner, *chunk]
            )
            count += max(cursor.rowcount, 0)
        return count

    def claimed_elsewhere(self, keys: Iterable[str], owner: str | None = None) -> set[str]:
        """The keys of ``keys`` held by a live claim of another owner (any owner when ``owner`` is None).

        Works on a read-only store; a store without a claims table (written by an older version) has none.
        """
        if not self._has_claims_table():
            return set()
        now = time.time()
        out: set[str] = set()
        cache: dict[str, bool] = {}
        for chunk in chunks(keys):
            rows = self._connection.execute(
                f"SELECT key, owner FROM claims WHERE key IN ({_marks(len(chunk))}) AND owner != ? "
                "AND expires > ?",
                [*chunk, owner if owner is not None else "", now],
            )
            out.update(key for key, holder in rows if not _dead(holder, cache))
        return out

    def live_claims(self) -> int:
        """The number of unexpired claims in the store (trials being computed right now, anywhere)."""
        if not self._has_claims_table():
            return 0
        query = "SELECT owner, COUNT(*) FROM claims WHERE expires > ? GROUP BY owner"
        cache: dict[str, bool] = {}
        rows = self._connection.execute(query, (time.time(),)).fetchall()
        return sum(int(count) for holder, count in rows if not _dead(holder, cache))


class LeaseKeeper:
    """A daemon thread that renews one owner's claims every ``lease_seconds / 3`` on its own connection.

    It keeps the claims of a trial that runs longer than the lease alive (records renew them too); when
    the process dies the thread dies with it and the leases run out. Errors (a busy store) are ignored:
    the next beat tries again.
    """

    def __init__(self, path: str | Path, owner: str, lease_seconds: float) -> None:
        self.path = Path(path)
        self.owner = owner
        self.lease_seconds = check_lease(lease_seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"flatminima-lease-{owner}", daemon=True)

    def start(self) -> LeaseKeeper:
        """Start renewing."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (idempotent; waits briefly for the thread)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        interval = max(0.05, self.lease_seconds / 3.0)
        try:
            connection = sqlite3.connect(self.path, timeout=interval, isolation_level=None)
        except sqlite3.Error:  # pragma: no cover - the store was opened a moment ago
            return
        try:
            while not self._stop.wait(interval):
                with contextlib.suppress(sqlite3.Error):
                    connection.execute(
                        "UPDATE claims SET expires = ? WHERE owner = ?",
                        (time.time() + self.lease_seconds, self.owner),
                    )
        finally:
            connection.close()
