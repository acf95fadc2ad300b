"""Run a sweep into a store: skip finished trials, claim and run the rest, write each record as it completes.

``run_sweep`` is resumable by construction: trial keys are hashes of the trials' canonical JSON, the
store holds each finished key once, and a rerun (after a crash, a ``kill -9`` or Ctrl-C) runs only the
keys the store does not have.

Several drivers may run the same sweep into one store at once (two terminals, two cluster jobs): each
claims trials in batches before running them (:mod:`flatminima.experiments.claims`), so every trial is
computed once. A driver that finds trials claimed by another live driver waits for them at the end
(``wait=True``, the default: when ``run_sweep`` returns, the whole sweep is stored) or reports them in
:attr:`SweepResult.running_elsewhere` (``wait=False``). A driver that dies stops renewing its leases;
after ``lease_seconds`` its trials are taken over.

Bounds: the sweep's size is computed before anything is registered or run, and a sweep of more than
``max_trials`` (default :data:`~flatminima.experiments.spec.MAX_TRIALS`) is refused. Trials are generated
lazily and looked up in the store in chunks, so memory does not grow with the sweep.

Interrupts: on KeyboardInterrupt every finished record is already stored (each in its own transaction);
the driver releases its unfinished claims (best effort) and re-raises. ``Store.count(sweep)`` (also on a
read-only store) tells how many trials are stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sqlite3
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flatminima.errors import ConfigurationError
from flatminima.experiments.claims import DEFAULT_LEASE_SECONDS, LeaseKeeper, check_lease, chunks, new_owner
from flatminima.experiments.executors import InProcessExecutor, make_executor
from flatminima.experiments.progress import SweepProgress
from flatminima.experiments.spec import MAX_TRIALS, SweepSpec
from flatminima.experiments.store import Store
from flatminima.experiments.trial import Trial, TrialRecord, run_trial


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What one call of :func:`run_sweep` did.

    Attributes:
        name: the sweep's name.
        total: distinct trials in the sweep.
        skipped: trials already in the store when the run started (not rerun).
        completed: trials run and stored by this driver.
        failed: of those, how many failed.
        wall_time: seconds from the first submission to the last record.
        executor: a description of where the trials ran.
        elsewhere: trials stored by other drivers during this run.
        running_elsewhere: trials still held by other live drivers when this one returned (0 unless
            ``wait=False``); the sweep is complete iff this is 0.
    """

    name: str
    total: int
    skipped: int
    completed: int
    failed: int
    wall_time: float
    executor: str
    elsewhere: int = 0
    running_elsewhere: int = 0

    @property
    def trials_per_second(self) -> float:
        """Completed trials per second of wall time."""
        return self.completed / self.wall_time if self.wall_time > 0 else float("nan")


def _record_for_exception(trial: Trial, error: BaseException) -> TrialRecord:
    """A failed record for a trial whose task itself failed (e.g. its worker was killed repeatedly)."""
    import datetime
    import socket

    from flatminima import __version__

    message = " ".join(f"{type(error).__name__}: {error}".split())[:2000]
    return TrialRecord(
        key=trial.key,
        trial=trial.to_dict(),
        metrics={"success": False},
        status="failed",
        error=f"task failed on the executor: {message}",
        duration=0.0,
        host=socket.gethostname(),
        version=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
    )


def check_trial_limit(spec: SweepSpec, max_trials: int | None = None) -> int:
    """Return ``spec.num_trials`` or refuse a sweep above the limit (default :data:`MAX_TRIALS`).

    Raises:
        ConfigurationError: ``sweep NAME has N trials, more than the limit L; pass --max-trials N to run
            it anyway``.
    """
    limit = MAX_TRIALS if max_trials is None else max_trials
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"max_trials: must be a positive integer, got {max_trials!r}")
    count = spec.num_trials
    if count > limit:
        raise ConfigurationError(
            f"sweep {spec.name} has {count} trials, more than the limit {limit}; "
            f"pass --max-trials {count} to run it anyway"
        )
    return count


def count_pending(spec: SweepSpec, store: Store, *, retry_failed: bool = False) -> int:
    """Trials of ``spec`` not stored yet (failed ones count as pending with ``retry_failed``).

    Looks the keys up in chunks; works on a read-only store. Call :func:`check_trial_limit` first for
    specs from users (this enumerates the trials).
    """
    stored = 0
    for chunk in chunks(t.key for t in spec.iter_trials()):
        stored += len(store.finished_keys(chunk, include_failed=not retry_failed))
    return spec.num_trials - stored


