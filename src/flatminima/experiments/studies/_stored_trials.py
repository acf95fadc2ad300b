"""Stored trials of a network study: run what the SQLite store lacks, read back the rest.

The mechanism of :mod:`~flatminima.experiments.studies.fantastic`, shared by every network study: each
unit of work (one training, one bound, one cell of SGD runs) is a
:class:`~flatminima.experiments.trial.Trial` keyed by everything that determines its result; the study
registers its sweep, skips the keys the store already holds, computes the others and writes each record
as soon as it is finished, so an interrupted run resumes where it stopped. A unit that raises is stored
as failed (with its one-line error) and the study goes on.

* :func:`run_units`: one computation per trial;
* :func:`run_groups`: groups of trials computed together (e.g. a batch of networks), one metrics dict
  per trial; a group runs again when any of its trials is missing from the store;
* :func:`make_trial`: a study trial; :func:`records_frame` and :func:`records_rows`: the records as rows.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flatminima.experiments.progress import SweepProgress
from flatminima.experiments.sweep import SweepResult
from flatminima.experiments.trial import Trial, TrialRecord

#: a unit of work: its trial and the function that computes its metrics.
Unit = tuple[Trial, Callable[[], Mapping[str, Any]]]
#: a group of trials computed together and the function returning one metrics dict per trial, in order.
Group = tuple[Sequence[Trial], Callable[[], Sequence[Mapping[str, Any]]]]


def make_trial(
    sweep: str,
    problem: str,
    params: Mapping[str, Any],
    *,
    method: str,
    seed: int,
    cell: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    draw: int = 0,
) -> Trial:
    """A study trial; its key hashes (sweep, problem, params, cell, method, options, seed, draw).

    ``params`` (JSON values) must hold every setting that changes the result and ``options`` every
    setting that changes its measures, so a changed study never reuses stale rows; ``cell`` (the grid
    coordinates, ``params`` by default) labels the trial and ``method`` the unit.
    """
    cell = params if cell is None else cell
    return Trial(
        sweep, problem, dict(params), dict(cell), method, method, dict(options or {}), seed=seed, draw=draw
    )


def run_units(
    units: Sequence[Unit], *, name: str, sweep: str, config: Any, store: Any, progress: bool
) -> tuple[list[TrialRecord], SweepResult]:
    """Compute the units the store lacks, store each record, and return every unit's record in order.

    Args:
        units: (trial, compute) pairs; ``compute()`` returns the metrics (JSON values).
        name: the study's name.
        sweep: the sweep's name (``NAME`` or ``NAME/quick``).
        config: the study's configuration registered with the sweep: a dataclass or a mapping (a changed
            config with stored trials is refused by the store).
        store: a :class:`~flatminima.experiments.store.Store`, or None to store nothing.
        progress: draw a progress bar.

    Returns:
        (records of the units, in the order of ``units``; what the run did).
    """
    groups: list[Group] = [([trial], single(compute)) for trial, compute in units]
    return run_groups(groups, name=name, sweep=sweep, config=config, store=store, progress=progress)


def run_groups(
    groups: Sequence[Group], *, name: str, sweep: str, config: Any, store: Any, progress: bool
) -> tuple[list[TrialRecord], SweepResult]:
    """Compute every group with a trial missing from ``store`` and return all records, in trial order.

    As :func:`run_units`; a group whose computation raises (or returns the wrong number of metrics
    dicts) is recorded as failed, every trial of it with the one-line error.
    """
    trials = [trial for group, _ in groups for trial in group]
    if store is not None:
        store.register_sweep({"name": sweep, "study": name, "config": _config_dict(config)})
        finished = store.finished_keys([t.key for t in trials])
    else:
        finished = set()
    pending = [(group, compute) for group, compute in groups if any(t.key not in finished for t in group)]
    records: dict[str, TrialRecord] = {}
    start = time.perf_counter()
    failed = completed = 0
    with SweepProgress(sweep, len(pending), skipped=len(groups) - len(pending), enabled=progress) as bar:
        for group, compute in pending:
            begin = time.perf_counter()
            outcomes: list[tuple[dict[str, Any], str, str | None]]
            try:
                outcomes = [(dict(m), "ok", None) for m in compute()]
                if len(outcomes) != len(group):
                    raise RuntimeError(f"expected {len(group)} metrics dicts, got {len(outcomes)}")
            except Exception as failure:  # a failing group is recorded; the study goes on
                message = " ".join(f"{type(failure).__name__}: {failure}".split())
                outcomes = [({}, "failed", message)] * len(group)
            duration = (time.perf_counter() - begin) / len(group)
            for trial, (metrics, status, error) in zip(group, outcomes, strict=True):
                if trial.key in finished:
                    continue
                record = _record(trial, metrics, status, error, duration)
                records[trial.key] = record
                if store is not None:
                    store.write(record)
                completed += 1
                failed += status == "failed"
            bar.advance(failed=outcomes[0][1] == "failed")
    if store is not None:  # the records as the store holds them, so a fresh and a resumed run agree
        keys = {t.key for t in trials}
        records.update({r.key: r for r in store.records(sweep) if r.key in keys})
    result = SweepResult(
        sweep,
        len(trials),
        len(finished),
        completed,
        failed,
        time.perf_counter() - start,
        "in-process (network study)",
    )
    return [records[t.key] for t in trials if t.key in records], result


def single(function: Callable[..., Mapping[str, Any]], *args: Any) -> Callable[[], list[Mapping[str, Any]]]:
    """The computation of a one-trial group: ``[function(*args)]``, evaluated when called."""
    return functools.partial(_listed, function, *args)


def _listed(function: Callable[..., Mapping[str, Any]], *args: Any) -> list[Mapping[str, Any]]:
    return [function(*args)]


def _config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


def _record(
    trial: Trial, metrics: Mapping[str, Any], status: str, error: str | None, duration: float
) -> TrialRecord:
    from flatminima import __version__

    return TrialRecord(
        key=trial.key,
        trial=trial.to_dict(),
        metrics=dict(metrics),
        status=status,
        error=error,
        duration=duration,
        host=socket.gethostname(),
        version=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
    )


def records_frame(
    records: Sequence[TrialRecord], params: Sequence[str] | None = None, *, key: bool = False
) -> Any:
    """One row per record: its key (if ``key``), params, status, error, duration and the metrics.

    ``params`` names the trial parameters to show (all of them, in their stored order, by default).
    """
    import pandas

    rows = []
    for record in records:
        stored = record.trial["params"]
        row: dict[str, Any] = {"key": record.key} if key else {}
        row.update(stored if params is None else {p: stored[p] for p in params})
        row.update(status=record.status, error=record.error, duration=record.duration)
        row.update(record.metrics)
        rows.append(row)
    return pandas.DataFrame(rows)


def records_rows(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One dict per record: the trial's params, seed, draw, status, error and metrics (no duration).

    Params and metrics come in sorted order (as the store's canonical JSON holds them), so a fresh and
    a resumed run give the same columns.
    """
    rows = []
    for record in records:
        row = dict(sorted(record.trial["params"].items()))
        row.update(seed=record.trial["seed"], draw=record.trial["draw"])
        row.update(status=record.status, error=record.error, **dict(sorted(record.metrics.items())))
        rows.append(row)
    return rows
