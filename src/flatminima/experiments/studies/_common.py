"""Shared pieces of the network studies: seeds, digits training, flatness measures, tables, figures."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_int_in_range, check_real
from flatminima.curvature import (
    HessianOperator,
    epsilon_sharpness,
    hutchinson_trace,
    lanczos_eigenvalues,
)
from flatminima.errors import ConfigurationError
from flatminima.networks import Dataset, TrainingResult, load_digits_split, mlp, train_classifier
from flatminima.random import child_generators


def streams(seed: int) -> dict[str, torch.Generator]:
    """Independent generators (split, init, batches, measure) of one seed."""
    return child_generators(seed, "split", "init", "batches", "measure")


def digits(seed: int, num_train: int | None = None) -> Dataset:
    """The digits split of ``seed`` (the split stream of :func:`streams`)."""
    return load_digits_split(generator=streams(seed)["split"], num_train=num_train)


def train_digits(
    data: Dataset,
    seed: int,
    *,
    hidden: Sequence[int],
    learning_rate: float,
    batch_size: int,
    target_loss: float | None,
    max_epochs: int,
    weight_decay: float = 0.0,
) -> tuple[nn.Module, TrainingResult]:
    """(initial model, training result) of an MLP on ``data``; init and batch order from ``seed``."""
    gens = streams(seed)
    model = mlp(data.num_features, list(hidden), data.num_classes, generator=gens["init"])
    result = train_classifier(
        model,
        data,
        learning_rate=learning_rate,
        batch_size=batch_size,
        generator=gens["batches"],
        weight_decay=weight_decay,
        target_loss=target_loss,
        max_epochs=max_epochs,
    )
    return model, result


def check_grid(name: str, values: Sequence[Any], check: Callable[..., object], **bounds: Any) -> None:
    """Check that grid axis ``name`` is non-empty and each value passes ``check("name[i]", value, **bounds)``.

    Raises:
        ConfigurationError: if ``values`` is empty.
        InputDataError / InputTypeError: from ``check`` (e.g. :func:`flatminima._checks.check_real`).
    """
    if not values:
        raise ConfigurationError(f"{name} must hold at least one value; got {name}=().")
    for value in values:
        check(f"{name}[i]", value, **bounds)


@dataclasses.dataclass(frozen=True)
class BatchRegimes:
    """Small- against large-batch SGD on digits, the settings shared by the batch-size studies.

    Both regimes train the same MLP (``hidden`` widths) with the same learning rate until the training
    loss reaches ``target_loss`` or ``max_epochs`` pass; only the batch size differs (Keskar et al.,
    On large-batch training for deep learning: generalization gap and sharp minima, ICLR 2017).
    ``num_train`` subsamples the training split (None: all of it).
    """

    hidden: tuple[int, ...] = (32,)
    small_batch: int = 16
    large_batch: int = 629
    learning_rate: float = 0.1
    target_loss: float = 0.01
    max_epochs: int = 4000
    num_train: int | None = None

    def __post_init__(self) -> None:
        check_int_in_range("small_batch", self.small_batch, low=1)
        check_int_in_range("large_batch", self.large_batch, low=self.small_batch + 1)
        check_real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_real("target_loss", self.target_loss, low=0.0, low_open=True)
        check_int_in_range("max_epochs", self.max_epochs, low=1)

    def regimes(self, data: Dataset) -> tuple[tuple[str, int], ...]:
        """(("small", small_batch), ("large", large_batch)) after checking that both fit ``data``.

        Raises:
            ConfigurationError: if ``large_batch`` exceeds the training set.
        """
        if self.large_batch > data.num_train:
            raise ConfigurationError(
                f"large_batch must be <= the training set size {data.num_train}; "
                f"got large_batch={self.large_batch}."
            )
        return (("small", self.small_batch), ("large", self.large_batch))

    def train(self, data: Dataset, seed: int, batch_size: int) -> TrainingResult:
        """Train the MLP of ``seed`` on ``data`` with one regime's batch size (see :func:`train_digits`)."""
        return train_digits(
            data,
            seed,
            hidden=self.hidden,
            learning_rate=self.learning_rate,
            batch_size=batch_size,
            target_loss=self.target_loss,
            max_epochs=self.max_epochs,
        )[1]


def hessian(model: nn.Module, data: Dataset) -> HessianOperator:
    """The Hessian of the full training cross-entropy at the model's parameters (eval mode)."""
    return HessianOperator.from_model(
        model, nn.functional.cross_entropy, [(data.x_train, data.y_train)], mode="eval"
    )