class _Driver:
    """The state of one run: counters, trials held by other drivers, the claim stream."""

    def __init__(self, store: Store, owner: str, lease: float, batch: int, retry_failed: bool) -> None:
        self.store, self.owner, self.lease, self.batch = store, owner, lease, batch
        self.retry_failed = retry_failed
        self.completed = self.failed = 0
        self.seen_finished = 0  # keys found stored when claiming (before or during this run)
        self.held: dict[str, Trial] = {}  # claimed by another live driver
        self.renewed = time.monotonic()

    def claimed(self, trials: Iterable[Trial]) -> Iterator[Trial]:
        """Claim ``trials`` in batches as the executor consumes them; yield those claimed here."""
        iterator = iter(trials)
        while batch := list(itertools.islice(iterator, self.batch)):
            keys = [t.key for t in batch]
            got = set(self.store.claim(keys, self.owner, self.lease, retry_failed=self.retry_failed))
            missed = [t for t in batch if t.key not in got]
            if missed:
                elsewhere = self.store.claimed_elsewhere([t.key for t in missed], self.owner)
                self.held.update((t.key, t) for t in missed if t.key in elsewhere)
                self.seen_finished += len(missed) - len(elsewhere)
            yield from (t for t in batch if t.key in got)

    def run(self, executor: Any, trials: Iterable[Trial], bar: SweepProgress) -> None:
        """Run the trials on ``executor`` and store each record as it completes (renewing the leases)."""
        for trial, outcome in executor.map_unordered(run_trial, trials):
            record = outcome if isinstance(outcome, TrialRecord) else _record_for_exception(trial, outcome)
            if self.store.write(record, replace=self.retry_failed):  # False: stored elsewhere first
                self.completed += 1
                self.failed += record.status == "failed"
            if time.monotonic() - self.renewed > self.lease / 10:  # (the keeper thread renews too)
                self.store.renew(self.owner, lease_seconds=self.lease)
                self.renewed = time.monotonic()
            bar.advance(failed=record.status == "failed")

    def wait(self, executor: Any, bar: SweepProgress, poll: float) -> None:
        """Until no trial is held elsewhere: count those stored there, run those whose lease expired."""
        while self.held:
            statuses = self.store.statuses(self.held, include_failed=not self.retry_failed)
            for key, status in statuses.items():
                del self.held[key]
                bar.advance(failed=status == "failed")
            if not self.held:
                return
            got = self.store.claim(list(self.held), self.owner, self.lease, retry_failed=self.retry_failed)
            if got:
                self.run(executor, [self.held.pop(key) for key in got], bar)
            else:
                time.sleep(poll)


def run_sweep(
    spec: SweepSpec,
    store: Store,
    *,
    executor: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    max_trials: int | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    claim_batch: int | None = None,
    wait: bool = True,
) -> SweepResult:
    """Run the trials of ``spec`` that ``store`` does not hold yet and store each record as it completes.

    Args:
        spec: the sweep.
        store: the store, open for writing (other drivers may share it).
        executor: an executor object (see :mod:`flatminima.experiments.executors`); by default a local
            Dask cluster with ``workers`` processes, or the cluster at ``scheduler``. Executors created
            here are closed here.
        workers: local Dask workers (ignored when ``executor`` is given).
        scheduler: address of an existing Dask scheduler (ignored when ``executor`` is given).
        progress: draw a rich progress bar on stderr.
        retry_failed: rerun trials stored as failed (their rows are replaced).
        max_trials: refuse a sweep of more trials (None: :data:`~flatminima.experiments.spec.MAX_TRIALS`).
        lease_seconds: how long a claim lives without renewal (renewed by every record written and by a
            background thread every third of it); a dead driver's trials are taken over after this.
        claim_batch: trials claimed per transaction (default 8 in-process, so drivers interleave, and
            256 on Dask, whose executor submits everything at once).
        wait: wait for trials held by other live drivers (True), or return and report them in
            :attr:`SweepResult.running_elsewhere`.

    Returns:
        A :class:`SweepResult`.

    Raises:
        ConfigurationError: more trials than ``max_trials`` (before anything is registered or run), a
            spec changed under a stored name (:class:`~flatminima.experiments.store.SweepSpecMismatch`),
            a read-only store, bad executor options or an unreachable scheduler.
        KeyboardInterrupt: re-raised after the finished records are stored and the claims released.

    Example:
        >>> import tempfile, os
        >>> from flatminima.experiments import parse_spec, InProcessExecutor
        >>> spec = parse_spec({"name": "doc", "problem": {"name": "matrix_sensing", "dim": 4, "rank": 1},
        ...                    "grid": {"num_measurements": [20]}, "solvers": ["least_norm"]})
        >>> with Store(os.path.join(tempfile.mkdtemp(), "s.sqlite")) as store:
        ...     run_sweep(spec, store, executor=InProcessExecutor(), progress=False).completed
        1
    """
    total = check_trial_limit(spec, max_trials)
    lease_seconds = check_lease(lease_seconds)
    bad_batch = isinstance(claim_batch, bool) or not isinstance(claim_batch, int) or claim_batch < 1
    if claim_batch is not None and bad_batch:
        raise ConfigurationError(f"claim_batch: must be a positive integer, got {claim_batch!r}")
    store.register_sweep(spec.to_dict())
    pending = count_pending(spec, store, retry_failed=retry_failed)
    skipped = total - pending
    owned = executor is None and pending > 0
    if owned:
        executor = make_executor(workers=workers, scheduler=scheduler)
    elif executor is None:
        executor = InProcessExecutor()
    if claim_batch is None:
        claim_batch = 8 if isinstance(executor, InProcessExecutor) else 256
    owner = new_owner()
    driver = _Driver(store, owner, lease_seconds, claim_batch, retry_failed)
    keeper = LeaseKeeper(store.path, owner, lease_seconds)
    start = time.perf_counter()
    try:
        keeper.start()
        with SweepProgress(spec.name, pending, skipped=skipped, enabled=progress) as bar:
            if pending:
                driver.run(executor, driver.claimed(spec.iter_trials()), bar)
            for _ in range(max(driver.seen_finished - skipped, 0)):  # stored elsewhere meanwhile
                bar.advance(failed=False)
            if wait:
                driver.wait(executor, bar, poll=min(2.0, max(0.05, lease_seconds / 4)))
    finally:
        keeper.stop()
        with contextlib.suppress(sqlite3.Error, ConfigurationError):
            store.release(owner)
        if owned:
            executor.close()
    running = len(driver.held) - len(store.finished_keys(driver.held, include_failed=not retry_failed))
    elsewhere = total - skipped - driver.completed - running
    return SweepResult(
        name=spec.name,
        total=total,
        skipped=skipped,
        completed=driver.completed,
        failed=driver.failed,
        wall_time=time.perf_counter() - start,
        executor=getattr(executor, "description", type(executor).__name__),
        elsewhere=max(elsewhere, 0),
        running_elsewhere=running,
    )
