"""Shared pieces of the wen-xor, dauphin-index and choromanska-minima studies.

* :func:`run_stored`: run groups of trials (trained together, e.g. a batch of networks) into the SQLite
  store, one record per trial keyed by its configuration, and skip the groups whose trials are all
  stored, so an interrupted study resumes where it stopped (the mechanism of ``fantastic-measures``);
* :func:`bootstrap_interval`: a percentile bootstrap confidence interval of any statistic of rows
  resampled with replacement, drawn from an explicit generator;
* :func:`spearman`: Spearman's rank correlation (NaN when a variable is constant).

References:
    B. Efron, R. J. Tibshirani. An introduction to the bootstrap. Chapman & Hall, 1993 (percentile
    intervals).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from flatminima.experiments.progress import SweepProgress
from flatminima.experiments.sweep import SweepResult
from flatminima.experiments.trial import Trial, TrialRecord

#: a group of trials computed together and the function returning one metrics dict per trial, in order.
Group = tuple[Sequence[Trial], Callable[[], Sequence[Mapping[str, Any]]]]


def make_trial(
    sweep: str, problem: str, params: Mapping[str, Any], settings: Mapping[str, Any], *, seed: int, draw: int
) -> Trial:
    """A study trial: ``params`` are its grid coordinates, ``settings`` the study settings it depends on.

    Both enter the key, so a study run with other settings never reuses stale rows.
    """
    method = str(params.get("algorithm", "study"))
    return Trial(
        sweep, problem, dict(params), dict(params), method, method, dict(settings), seed=seed, draw=draw
    )


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


def run_stored(
    groups: Sequence[Group], *, sweep: str, name: str, config: Any, store: Any, progress: bool
) -> tuple[list[TrialRecord], SweepResult]:
    """Compute every group with a trial missing from ``store`` and return all records, in trial order.

    A group whose computation raises is recorded as failed (every trial of it, with the one-line error);
    the study goes on. ``store`` may be None (nothing is stored or skipped). The sweep is registered
    with the study's name and configuration, as for the other studies.
    """
    trials = [trial for group, _ in groups for trial in group]
    if store is not None:
        store.register_sweep({"name": sweep, "study": name, "config": dataclasses.asdict(config)})
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
    if store is not None:
        keys = {t.key for t in trials}
        records.update({r.key: r for r in store.records(sweep) if r.key in keys and r.key not in records})
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


def records_rows(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One dict per record: the trial's grid coordinates, seed, draw, status, error and metrics.

    Coordinates and metrics come in sorted order (as the store's canonical JSON holds them), so a fresh
    and a resumed run give the same columns.
    """
    rows = []
    for record in records:
        row = dict(sorted(record.trial["params"].items()))
        row.update(seed=record.trial["seed"], draw=record.trial["draw"])
        row.update(status=record.status, error=record.error, **dict(sorted(record.metrics.items())))
        rows.append(row)
    return rows


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of x and y (average ranks for ties); NaN if one is constant or n < 3."""
    import numpy
    from scipy.stats import rankdata

    a, b = numpy.asarray(x, dtype=float), numpy.asarray(y, dtype=float)
    if a.size < 3 or numpy.ptp(a) == 0 or numpy.ptp(b) == 0:
        return math.nan
    return float(numpy.corrcoef(rankdata(a), rankdata(b))[0, 1])


def bootstrap_interval(
    statistic: Callable[..., float],
    columns: Sequence[Any],
    *,
    generator: torch.Generator,
    num_resamples: int = 1000,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*columns)``, resampling the rows jointly.

    Resamples whose statistic is NaN (e.g. a constant resample) are dropped; (NaN, NaN) if there are
    fewer than two rows or no finite resample.
    """
    import numpy

    arrays = [numpy.asarray(c, dtype=float) for c in columns]
    n = len(arrays[0])
    if n < 2:
        return math.nan, math.nan
    draws = torch.randint(n, (num_resamples, n), generator=generator).numpy()
    values = numpy.array([statistic(*(a[idx] for a in arrays)) for idx in draws], dtype=float)
    values = values[numpy.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = numpy.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def interval_text(value: float, interval: tuple[float, float]) -> str:
    """``value [low, high]`` with three significant digits (``-`` for NaN)."""
    if math.isnan(value):
        return "-"
    return f"{value:.3g} [{interval[0]:.3g}, {interval[1]:.3g}]"


def single(function: Callable[..., Mapping[str, Any]], *args: Any) -> Callable[[], list[Mapping[str, Any]]]:
    """The computation of a one-trial group: ``[function(*args)]``, evaluated when called."""
    return functools.partial(_listed, function, *args)


def _listed(function: Callable[..., Mapping[str, Any]], *args: Any) -> list[Mapping[str, Any]]:
    return [function(*args)]


def legend(ax: Any, **options: Any) -> None:
    """``ax.legend(**options)`` when the axes have labelled artists (an empty panel gets none)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def error_bars(values: Any, low: Any, high: Any) -> list[Any]:
    """Matplotlib's ``[below, above]`` error-bar lengths of intervals [low, high], clipped at 0.

    A percentile bootstrap interval need not contain the point estimate (e.g. a statistic of a small
    resample with ties); the bar then ends at the value on that side.
    """
    import numpy

    values, low, high = (numpy.asarray(v, dtype=float) for v in (values, low, high))
    return [numpy.clip(values - low, 0.0, None), numpy.clip(high - values, 0.0, None)]


def plain_log_ticks(axis: Any) -> None:
    """Label a log axis at 1, 2 and 5 times the powers of ten, as plain numbers (``%g``).

    Matplotlib's default labels every minor tick of a short log range (3x10^-2, 4x10^-2, ...), which
    crowd each other.
    """
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10.0, subs=(1.0,)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 5.0)))
    axis.set_minor_formatter(FormatStrFormatter("%g"))
