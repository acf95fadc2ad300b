"""Statistics and figure helpers of the network studies.

* :func:`bootstrap_interval`: a percentile bootstrap confidence interval of any statistic of rows
  resampled with replacement, drawn from an explicit generator; :func:`kendall_bootstrap` (Kendall's
  tau-b, vectorized) and :func:`mean_bootstrap` (the mean) are its special cases of the
  ``fantastic-measures`` study;
* :func:`wilson_interval`: the Wilson score interval of a binomial proportion;
* :func:`spearman`: Spearman's rank correlation (NaN when a variable is constant);
* :func:`interval_text`, :func:`legend`, :func:`error_bars`, :func:`plain_log_ticks`: tables and figures.

The stored-trial loop the studies share is :mod:`~flatminima.experiments.studies._stored_trials`.

References:
    B. Efron, R. J. Tibshirani. An introduction to the bootstrap. Chapman & Hall, 1993 (percentile
    intervals).
    E. B. Wilson. Probable inference, the law of succession, and statistical inference. JASA 22, 1927.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from flatminima._checks import check_int_in_range, check_real


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


def interval_text(value: float, interval: tuple[float, float]) -> str:
    """``value [low, high]`` with three significant digits (``-`` for NaN)."""
    if math.isnan(value):
        return "-"
    return f"{value:.3g} [{interval[0]:.3g}, {interval[1]:.3g}]"


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
