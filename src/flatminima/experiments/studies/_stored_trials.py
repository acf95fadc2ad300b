"""Stored trials of a network study: run what the SQLite store lacks, read back the rest.

The mechanism of :mod:`~flatminima.experiments.studies.fantastic`, shared by the studies that split their
work into independent units (one training, one bound, one cell of SGD runs): each unit is a
:class:`~flatminima.experiments.trial.Trial` keyed by everything that determines its result; the study
registers its sweep, skips the keys the store already holds, computes the others one by one and writes
each record as soon as it is finished, so an interrupted run resumes where it stopped. A unit that raises
is stored as failed (with its one-line error) and the study goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flatminima.experiments.progress import SweepProgress
from flatminima.experiments.sweep import SweepResult
from flatminima.experiments.trial import Trial, TrialRecord

#: a unit of work: its trial and the function that computes its metrics.
Unit = tuple[Trial, Callable[[], Mapping[str, Any]]]


def make_trial(sweep: str, problem: str, params: Mapping[str, Any], method: str, seed: int) -> Trial:
    """A study trial: ``params`` (JSON values) determine the result; ``method`` labels the unit."""
    return Trial(sweep, problem, dict(params), dict(params), method, method, {}, seed=seed, draw=0)


def run_units(
    units: Sequence[Unit], *, name: str, sweep: str, config: Any, store: Any, progress: bool
) -> tuple[list[TrialRecord], SweepResult]:
    """Compute the units the store lacks, store each record, and return every unit's record in order.

    Args:
        units: (trial, compute) pairs; ``compute()`` returns the metrics (JSON values).
        name: the study's name.
        sweep: the sweep's name (``NAME`` or ``NAME/quick``).
        config: the study's configuration dataclass (registered with the sweep).
        store: a :class:`~flatminima.experiments.store.Store`, or None to store nothing.
        progress: draw a progress bar.

    Returns:
        (records of the units, in the order of ``units``; what the run did).
    """
    from flatminima import __version__

    if store is not None:
        store.register_sweep({"name": sweep, "study": name, "config": dataclasses.asdict(config)})
        finished = store.finished_keys([trial.key for trial, _ in units])
    else:
        finished = set()
    pending = [(trial, compute) for trial, compute in units if trial.key not in finished]
    records: dict[str, TrialRecord] = {}
    start = time.perf_counter()
    failed = 0
    with SweepProgress(sweep, len(pending), skipped=len(finished), enabled=progress) as bar:
        for trial, compute in pending:
            begin = time.perf_counter()
            try:
                metrics, status, error = dict(compute()), "ok", None
            except Exception as failure:  # a failing unit is recorded; the study goes on
                message = " ".join(f"{type(failure).__name__}: {failure}".split())
                metrics, status, error = {}, "failed", message
            record = TrialRecord(
                key=trial.key,
                trial=trial.to_dict(),
                metrics=metrics,
                status=status,
                error=error,
                duration=time.perf_counter() - begin,
                host=socket.gethostname(),
                version=__version__,
                created=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            )
            records[trial.key] = record
            if store is not None:
                store.write(record)
            failed += status == "failed"
            bar.advance(failed=status == "failed")
    keys = {trial.key for trial, _ in units}
    if store is not None:
        records.update({r.key: r for r in store.records(sweep) if r.key in keys})
    result = SweepResult(
        sweep,
        len(units),
        len(finished),
        len(pending),
        failed,
        time.perf_counter() - start,
        "in-process (network study)",
    )
    return [records[trial.key] for trial, _ in units if trial.key in records], result


def records_frame(records: Sequence[TrialRecord]) -> Any:
    """One row per record: the trial's params, status, error, duration and the metrics."""
    import pandas

    rows = []
    for record in records:
        row: dict[str, Any] = dict(record.trial["params"])
        row.update(status=record.status, error=record.error, duration=record.duration)
        row.update(record.metrics)
        rows.append(row)
    return pandas.DataFrame(rows)


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of a binomial proportion; (nan, nan) for 0 trials.

    Example:
        >>> [round(v, 4) for v in wilson_interval(0, 10)]
        [0.0, 0.2775]
    """
    import math

    if trials <= 0:
        return math.nan, math.nan
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
