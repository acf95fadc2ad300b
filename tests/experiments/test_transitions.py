"""Transitions: the logistic m50 fit, its profile-likelihood interval (coverage, separation), tables."""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas
import pytest

from flatminima.errors import InputDataError
from flatminima.experiments import figures
from flatminima.experiments.reproduction import bound_ratio_text, summarize_transitions
from flatminima.experiments.reproductions import REPRODUCTIONS
from flatminima.experiments.transitions import (
    Transition,
    fit_log_reference,
    fit_transition,
    format_transition,
    heatmap_overlays,
    intervals_overlap,
    reproduction_transitions,
    transition_table,
)

GRID = np.array([2.0, 4.0, 6.0, 8.0, 10.0, 12.0])


def _coverage(m50: float, slope: float, repeats: int, seed: int) -> tuple[float, float]:
    """Fraction of 95 % intervals covering the true m50, and of separated data sets."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (1.0 + np.exp(-slope * (np.log(GRID) - math.log(m50))))
    covered = separated = 0
    for _ in range(repeats):
        fit = fit_transition(GRID, rng.binomial(10, p), [10] * GRID.size)
        covered += fit.lower <= m50 <= fit.upper
        separated += fit.separated
    return covered / repeats, separated / repeats


@pytest.mark.parametrize(("slope", "seed"), [(4.0, 0), (10.0, 1)])
def test_profile_interval_covers_the_truth_95_percent(slope: float, seed: int) -> None:
    # 200 grid rows drawn from a known logistic curve (10 draws per cell, as in the fig3 reproductions);
    # slope 10 separates about half of them (the bracket case), slope 4 almost none
    coverage, separated = _coverage(5.3, slope, 200, seed)
    assert 0.90 <= coverage <= 0.99, coverage
    assert (separated > 0.3) == (slope > 5)


def test_overlapping_data_gives_the_maximum_likelihood_estimate() -> None:
    from scipy.optimize import minimize

    k, n = np.array([0, 3, 7, 10, 9, 10]), np.full(6, 10)
    fit = fit_transition(GRID, k, n)
    x = np.log(GRID)

    def negative(params: np.ndarray) -> float:
        eta = params[0] + params[1] * x
        return float(-(k * -np.logaddexp(0, -eta) + (n - k) * -np.logaddexp(0, eta)).sum())

    a, b = minimize(
        negative, np.array([0.0, 1.0]), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}
    ).x
    assert fit.slope == pytest.approx(b, rel=1e-4)
    assert fit.estimate == pytest.approx(math.exp(-a / b), rel=1e-4)
    assert not fit.separated and fit.lower < fit.estimate < fit.upper

    # at the interval's ends the profile deviance is chi2_1(0.95) = 3.841 (brute force over the slope)
    best = -negative(np.array([a, b]))
    for end in (fit.lower, fit.upper):
        slopes = np.linspace(0.01, 60, 60000)
        eta = slopes[:, None] * (x[None, :] - math.log(end))
        profile = (k * -np.logaddexp(0, -eta) + (n - k) * -np.logaddexp(0, eta)).sum(1).max()
        assert 2 * (best - profile) == pytest.approx(3.841, abs=2e-3)


def test_complete_separation_gives_the_bracket() -> None:
    fit = fit_transition(GRID, [0, 0, 10, 10, 10, 10], [10] * 6)
    assert fit.separated and fit.slope == math.inf
    assert (fit.lower, fit.upper) == (4.0, 6.0)  # last all-failure, first all-success
    assert fit.estimate == pytest.approx(math.sqrt(24))
    assert format_transition(fit) == "4.9 [4, 6]"
    assert format_transition(fit.scaled(8.0)) == "39.2 [32, 48]"


def test_quasi_separation_and_one_sided_data() -> None:
    quasi = fit_transition(GRID, [0, 0, 5, 10, 10, 10], [10] * 6)  # one mixed cell at 6
    assert quasi.separated and quasi.estimate == 6.0 and 4.0 < quasi.lower < 6.0 < quasi.upper < 8.0
    low_rate = fit_transition(GRID, [0, 0, 2, 10, 10, 10], [10] * 6)  # 2 / 10 at 6: the 50 % point is above
    assert low_rate.lower == 6.0 and 6.0 < low_rate.upper < 8.0
    everything = fit_transition(GRID, [10] * 6, [10] * 6)
    assert math.isnan(everything.estimate) and everything.lower == 0.0 and everything.upper == 2.0
    assert format_transition(everything) == "<= 2"
    nothing = fit_transition(GRID, [0] * 6, [10] * 6)
    assert nothing.lower == 12.0 and nothing.upper == math.inf and format_transition(nothing) == ">= 12"
    flat = fit_transition(GRID, [9, 7, 5, 3, 1, 0], [10] * 6)  # decreasing: no increasing transition
    assert flat.slope == 0.0 and format_transition(flat) == "n/a (no transition)"
    # single trials per observation, repeated values pooled
    pooled = fit_transition([2, 2, 4, 4, 6, 6], [0, 0, 0, 1, 1, 1])
    assert pooled.trials == 6 and pooled.separated


def test_overlap_and_errors() -> None:
    a = Transition(5.0, 4.0, 6.0, 3.0, False, 60)
    assert intervals_overlap(a, Transition(6.5, 6.0, 7.0, 3.0, False, 60))
    assert not intervals_overlap(a, Transition(7.5, 7.0, 8.0, 3.0, False, 60))
    with pytest.raises(InputDataError, match="values must be finite and > 0"):
        fit_transition([0.0, 1.0], [0, 1])
    with pytest.raises(InputDataError, match="one length; got lengths 2, 3, 2"):
        fit_transition([1.0, 2.0], [0, 1, 1])
    with pytest.raises(InputDataError, match="need 0 <= successes <= trials"):
        fit_transition([1.0, 2.0], [0, 3], [2, 2])
    with pytest.raises(InputDataError, match="level must satisfy 0 < level < 1"):
        fit_transition([1.0, 2.0], [0, 1], level=1.0)


def _sensing_frame(shift: float = 0.0) -> pandas.DataFrame:
    """Synthetic fig3-sensing trials: of 10 per cell, round(10 p) succeed, p = logistic in log(m / d / 5).

    The nuclear_norm threshold is 5 + shift; the one-trial-per-row layout of the store, labels stored
    in the 'wrong' order on purpose.
    """
    rows = []
    for label in ("nuclear_norm", "flat"):
        threshold = 5.0 + (shift if label == "nuclear_norm" else 0.0)
        for d in (8, 12):
            for ratio in GRID:
                p = 1.0 / (1.0 + math.exp(-6 * (math.log(ratio) - math.log(threshold))))
                for trial in range(10):
                    success = trial < round(10 * p)
                    rows.append(
                        {
                            "label": label,
                            "dim": d,
                            "measurements_per_dim": ratio,
                            "success": success,
                            "status": "ok",
                        }
                    )
    return pandas.DataFrame(rows)


def test_tables_summary_and_overlays() -> None:
    spec = REPRODUCTIONS["fig3-sensing"].specs(True)[0]  # type: ignore[union-attr]
    frame = _sensing_frame()
    table = transition_table(frame, x="dim", y="measurements_per_dim")
    assert list(table["label"]) == ["flat", "flat", "nuclear_norm", "nuclear_norm"]  # sorted, not stored
    assert np.allclose(table["m50"], table["estimate"] * table["dim"])
    fits = reproduction_transitions(
        frame,
        problem="matrix_sensing",
        fixed={"rank": 2},
        x="dim",
        y="measurements_per_dim",
        labels=["flat", "nuclear_norm"],
    )
    assert np.allclose(fits["m50_over_delta"] * fits["statistical_dimension"], fits["m50"])
    curves, marks, note = heatmap_overlays(
        fits, problem="matrix_sensing", fixed={"rank": 2}, x="dim", y="measurements_per_dim"
    )
    assert set(curves) == set(marks) == {"flat", "nuclear_norm"} and "statistical dimension" in note
    assert curves["flat"][0].ys[0] == pytest.approx(fits["statistical_dimension"].iloc[0] / 8)

    headers, rows = summarize_transitions({"s": frame}, spec)
    assert headers == ["solver / quantity", "m / d @50% (d=8)", "m / d @50% (d=12)"]  # d = 16: no trials
    table = {row[0]: row[1:] for row in rows}
    assert all(len(row) == len(headers) for row in rows)
    assert table["intervals overlap"] == ["yes", "yes"]
    assert table["flat [95% CI]"][0] == format_transition(fit_transition(*_cells(frame, "flat", 8)))
    assert float(table["stat. dim. delta / d"][0]) == pytest.approx(
        fits["statistical_dimension"].iloc[0] / 8, rel=1e-3
    )
    assert set(table) >= {"flat: m50 (measurements)", "nuclear_norm: m50 / delta", "flat: success (failed)"}
    far = _sensing_frame(shift=5.0)  # NNM needs m / d = 10: disjoint intervals
    assert {row[0]: row[1:] for row in summarize_transitions({"s": far}, spec)[1]}["intervals overlap"] == [
        "no",
        "no",
    ]


def _cells(frame: pandas.DataFrame, label: str, d: int) -> tuple[np.ndarray, np.ndarray]:
    part = frame[(frame["label"] == label) & (frame["dim"] == d)]
    return part["measurements_per_dim"].to_numpy(), part["success"].to_numpy(dtype=float)


def test_completion_reference_constant() -> None:
    dims = [8.0, 12.0, 16.0]
    values = [1.3 * 2 * math.log(d) / d for d in dims]
    assert fit_log_reference(dims, [*values[:2], math.nan], 2) == pytest.approx(1.3)
    assert math.isnan(fit_log_reference(dims, [math.nan] * 3, 2))


def test_bound_ratio_text_has_no_inf() -> None:
    values, bounds = pandas.Series([0.5, 1e-16, 0.2]), pandas.Series([2.0, 0.0, 1.0])
    assert bound_ratio_text(values, bounds) == "0.250; bound 0 at kappa = 1: max value 1.0e-16"
    assert bound_ratio_text(pandas.Series([1.0]), pandas.Series([math.inf])) == "n/a (unbounded: kappa = inf)"


def test_heatmap_with_overlays_renders(tmp_path: Path) -> None:
    frame = _sensing_frame()
    table = figures.success_table(frame, "dim", "measurements_per_dim", order=["nuclear_norm", "flat"])
    assert list(table) == ["nuclear_norm", "flat"]
    curve = figures.Curve("theory", [8, 12], [5.2, 6.1])
    marks = [figures.Mark(8, 5.0, 4.0, 6.0), figures.Mark(12, math.nan, 0.0, math.inf)]
    path = figures.success_heatmaps(
        frame,
        x="dim",
        y="measurements_per_dim",
        title="t",
        caption="c " * 200,
        path=tmp_path / "h.png",
        curves={"flat": [curve]},
        marks={"flat": marks, "nuclear_norm": marks[:1]},
    )
    assert path.stat().st_size > 5000


def test_docstring_examples(docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples("flatminima.experiments.transitions")
    assert result.failed == 0 and result.attempted >= 2
