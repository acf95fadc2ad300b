"""Run a sweep into a store: skip finished trials, submit the rest, write each record as it completes.

``run_sweep`` is resumable by construction: trial keys are hashes of the trials' canonical JSON, the
store holds each finished key once, and a rerun (after a crash, a ``kill -9`` or Ctrl-C) submits only
the keys the store does not have. Only this (driver) process writes to the store.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from flatminima.experiments.executors import InProcessExecutor, make_executor
from flatminima.experiments.progress import SweepProgress
from flatminima.experiments.spec import SweepSpec
from flatminima.experiments.store import Store
from flatminima.experiments.trial import Trial, TrialRecord, run_trial


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What one call of :func:`run_sweep` did.

    Attributes:
        name: the sweep's name.
        total: trials in the sweep.
        skipped: trials already in the store (not rerun).
        completed: trials run and stored now.
        failed: of those, how many failed.
        wall_time: seconds from the first submission to the last record.
        executor: a description of where the trials ran.
    """

    name: str
    total: int
    skipped: int
    completed: int
    failed: int
    wall_time: float
    executor: str

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


def run_sweep(
    spec: SweepSpec,
    store: Store,
    *,
    executor: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    retry_failed: bool = False,
) -> SweepResult:
    """Run the trials of ``spec`` that ``store`` does not hold yet and store each record as it completes.

    Args:
        spec: the sweep.
        store: the store (the only writer is this process).
        executor: an executor object (see :mod:`flatminima.experiments.executors`); by default a local
            Dask cluster with ``workers`` processes, or the cluster at ``scheduler``. Executors created
            here are closed here.
        workers: local Dask workers (ignored when ``executor`` is given).
        scheduler: address of an existing Dask scheduler (ignored when ``executor`` is given).
        progress: draw a rich progress bar on stderr.
        retry_failed: rerun trials stored as failed (their rows are replaced).

    Returns:
        A :class:`SweepResult`.

    Raises:
        ConfigurationError: bad executor options or an unreachable scheduler.

    Example:
        >>> import tempfile, os
        >>> from flatminima.experiments import parse_spec, InProcessExecutor
        >>> spec = parse_spec({"name": "doc", "problem": {"name": "matrix_sensing", "dim": 4, "rank": 1},
        ...                    "grid": {"num_measurements": [20]}, "solvers": ["least_norm"]})
        >>> with Store(os.path.join(tempfile.mkdtemp(), "s.sqlite")) as store:
        ...     run_sweep(spec, store, executor=InProcessExecutor(), progress=False).completed
        1
    """
    store.register_sweep(spec.to_dict())
    trials = spec.trials()
    finished = store.finished_keys([t.key for t in trials], include_failed=not retry_failed)
    pending = [t for t in trials if t.key not in finished]
    owned = executor is None and bool(pending)
    if owned:
        executor = make_executor(workers=workers, scheduler=scheduler)
    elif executor is None:
        executor = InProcessExecutor()
    completed = failed = 0
    start = time.perf_counter()
    try:
        with SweepProgress(spec.name, len(pending), skipped=len(finished), enabled=progress) as bar:
            for trial, outcome in executor.map_unordered(run_trial, pending):
                record = (
                    outcome if isinstance(outcome, TrialRecord) else _record_for_exception(trial, outcome)
                )
                store.write(record, replace=retry_failed)
                completed += 1
                failed += record.status == "failed"
                bar.advance(failed=record.status == "failed")
    finally:
        if owned:
            executor.close()
    return SweepResult(
        name=spec.name,
        total=len(trials),
        skipped=len(finished),
        completed=completed,
        failed=failed,
        wall_time=time.perf_counter() - start,
        executor=getattr(executor, "description", type(executor).__name__),
    )
