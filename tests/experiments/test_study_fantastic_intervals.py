"""Bootstrap intervals on the Kendall taus of fantastic-measures, and the measures it gained."""

from __future__ import annotations

import math
from typing import Any

import numpy
import pandas
import pytest
import torch
from scipy.stats import kendalltau

from flatminima.errors import InputDataError
from flatminima.experiments.studies import _study_tools as tools
from flatminima.experiments.studies import fantastic


def test_one_resample_is_scipys_tau_b_of_the_resampled_pairs() -> None:
    x = numpy.array([0.3, 1.2, 0.7, 2.5, 1.9, 0.1, 1.2, 3.3])
    y = numpy.array([1.0, 0.0, 2.0, 3.0, 3.0, 0.5, 1.5, 2.0])
    index = torch.randint(len(x), (1, len(x)), generator=torch.Generator().manual_seed(5)).numpy()[0]
    expected = kendalltau(x[index], y[index]).statistic  # tau-b: duplicated points are ties
    low, high = tools.kendall_bootstrap(x, y, torch.Generator().manual_seed(5), resamples=1)
    assert low == pytest.approx(expected, abs=1e-12) and high == pytest.approx(expected, abs=1e-12)


def test_interval_is_reproducible_ordered_and_exact_for_concordant_data() -> None:
    x = numpy.arange(12.0)
    low, high = tools.kendall_bootstrap(x, 2 * x + 1, torch.Generator().manual_seed(0), resamples=200)
    assert (low, high) == (1.0, 1.0)  # every resample is concordant (ties excluded by tau-b)
    rng = numpy.random.default_rng(0)  # data only; the resampling uses the torch generator
    a, b = rng.normal(size=30), rng.normal(size=30)
    first = tools.kendall_bootstrap(a, b, torch.Generator().manual_seed(1), resamples=300)
    again = tools.kendall_bootstrap(a, b, torch.Generator().manual_seed(1), resamples=300)
    other = tools.kendall_bootstrap(a, b, torch.Generator().manual_seed(2), resamples=300)
    assert first == again and first != other
    assert -1 <= first[0] < kendalltau(a, b).statistic < first[1] <= 1
    assert all(math.isnan(v) for v in tools.kendall_bootstrap([1.0], [2.0], torch.Generator()))
    with pytest.raises(InputDataError, match=r"resamples must be >= 1; got resamples=0"):
        tools.kendall_bootstrap(a, b, torch.Generator(), resamples=0)


def test_mean_bootstrap_of_constant_values_is_the_value() -> None:
    assert tools.mean_bootstrap([0.5, 0.5, math.nan], torch.Generator().manual_seed(0)) == (0.5, 0.5)
    assert all(math.isnan(v) for v in tools.mean_bootstrap([], torch.Generator()))


def _frame(seed_count: int = 3) -> pandas.DataFrame:
    rows = []
    for lr, width, seed in ((lr, w, s) for lr in (0.1, 0.3) for w in (8, 32) for s in range(seed_count)):
        row: dict[str, Any] = dict.fromkeys(fantastic.HYPERPARAMETERS, 0)
        gap = 0.1 * lr + 0.001 * width + 0.01 * seed
        row.update(learning_rate=lr, width=width, seed=seed, status="ok", reached_target=True, gap_error=gap)
        row["path_norm"] = gap  # a perfect measure
        row["parameter_norm"] = -gap if lr == 0.1 else gap  # agrees along width only at lr = 0.3
        rows.append(row)
    return pandas.DataFrame(rows)


def test_correlations_carry_intervals_for_every_tau() -> None:
    taus = fantastic.correlations(_frame(), resamples=300, seed=4)
    varied = ["learning_rate", "width", "seed"]
    expected = ["measure", "kind", "tau", *varied, "Psi", "models"]
    expected += ["tau_low", "tau_high", *[f"{h}_{end}" for h in varied for end in ("low", "high")]]
    assert list(taus.columns) == [*expected, "Psi_low", "Psi_high"]
    taus = taus.set_index("measure")
    perfect = taus.loc["path_norm"]
    assert perfect["tau"] == 1.0 and (perfect["tau_low"], perfect["tau_high"]) == (1.0, 1.0)
    assert (perfect["Psi_low"], perfect["Psi_high"]) == (1.0, 1.0)
    mixed = taus.loc["parameter_norm"]
    # psi_width: -1 in the three lr = 0.1 groups, +1 in the three lr = 0.3 groups; mean 0
    assert mixed["width"] == pytest.approx(0.0)
    assert -1.0 <= mixed["width_low"] < 0.0 < mixed["width_high"] <= 1.0
    known = taus.dropna(subset=["tau"])
    assert (known["tau_low"] <= known["tau_high"]).all()
    assert math.isnan(taus.loc["hutchinson_trace", "tau_low"])  # no such column: no tau, no interval
    again = fantastic.correlations(_frame(), resamples=300, seed=4).set_index("measure")
    pandas.testing.assert_frame_equal(taus, again)


def test_new_measures_and_config_checks() -> None:
    for name in ("hochreiter_box", "expected_sharpness_kl"):
        assert name in fantastic.FLATNESS
    for name in ("vc_bartlett2019", "vc_harvey2017"):
        assert name in fantastic.BASELINES
    with pytest.raises(InputDataError, match=r"bootstrap_resamples must be >= 1; got bootstrap_resamples=0"):
        fantastic.FantasticConfig(bootstrap_resamples=0)
    with pytest.raises(InputDataError, match=r"confidence must satisfy 0.0 < confidence < 1.0; got"):
        fantastic.FantasticConfig(confidence=1.0)
