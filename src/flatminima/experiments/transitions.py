r"""Phase transitions with confidence intervals: m50 (or p50) per dimension and method.

Model. At grid value v (measurements m, a ratio m / d, or an observation probability p) a trial
succeeds with probability sigma(b (log v - theta)), sigma the logistic function, b >= 0 the slope and
v50 = exp(theta) the value where half of the trials succeed. The cells of a grid row give k_j successes
out of n_j trials at v_j, and the log-likelihood is

    l(b, theta) = sum_j k_j log sigma(b z_j) + (n_j - k_j) log sigma(-b z_j),   z_j = log v_j - theta.

Estimate. Where successes and failures overlap (some failure at a larger v than some success) the
maximum-likelihood estimate (b, theta) is finite and found by Newton's method in (intercept, slope).

Interval: profile likelihood. The 95 % interval is {theta : 2 (l_max - l_p(theta)) <= chi2_1(0.95) =
3.84}, l_p(theta) = sup_{0 <= b <= inf} l(b, theta) (Venzon & Moolgavkar 1988). The slope's range
includes b = inf, the step function, so the interval stays defined under separation, where the slope's
maximum-likelihood estimate is infinite:

* complete separation (every cell below some v all failures, every cell above all successes): every
  theta between the last all-failure and the first all-success grid value has l_p = l_max = 0, so the
  interval contains that bracket and extends past it as far as the data allow (by the profile); the
  point estimate is the bracket's midpoint in log v;
* quasi-separation (one mixed cell at v0, all failures below, all successes above): the estimate is v0;
* all successes (or all failures): the interval is unbounded below (above): ``lower = 0``
  (``upper = inf``), and the estimate is nan; with no increasing trend at all it is (0, inf).

``slope`` reports b (inf under separation, 0 without an increasing trend). The coverage of these
intervals is checked on simulated logistic data in ``tests/experiments/test_transitions.py``.

References:
    D. J. Venzon, S. H. Moolgavkar. A method for computing profile-likelihood-based confidence
    intervals. J. R. Stat. Soc. C 37(1), 1988.
    A. Albert, J. A. Anderson. On the existence of maximum likelihood estimates in logistic regression
    models. Biometrika 71(1), 1984 (separation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy

from flatminima.errors import InputDataError
from flatminima.experiments.figures import Curve, Mark, axis_label

if TYPE_CHECKING:
    import pandas

__all__ = [
    "Transition",
    "fit_log_reference",
    "fit_transition",
    "format_transition",
    "heatmap_overlays",
    "intervals_overlap",
    "reproduction_transitions",
    "statistical_dimension_of",
    "transition_table",
]

_LOG_HALF = math.log(0.5)


@dataclasses.dataclass(frozen=True)
class Transition:
    """A fitted transition: v50 with its profile-likelihood interval (in the units of the grid values).

    Attributes:
        estimate: v50 (nan where it is not identified: all successes, all failures, no trend).
        lower, upper: the interval (``lower = 0`` / ``upper = inf`` when unbounded on that side).
        slope: b in sigma(b (log v - log v50)): inf under separation, 0 without an increasing trend.
        separated: successes and failures are separated by a grid value (no finite slope).
        trials: the number of trials.
        level: the confidence level.
    """

    estimate: float
    lower: float
    upper: float
    slope: float
    separated: bool
    trials: int
    level: float = 0.95

    def scaled(self, factor: float) -> Transition:
        """The same transition in units ``factor`` times larger (e.g. m / d -> m)."""
        return dataclasses.replace(
            self, estimate=self.estimate * factor, lower=self.lower * factor, upper=self.upper * factor
        )


def intervals_overlap(first: Transition, second: Transition) -> bool:
    """Whether the two intervals [lower, upper] intersect."""
    return first.lower <= second.upper and second.lower <= first.upper


def format_transition(transition: Transition) -> str:
    """``"48 [41, 55]"``, ``"<= 55"``, ``">= 41"`` or ``"n/a (no transition)"`` (3 significant digits)."""
    low, high, est = transition.lower, transition.upper, transition.estimate
    if low > 0 and math.isfinite(high):
        return f"{est:.3g} [{low:.3g}, {high:.3g}]" if math.isfinite(est) else f"[{low:.3g}, {high:.3g}]"
    if math.isfinite(high):
        return f"<= {high:.3g}"
    if low > 0:
        return f">= {low:.3g}"
    return "n/a (no transition)"


def _log_sigmoid(t: numpy.ndarray) -> numpy.ndarray:
    return -numpy.logaddexp(0.0, -t)


def _expit(t: numpy.ndarray) -> numpy.ndarray:
    """The logistic function 1 / (1 + exp(-t)), as (1 + tanh(t / 2)) / 2 (no overflow)."""
    return 0.5 * (1.0 + numpy.tanh(0.5 * t))


class _Cells:
    """Aggregated cells: log values x_j, successes k_j, trials n_j."""

    def __init__(self, x: numpy.ndarray, k: numpy.ndarray, n: numpy.ndarray) -> None:
        self.x, self.k, self.n = x, k, n

    def loglik(self, b: float, theta: float) -> float:
        z = self.x - theta
        if math.isinf(b):  # the step function: p = 1 above theta, 0 below, 1/2 at theta
            if numpy.any((z > 0) & (self.k < self.n)) or numpy.any((z < 0) & (self.k > 0)):
                return -math.inf
            return float(self.n[z == 0].sum() * _LOG_HALF)
        eta = b * z
        return float((self.k * _log_sigmoid(eta) + (self.n - self.k) * _log_sigmoid(-eta)).sum())

    def score(self, b: float, theta: float) -> float:
        """The score dl/db at (b, theta)."""
        z = self.x - theta
        return float((z * (self.k - self.n * _expit(b * z))).sum())

    def profile(self, theta: float) -> float:
        """l_p(theta) = sup_{0 <= b <= inf} l(b, theta); l is concave in b."""
        from scipy.optimize import brentq

        if self.score(0.0, theta) <= 0.0:
            return self.loglik(0.0, theta)
        z = self.x - theta
        limit = float((z * numpy.where(z > 0, self.k - self.n, self.k)).sum())  # score as b -> inf
        if limit >= 0.0:  # consistent with the step at theta: the sup is the limit b -> inf
            return self.loglik(math.inf, theta)
        high = 1.0
        while self.score(high, theta) > 0.0:
            high *= 4.0
        b = float(brentq(lambda s: self.score(s, theta), 0.0, high, xtol=1e-10, rtol=1e-12))
        return self.loglik(b, theta)


def _newton(cells: _Cells) -> tuple[float, float]:
    """Maximum-likelihood (slope, theta) where successes and failures overlap (a finite maximum)."""
    center = float((cells.n * cells.x).sum() / cells.n.sum())
    u = cells.x - center
    rate = min(max(cells.k.sum() / cells.n.sum(), 1e-3), 1 - 1e-3)
    params = numpy.array([math.log(rate / (1 - rate)), 0.0])

    def value(p: numpy.ndarray) -> float:
        eta = p[0] + p[1] * u
        return float((cells.k * _log_sigmoid(eta) + (cells.n - cells.k) * _log_sigmoid(-eta)).sum())

    current = value(params)
    for _ in range(100):
        prob = _expit(params[0] + params[1] * u)
        residual = cells.k - cells.n * prob
        gradient = numpy.array([residual.sum(), (residual * u).sum()])
        weight = cells.n * prob * (1 - prob)
        hessian = numpy.array(
            [[weight.sum(), (weight * u).sum()], [(weight * u).sum(), (weight * u * u).sum()]]
        )
        step = numpy.linalg.solve(hessian + 1e-12 * numpy.eye(2), gradient)
        scale = 1.0
        while value(params + scale * step) < current - 1e-12 and scale > 1e-8:
            scale /= 2
        params = params + scale * step
        previous, current = current, value(params)
        if abs(current - previous) < 1e-12 and numpy.abs(gradient).max() < 1e-8:
            break
    slope = float(params[1])
    return slope, (center - float(params[0]) / slope if slope > 0 else math.nan)


def fit_transition(
    values: Sequence[float] | numpy.ndarray,
    successes: Sequence[float] | numpy.ndarray,
    trials: Sequence[float] | numpy.ndarray | None = None,
    *,
    level: float = 0.95,
) -> Transition:
    """Fit sigma(b (log v - log v50)) to successes at grid values v; v50 with a profile-likelihood interval.

    Args:
        values: the grid value v > 0 of each observation (repeats allowed; they are pooled).
        successes: successes per observation (0/1 or booleans, or counts with ``trials``).
        trials: trials per observation (default 1 each).
        level: the confidence level, in (0, 1).

    Returns:
        A :class:`Transition` (see the module docstring for separation and unbounded intervals).

    Raises:
        InputDataError: empty or mismatched inputs, v <= 0, counts out of range, level not in (0, 1).

    Example:
        >>> t = fit_transition([2, 4, 6, 8], [0, 3, 7, 10], [10, 10, 10, 10])
        >>> format_transition(t), round(t.slope, 2)
        ('4.8 [3.95, 5.66]', 5.93)
    """
    from scipy.optimize import brentq
    from scipy.stats import chi2

    v = numpy.asarray(values, dtype=float).reshape(-1)
    k = numpy.asarray(successes, dtype=float).reshape(-1)
    n = numpy.ones_like(v) if trials is None else numpy.asarray(trials, dtype=float).reshape(-1)
    if v.size == 0 or not v.size == k.size == n.size:
        raise InputDataError(
            "values, successes, trials must be non-empty and of one length; got lengths "
            f"{v.size}, {k.size}, {n.size}."
        )
    if not (numpy.all(numpy.isfinite(v)) and numpy.all(v > 0)):
        raise InputDataError(f"values must be finite and > 0; got {v.tolist()}.")
    if not (numpy.all(n >= 1) and numpy.all(k >= 0) and numpy.all(k <= n)):
        raise InputDataError(f"need 0 <= successes <= trials, trials >= 1; got {k.tolist()}, {n.tolist()}.")
    if not 0.0 < level < 1.0:
        raise InputDataError(f"level must satisfy 0 < level < 1; got level={level}.")
    x_all = numpy.log(v)
    x = numpy.unique(x_all)
    cells = _Cells(
        x, numpy.array([k[x_all == xi].sum() for xi in x]), numpy.array([n[x_all == xi].sum() for xi in x])
    )
    failing, passing = x[cells.k < cells.n], x[cells.k > 0]
    overlap = failing.size > 0 and passing.size > 0 and failing.max() > passing.min()
    tiny = 1e-9 * max(float(x[-1] - x[0]), 1.0)
    if overlap:
        slope, theta = _newton(cells)
        separated, start = False, theta
        if slope <= 0:  # no increasing trend: the constrained maximum is the limit theta -> +-inf
            return Transition(math.nan, 0.0, math.inf, 0.0, False, int(cells.n.sum()), level)
        best = cells.loglik(slope, theta)
    else:
        separated, slope = True, math.inf
        mixed = (cells.k > 0) & (cells.k < cells.n)
        rates = cells.k[mixed] / cells.n[mixed]
        best = float((cells.n[mixed] * (rates * numpy.log(rates) + (1 - rates) * numpy.log1p(-rates))).sum())
        if passing.size == 0 or failing.size == 0:
            theta = math.nan
            start = x[-1] + tiny if passing.size == 0 else x[0] - tiny
        elif mixed.any():  # quasi-separation at x0: the sup is approached from the side of the rate
            theta = float(x[mixed][0])
            start = theta + (tiny if rates[0] < 0.5 else -tiny)
        else:
            theta = 0.5 * float(failing.max() + passing.min())
            start = theta
    cutoff = float(chi2.ppf(level, 1))
    span = max(float(x[-1] - x[0]), 1.0)

    def excess(t: float) -> float:
        return 2.0 * (best - cells.profile(t)) - cutoff

    def endpoint(direction: float) -> float:  # march out with growing steps, then bisect the crossing
        inside, step = start, span / 40
        limit = (x[0] - span) if direction < 0 else (x[-1] + span)
        while (limit - inside) * direction > 0:
            trial = inside + direction * step
            if excess(trial) > 0:
                return float(brentq(excess, min(inside, trial), max(inside, trial), xtol=1e-8))
            inside, step = trial, step * 1.5
        return -math.inf if direction < 0 else math.inf

    def snap(t: float) -> float:  # an endpoint at a jump of the profile (a grid value) is that value
        near = x[numpy.abs(x - t) < 1e-6] if math.isfinite(t) else x[:0]
        return float(near[0]) if near.size else t

    low, high = snap(endpoint(-1.0)), snap(endpoint(1.0))
    return Transition(
        estimate=math.exp(theta) if math.isfinite(theta) else math.nan,
        lower=math.exp(low),
        upper=math.exp(high),
        slope=slope,
        separated=separated,
        trials=int(cells.n.sum()),
        level=level,
    )


def transition_table(
    frame: pandas.DataFrame, *, x: str, y: str, labels: Sequence[str] | None = None, level: float = 0.95
) -> pandas.DataFrame:
    """One :func:`fit_transition` per (label, x value) over the y grid of a stored sweep's frame.

    Failed trials count as not recovered (as in the heat maps). With ``y = "measurements_per_dim"``
    and ``x = "dim"`` the fit is in m / d and the columns ``m50``, ``m50_lower``, ``m50_upper`` give
    it in measurements (times d).

    Returns:
        A frame with columns label, x, quantity (= y), estimate, lower, upper, slope, separated,
        trials (and the m50 columns), in the order of ``labels`` (default: sorted) and of x.
    """
    import pandas

    order = list(labels) if labels is not None else sorted(map(str, frame["label"].unique()))
    rows = []
    for label in order:
        group = frame[frame["label"] == label]
        for value, cell in sorted(group.groupby(x), key=lambda item: float(item[0])):
            success = cell["success"].fillna(False).astype(bool).to_numpy()
            fit = fit_transition(cell[y].to_numpy(dtype=float), success.astype(float), level=level)
            row = {"label": label, x: value, "quantity": y, **dataclasses.asdict(fit)}
            if y == "measurements_per_dim" and x == "dim":
                scaled = fit.scaled(float(value))
                row.update(m50=scaled.estimate, m50_lower=scaled.lower, m50_upper=scaled.upper)
            rows.append(row)
    return pandas.DataFrame(rows)


def statistical_dimension_of(problem: str, fixed: Mapping[str, Any], dim: int) -> float | None:
    """The phase-transition measurement count of the NNM relaxation of ``problem`` at size d, or None.

    matrix_sensing, bilinear_sensing: :func:`~flatminima.theory.nuclear_norm_statistical_dimension`
    (d, d, rank); quadratic_network: :func:`~flatminima.theory.symmetric_nuclear_norm_statistical_dimension`
    (d, r1 + r2) (its relaxation is the nuclear norm over symmetric matrices, the truth indefinite).
    Exact for Gaussian measurements (sensing); a reference for the rank-one measurements of the others.
    """
    from flatminima.theory import (
        nuclear_norm_statistical_dimension,
        symmetric_nuclear_norm_statistical_dimension,
    )

    if problem in ("matrix_sensing", "bilinear_sensing") and "rank" in fixed:
        return nuclear_norm_statistical_dimension(dim, dim, int(fixed["rank"]))
    if problem == "quadratic_network":
        rank = int(fixed.get("num_positive", 0)) + int(fixed.get("num_negative", 0))
        return symmetric_nuclear_norm_statistical_dimension(dim, rank)
    return None


def fit_log_reference(dims: Sequence[float], values: Sequence[float], rank: int) -> float:
    """C minimizing sum_d (p50_d - C r log(d) / d)^2 over the finite p50 (nan if there are none)."""
    d = numpy.asarray(dims, dtype=float)
    p = numpy.asarray(values, dtype=float)
    keep = numpy.isfinite(p)
    basis = rank * numpy.log(d[keep]) / d[keep]
    return float((basis * p[keep]).sum() / (basis * basis).sum()) if keep.any() else math.nan


def reproduction_transitions(
    frame: pandas.DataFrame,
    *,
    problem: str,
    fixed: Mapping[str, Any],
    x: str,
    y: str,
    labels: Sequence[str],
) -> pandas.DataFrame:
    """:func:`transition_table` plus, where a theory applies, ``statistical_dimension`` and m50 / delta.

    The columns ``m50_over_delta``, ``m50_over_delta_lower``, ``m50_over_delta_upper`` divide the m50
    columns by the statistical dimension of the problem's nuclear-norm relaxation (Gaussian theory).
    """
    table = transition_table(frame, x=x, y=y, labels=labels)
    if table.empty or "m50" not in table:
        return table
    delta = [statistical_dimension_of(problem, fixed, int(d)) for d in table[x]]
    if all(value is not None for value in delta):
        table["statistical_dimension"] = delta
        for column in ("", "_lower", "_upper"):
            table[f"m50_over_delta{column}"] = table[f"m50{column}"] / table["statistical_dimension"]
    return table


def heatmap_overlays(
    table: pandas.DataFrame, *, problem: str, fixed: Mapping[str, Any], x: str, y: str
) -> tuple[dict[str, list[Curve]], dict[str, list[Mark]], str]:
    """Per label: the theory curve(s) and the fitted 50 % points in y units, and a caption sentence.

    Sensing-type grids (y = m / d) get delta(d) / d; completion (y = p) gets C r log(d) / d with C
    fitted by least squares to that panel's p50 estimates.
    """
    curves: dict[str, list[Curve]] = {}
    marks: dict[str, list[Mark]] = {}
    constants: dict[str, float] = {}
    cone = "symmetric nuclear norm" if problem == "quadratic_network" else "nuclear norm"
    for label, group in table.groupby("label", sort=False) if len(table) else []:
        label = str(label)
        xs = [float(v) for v in group[x]]
        marks[label] = [
            Mark(v, float(r.estimate), float(r.lower), float(r.upper))
            for v, r in zip(xs, group.itertuples(), strict=True)
        ]
        if "statistical_dimension" in group:
            ys = [float(s) / v for s, v in zip(group["statistical_dimension"], xs, strict=True)]
            curves[label] = [Curve(f"statistical dimension δ(d) / d, {cone} (ALMT 2014)", xs, ys)]
        elif y == "probability" and "rank" in fixed:
            rank = int(fixed["rank"])
            constants[label] = c = fit_log_reference(xs, group["estimate"].tolist(), rank)
            if math.isfinite(c):
                ys = [c * rank * math.log(v) / v for v in xs]
                curves[label] = [Curve("C r log(d) / d, C fitted per panel", xs, ys)]
    notes = [
        f"Markers: the 50% point of a logistic fit in log {axis_label(y)} per column with its 95% "
        "profile-likelihood interval (under complete separation: the bracket between the last "
        "all-failure and the first all-success grid value)."
    ]
    if "statistical_dimension" in table:
        notes.append(
            f"Dashed: the statistical dimension δ of the {cone} descent cone at the truth (Amelunxen, "
            "Lotz, McCoy, Tropp 2014) divided by d: the Gaussian-measurement threshold of NNM (for "
            "rank-one measurements a reference only)."
        )
    elif constants:
        fitted = ", ".join(f"{c:.2f} ({label})" for label, c in constants.items())
        notes.append(
            f"Dashed: C r log(d) / d with C fitted by least squares to each panel's p50: C = {fitted} "
            "(the shape of completion's sample complexity, not a sharp theory)."
        )
    return curves, marks, " ".join(notes)