def curvature(op: HessianOperator, generator: torch.Generator, *, num_probes: int = 100) -> dict[str, float]:
    """Top Hessian eigenvalue (Lanczos) and trace (Hutchinson, with its standard error)."""
    top = lanczos_eigenvalues(op, 1, generator=generator, tol=1e-6)
    trace = hutchinson_trace(op, num_probes, generator=generator)
    return {
        "top_eigenvalue": float(top.eigenvalues[0]),
        "trace": float(trace.value),
        "trace_stderr": float(trace.stderr),
    }


def keskar_sharpness(
    op: HessianOperator, generator: torch.Generator, epsilons: Sequence[float] = (1e-3, 5e-4)
) -> dict[str, float]:
    """Keskar's phi(eps, A) in percent, full space and a random 100-dim subspace, per eps."""
    out = {}
    for eps in epsilons:
        out[f"eps_sharpness_full_{eps:g}"] = epsilon_sharpness(op, eps, generator=generator).value
        dim = min(100, op.size)
        out[f"eps_sharpness_sub{dim}_{eps:g}"] = epsilon_sharpness(
            op, eps, subspace_dim=dim, generator=generator
        ).value
    return out


def mean_std(values: Any) -> str:
    """``mean ± std`` (sample std over seeds; one value shows as itself)."""
    import numpy

    array = numpy.asarray(list(values), dtype=float)
    if array.size == 0:
        return "-"
    if array.size == 1:
        return f"{array[0]:.4g}"
    return f"{array.mean():.4g} ± {array.std(ddof=1):.2g}"


