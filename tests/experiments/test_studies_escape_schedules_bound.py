"""The stability-escape, schedules and dziugaite-roy studies: tiny end-to-end runs, resumption, errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pandas
import pytest
import torch

from flatminima.errors import ConfigurationError, InputDataError
from flatminima.experiments.reproductions import REPRODUCTIONS
from flatminima.experiments.runner import reproduce
from flatminima.experiments.studies import dziugaite_roy, schedules_study, stability_escape
from flatminima.experiments.studies._study_tools import wilson_interval
from flatminima.experiments.study import Study

TINY_ESCAPE = dataclasses.replace(
    stability_escape.QUICK,
    sensing_dim=4,
    sensing_measurements=10,
    gd_inits=(0.3,),
    gd_iterations=2000,
    rescalings=(2.0,),
    digits_examples=12,
    digits_hidden=(3,),
    digits_target_loss=1e-3,
    step_fractions=(0.2, 1.0),
    batch_sizes=(1,),
    runs=4,
    max_steps=60,
)
TINY_SCHEDULES = dataclasses.replace(
    schedules_study.QUICK,
    schedules=("constant", "burst"),
    seeds=(0,),
    hidden=(8,),
    epochs=2,
    num_train=100,
    sensing_seeds=(0,),
    sensing_dim=4,
    sensing_measurements=12,
    sensing_iterations=100,
)
TINY_BOUND = dataclasses.replace(
    dziugaite_roy.QUICK,
    seeds=(0,),
    train_sizes=(64,),
    hidden=(8,),
    sgd_epochs=3,
    bound_steps=20,
    mc_samples=50,
)


def _run_twice(name: str, tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pandas.DataFrame:
    """Run ``name`` with the tiny quick config, check the outputs, rerun and check that it reads the store."""
    study = REPRODUCTIONS[name]
    assert isinstance(study, Study)
    monkeypatch.setitem(REPRODUCTIONS, name, dataclasses.replace(study, quick=tiny))
    outcome = reproduce(name, quick=True, out_dir=tmp_path, progress=False)
    assert outcome.csv == tmp_path / f"{name}.csv" and outcome.figure == tmp_path / f"{name}.png"
    assert outcome.figure.stat().st_size > 10_000
    (sweep,) = outcome.sweeps
    assert sweep.skipped == 0 and sweep.completed == sweep.total and sweep.failed == 0
    frame = pandas.read_csv(outcome.csv)
    again = reproduce(name, quick=True, out_dir=tmp_path, progress=False)
    (sweep,) = again.sweeps
    assert sweep.skipped == sweep.total and sweep.completed == 0
    assert again.table == outcome.table
    pandas.testing.assert_frame_equal(
        pandas.read_csv(again.csv).drop(columns="duration"), frame.drop(columns="duration")
    )
    return frame


def test_stability_escape_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _run_twice("stability-escape", TINY_ESCAPE, tmp_path, monkeypatch)
    columns = {
        "setting",
        "minimum",
        "fraction",
        "batch",
        "learning_rate",
        "lambda_max",
        "trace",
        "frobenius",
        "non_uniformity",
        "growth",
        "stable",
        "escape_probability",
        "wilson_low",
        "wilson_high",
        "escape_step_median",
        "predicted_escape_step",
        "eta_lambda_max",
        "eta_sqrt_c_s",
        "trace_frobenius_index",
    }
    assert columns <= set(frame.columns)
    assert set(frame["setting"]) == {"sensing", "digits"}
    cells = (4 + 2) * len(TINY_ESCAPE.step_fractions) * (len(TINY_ESCAPE.batch_sizes) + 1)
    assert len(frame) == cells and (frame["runs"] == TINY_ESCAPE.runs).all()
    assert (
        (frame["wilson_low"] <= frame["escape_probability"])
        & (frame["escape_probability"] <= frame["wilson_high"])
    ).all()
    assert (frame["loss"] < 1e-2).all()
    # the GD cells: exact growth max (1 - eta lambda)^2 on S, so unstable iff eta lambda_max > 2
    gd = frame[frame["batch"] == frame["num_examples"]]
    assert (gd["stable"] == (gd["eta_lambda_max"] <= 2 * (1 + 1e-8))).all()
    # the flat solution has the smallest Hessian trace of the zero-loss points (d1 = d2: tr H = d str)
    sensing = frame[frame["setting"] == "sensing"].groupby("minimum")[["trace", "lambda_max"]].first()
    assert sensing.loc["flat", "trace"] <= sensing["trace"].min() * (1 + 1e-6)
    assert sensing.loc["flat-rescaled-2", "lambda_max"] > sensing.loc["flat", "lambda_max"]
    runs = pandas.read_csv(tmp_path / "stability-escape_runs.csv")
    assert len(runs) == cells * TINY_ESCAPE.runs and set(runs.columns) >= {
        "escape_step",
        "final_log10_excess",
    }


def test_schedules_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _run_twice("schedules", TINY_SCHEDULES, tmp_path, monkeypatch)
    digits = frame[frame["setting"] == "digits"]
    sensing = frame[frame["setting"] == "sensing"]
    assert len(digits) == 2 and len(sensing) == 2 * 2 * 2
    assert {"top_eigenvalue", "trace", "test_accuracy", "final_rate"} <= set(digits.columns)
    assert {"str_ratio", "final_loss", "recovery_error", "lambda_max_ratio", "critical_rate"} <= set(
        frame.columns
    )
    assert set(frame["kind"]) == {"monotone", "non-monotone"}
    # the constant schedule ends at eta_high, the others at eta_high / peak
    final = digits.set_index("schedule")["final_rate"]
    assert final["constant"] == pytest.approx(TINY_SCHEDULES.learning_rate)
    assert final["burst"] == pytest.approx(TINY_SCHEDULES.learning_rate / TINY_SCHEDULES.peak)
    gd = sensing[sensing["solver"] == "gd"]
    assert gd["learning_rate"].to_numpy() == pytest.approx(0.9 * gd["critical_rate"].to_numpy())
    assert (sensing["critical_rate"] > 0).all()


def test_dziugaite_roy_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _run_twice("dziugaite-roy", TINY_BOUND, tmp_path, monkeypatch)
    assert sorted(frame["train_size"]) == [64, 1438]
    terms = {
        "bound",
        "kl",
        "union_term",
        "confidence_term",
        "kl_budget",
        "mc_error",
        "mc_error_bound",
        "held_out_error_stochastic",
        "held_out_error_mean",
        "sgd_held_out_error",
        "prior_variance",
        "mc_correction",
        "pac_bayes_gap",
        "kl_per_example",
    }
    assert terms <= set(frame.columns)
    assert (frame["bound"] >= frame["mc_error_bound"]).all() and (
        frame["mc_error_bound"] >= frame["mc_error"]
    ).all()
    total = frame["mc_error"] + frame["mc_correction"] + frame["pac_bayes_gap"]
    assert total.to_numpy() == pytest.approx(frame["bound"].to_numpy())
    assert frame["kl_budget"].to_numpy() == pytest.approx(
        ((frame["kl"] + frame["union_term"] + frame["confidence_term"]) / frame["num_examples"]).to_numpy()
    )


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigurationError, match=r"batch_sizes must be <= the smaller training set.*= 20; got"
    ):
        stability_escape.StabilityEscapeConfig(batch_sizes=(1, 40))
    with pytest.raises(
        InputDataError, match=r"escape_factor must satisfy 1.0 < escape_factor; got escape_factor=0.5"
    ):
        stability_escape.StabilityEscapeConfig(escape_factor=0.5)
    with pytest.raises(
        ConfigurationError, match=r"step_fractions must hold at least one value; got step_fractions=\(\)"
    ):
        stability_escape.StabilityEscapeConfig(step_fractions=())
    with pytest.raises(ConfigurationError, match=r"schedules must name schedules of .*; got 'sgdr'"):
        schedules_study.SchedulesConfig(schedules=("constant", "sgdr"))
    with pytest.raises(InputDataError, match=r"peak must satisfy 1.0 < peak; got peak=1.0"):
        schedules_study.SchedulesConfig(peak=1.0)
    with pytest.raises(ConfigurationError, match=r"delta \+ delta_prime must be < 1; got"):
        dziugaite_roy.DziugaiteRoyConfig(delta=0.6, delta_prime=0.5)
    with pytest.raises(InputDataError, match=r"train_sizes\[i\] must be >= 32; got train_sizes\[i\]=10"):
        dziugaite_roy.DziugaiteRoyConfig(train_sizes=(10,))
    config = dataclasses.replace(TINY_BOUND, train_sizes=(5000,))
    with pytest.raises(
        ConfigurationError, match=r"train_sizes must be <= the training split size 1438; got 5000"
    ):
        dziugaite_roy.run(config, tmp_path, "dziugaite-roy", sweep="x", store=None, progress=False)


def test_helpers() -> None:
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    s = schedules_study.schedule("burst", 100, peak=4.0, cycles=2, warmup=0.1)
    assert s(0) == 0.25 and s(65) == 1.0 and s(99) == 0.25  # eta_high / peak outside the burst
    warm = schedules_study.schedule("constant", 100, peak=4.0, cycles=2, warmup=0.1)
    assert warm(0) == pytest.approx(0.25 + 0.75 / 10) and warm(10) == 1.0
    # GD's critical rate at a zero-loss point is 2 / lambda_max; SGD's is smaller
    from flatminima.objectives import BilinearFactorization
    from flatminima.problems import MatrixSensing
    from flatminima.solvers import ConvexResult, solve_flat

    instance = MatrixSensing(shape=(4, 4), rank=1, num_measurements=10).sample(
        generator=torch.Generator().manual_seed(0)
    )
    objective = BilinearFactorization(instance, width=4)
    solution = solve_flat(instance)
    assert isinstance(solution, ConvexResult)
    flat = solution.factors(4)
    gd = schedules_study.critical_rate(objective, flat, 10)
    sgd = schedules_study.critical_rate(objective, flat, 2)
    w = torch.cat([p.reshape(-1) for p in flat])
    value = lambda v: objective.value((v[:16].reshape(4, 4), v[16:].reshape(4, 4)))  # noqa: E731
    hessian = torch.func.jacrev(torch.func.grad(value))(w)  # reverse over reverse: no forward-mode warning
    assert gd == pytest.approx(2 / float(torch.linalg.eigvalsh(hessian).max()), rel=1e-6)
    assert 0 < sgd < gd