def fmt(value: float) -> str:
    """A number for a summary table."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def caption(config: Any, extra: str = "") -> str:
    """A caption stating the configuration (and anything else a reader needs)."""
    import dataclasses

    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    text = "config: " + ", ".join(f"{k}={v}" for k, v in fields.items())
    return f"{text}. {extra}".strip()


def finish(fig: Any, text: str, path: Any) -> Any:
    """Add a wrapped caption under the axes, save at 120 dpi and close."""
    import textwrap

    from flatminima.landscape.plots import pyplot

    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(text, 150)), ha="left", va="bottom", fontsize=7)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def table_from(frame: Any, by: str, columns: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    """Per value of ``by``: mean ± std over rows of every column (headers from ``columns``' values)."""
    headers = [by, "n", *columns.values()]
    rows = []
    for key, group in frame.groupby(by, sort=False):
        rows.append([str(key), str(len(group)), *[mean_std(group[c]) for c in columns]])
    return headers, rows


# ---- stored trials: one trained model = one trial of the SQLite store, so a run resumes -------------


def study_trial(
    sweep: str, params: Mapping[str, Any], cell: Mapping[str, Any], seed: int, options: Mapping[str, Any]
) -> Any:
    """One model of a network study as a :class:`~flatminima.experiments.trial.Trial` of the store.

    Its key hashes (sweep, params, options, seed): ``params`` must hold every setting that changes the
    model and ``options`` every setting that changes its measures, so a changed study never reuses
    stale rows.
    """
    from flatminima.experiments.trial import Trial

    return Trial(sweep, "digits", dict(params), dict(cell), "sgd", "sgd", dict(options), seed=seed, draw=0)


def run_stored(
    trials: Sequence[tuple[Any, Callable[[], Mapping[str, Any]]]],
    *,
    sweep: str,
    study: str,
    config: Mapping[str, Any],
    store: Any,
    progress: bool,
) -> tuple[list[Any], Any]:
    """Run the (trial, compute) pairs not yet in ``store``; return every record (in order) and a summary.

    The sweep is registered as ``{"name": sweep, "study": study, "config": config}`` (a changed config
    with stored trials is refused by the store); ``compute()`` returns the trial's metrics. A trial that
    raises is stored as failed with its one-line reason and the study goes on. ``store`` None runs all.
    Returns (the records, in the order of ``trials``; a :class:`~flatminima.experiments.sweep.SweepResult`).
    """
    import datetime
    import socket
    import time

    from flatminima import __version__
    from flatminima.experiments.progress import SweepProgress
    from flatminima.experiments.sweep import SweepResult
    from flatminima.experiments.trial import TrialRecord

    keys = [trial.key for trial, _ in trials]
    finished: set[str] = set()
    if store is not None:
        store.register_sweep({"name": sweep, "study": study, "config": dict(config)})
        finished = store.finished_keys(keys)
    pending = [(trial, compute) for trial, compute in trials if trial.key not in finished]
    records: dict[str, Any] = {}
    start, failed = time.perf_counter(), 0
    with SweepProgress(sweep, len(pending), skipped=len(finished), enabled=progress) as bar:
        for trial, compute in pending:
            begin = time.perf_counter()
            try:
                metrics, status, error = dict(compute()), "ok", None
            except Exception as failure:  # a failing model is recorded; the study goes on
                reason = " ".join(f"{type(failure).__name__}: {failure}".split())
                metrics, status, error = {}, "failed", reason
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
    if store is not None:
        wanted = set(keys)
        records.update({r.key: r for r in store.records(sweep) if r.key in wanted})
    result = SweepResult(
        sweep,
        len(trials),
        len(finished),
        len(pending),
        failed,
        time.perf_counter() - start,
        "in-process (network study)",
    )
    return [records[key] for key in keys if key in records], result


def records_frame(records: Sequence[Any], params: Sequence[str]) -> Any:
    """One row per record: its key, the trial parameters ``params``, status, error, duration, metrics."""
    import pandas

    rows = []
    for record in records:
        row = {"key": record.key, **{p: record.trial["params"][p] for p in params}}
        row.update(status=record.status, error=record.error, duration=record.duration, **record.metrics)
        rows.append(row)
    return pandas.DataFrame(rows)


# ---- statistics and figures over seeds -------------------------------------------------------------


def kendall_bootstrap(
    x: Any, y: Any, generator: torch.Generator, *, resamples: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of Kendall's tau-b of (x, y), resampling the n pairs with replacement.

    Each resample draws n indices uniformly with replacement from ``generator`` and computes

        tau_b = sum_{i,j} s^x_ij s^y_ij / sqrt(sum s^x_ij^2 sum s^y_ij^2),  s^x_ij = sign(x_i - x_j),

    (scipy's tau-b, ties handled; pairs of a duplicated point are ties); resamples where x or y is
    constant give no tau and are left out. The interval is the (1 - level)/2 and (1 + level)/2
    percentiles of the rest (NaN, NaN when fewer than two pairs or no resample has a tau).
    """
    import numpy

    check_int_in_range("resamples", resamples, low=1)
    check_real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    xs, ys = numpy.asarray(x, dtype=float), numpy.asarray(y, dtype=float)
    n = len(xs)
    if n < 2:
        return math.nan, math.nan
    chunk = max(1, 4_000_000 // (n * n))
    taus = []
    for begin in range(0, resamples, chunk):
        count = min(chunk, resamples - begin)
        index = torch.randint(n, (count, n), generator=generator).numpy()
        a, b = xs[index], ys[index]
        sa = numpy.sign(a[:, :, None] - a[:, None, :])
        sb = numpy.sign(b[:, :, None] - b[:, None, :])
        denominator = numpy.sqrt((sa * sa).sum((1, 2)) * (sb * sb).sum((1, 2)))
        numerator = (sa * sb).sum((1, 2))
        with numpy.errstate(invalid="ignore", divide="ignore"):
            taus.append(numpy.where(denominator > 0, numerator / denominator, numpy.nan))
    values = numpy.concatenate(taus)
    values = values[~numpy.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    low, high = numpy.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def mean_bootstrap(
    values: Any, generator: torch.Generator, *, resamples: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped; NaN, NaN if none are left)."""
    import numpy

    check_int_in_range("resamples", resamples, low=1)
    array = numpy.asarray(values, dtype=float)
    array = array[~numpy.isnan(array)]
    if array.size == 0:
        return math.nan, math.nan
    index = torch.randint(array.size, (resamples, array.size), generator=generator).numpy()
    means = array[index].mean(1)
    low, high = numpy.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def seed_summary(frame: Any, by: Sequence[str], column: str) -> Any:
    """Per value of ``by``: mean, sample std (0 for one seed) and count of ``column`` (NaNs dropped)."""
    grouped = frame.groupby(list(by), sort=True)[column]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def errorbar_lines(
    ax: Any, frame: Any, x: str, column: str, hue: str | None = None, *, label: str = "", **style: Any
) -> None:
    """Draw mean ± std over the rows (seeds) of ``column`` against ``x``, one line per value of ``hue``."""
    groups = [(None, frame)] if hue is None else list(frame.groupby(hue, sort=True))
    for k, (value, group) in enumerate(groups):
        stats = seed_summary(group, [x], column)
        text = label if hue is None else f"{label}{value}"
        ax.errorbar(
            stats[x],
            stats["mean"],
            yerr=stats["std"],
            marker="o",
            markersize=4,
            capsize=3,
            label=text or None,
            **({"color": f"C{k}"} | style),
        )


def finish_captioned(fig: Any, text: str, path: Any, *, top: float = 0.95) -> Any:
    """Like :func:`finish`, but wrap to the figure's width and lay the axes out above the caption's lines."""
    import textwrap

    from flatminima.landscape.plots import pyplot

    width, height = fig.get_size_inches()
    lines = textwrap.wrap(text, max(60, int(width * 17)))
    bottom = min(0.5, (0.13 * len(lines) + 0.45) / height)
    fig.tight_layout(rect=(0, bottom, 1, top))
    fig.text(0.01, 0.005, "\n".join(lines), ha="left", va="bottom", fontsize=7)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path
