"""The dauphin-index study: the closed-form Hessian, Levenberg-Marquardt, a tiny run, resumption, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy
import pandas
import pytest
import torch
from torch.autograd.functional import hessian

from flatminima.errors import InputDataError
from flatminima.experiments.reproductions import REPRODUCTIONS
from flatminima.experiments.runner import reproduce
from flatminima.experiments.studies import dauphin_index
from flatminima.experiments.studies._critical_points import TanhRegression, levenberg_marquardt
from flatminima.experiments.study import Study

TINY = dauphin_index.DauphinConfig(
    seeds=(0,),
    gd_steps=(0, 30),
    num_train=30,
    hidden=3,
    max_iterations=25,
    keep_gradient_norm=1e-2,
    num_outliers=5,
    num_resamples=50,
)


def _problem() -> TanhRegression:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, generator=generator, dtype=torch.float64)
    targets = torch.nn.functional.one_hot(torch.randint(0, 3, (12,), generator=generator), 3).double()
    return TanhRegression(x, targets, 3, 1e-2)


def test_closed_form_matches_autograd() -> None:
    problem = _problem()
    w = problem.initial(torch.Generator().manual_seed(1), 2.0)

    def loss(v: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = problem.unpack(v)
        residual = torch.tanh(problem.x @ w1.T + b1) @ w2.T + b2 - problem.targets
        return 0.5 * residual.square().sum(1).mean() + 0.5 * problem.weight_decay * v.dot(v)

    assert problem.loss(w) == pytest.approx(float(loss(w)), rel=1e-12)
    assert torch.allclose(problem.gradient(w), torch.autograd.functional.jacobian(loss, w), atol=1e-12)
    assert torch.allclose(problem.hessian(w), hessian(loss, w), atol=1e-12)
    model = problem.module(w)
    with torch.no_grad():
        w1, b1, w2, b2 = problem.unpack(w)
        assert torch.allclose(model(problem.x), torch.tanh(problem.x @ w1.T + b1) @ w2.T + b2)


def test_levenberg_marquardt_lowers_the_gradient() -> None:
    problem = _problem()
    w = problem.initial(torch.Generator().manual_seed(2))
    start = float(problem.gradient(w).norm())
    point = levenberg_marquardt(problem, w, tolerance=1e-10, max_iterations=60)
    assert point.gradient_norm < 1e-3 * start
    assert point.converged == (point.gradient_norm <= 1e-10)


def test_semicircle_helpers() -> None:
    assert dauphin_index.semicircle_cdf(numpy.array([-1.0, 0.0, 1.0])) == pytest.approx([0.0, 0.5, 1.0])
    scaled = dauphin_index.bulk(numpy.arange(10.0), num_outliers=2)
    assert len(scaled) == 8 and scaled.mean() == pytest.approx(0.0, abs=1e-12)
    assert numpy.mean(scaled**2) == pytest.approx(0.25)  # R = 2 sigma: second moment R^2 / 4 -> 1 / 4


def test_tiny_run_end_to_end_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = REPRODUCTIONS["dauphin-index"]
    assert isinstance(study, Study)
    monkeypatch.setitem(REPRODUCTIONS, "dauphin-index", dataclasses.replace(study, quick=TINY))
    state = torch.get_rng_state()
    outcome = reproduce("dauphin-index", quick=True, out_dir=tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never used
    frame = pandas.read_csv(outcome.csv)
    expected = {"gd_steps", "seed", "status", "start_loss", "loss", "data_loss", "gradient_norm", "kept"}
    expected |= {"index", "undetermined", "gradient_flatness", "hessian_check", "iterations", "converged"}
    assert expected <= set(frame.columns) and "eigenvalues" not in frame.columns
    assert len(frame) == 2 and (frame["status"] == "ok").all()
    assert (frame["hessian_check"] < 1e-9).all() and frame["index"].between(0, 1).all()
    assert (frame["loss"] <= frame["start_loss"] + 1.0).all()
    spectra = pandas.read_csv(tmp_path / "dauphin-index_eigenvalues.csv")
    assert len(spectra) == 2 * (3 * 17 + 10 * 4)
    assert outcome.figure.stat().st_size > 10_000
    headers, rows = outcome.table
    assert headers[0] == "GD steps before LM" and rows[-1][0] == "all"
    again = reproduce("dauphin-index", quick=True, out_dir=tmp_path, progress=False)
    (sweep,) = again.sweeps
    assert sweep.skipped == 2 and sweep.completed == 0
    assert again.table == outcome.table


def test_nothing_kept_still_draws(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, gd_steps=(0,), max_iterations=1, keep_gradient_norm=1e-8)
    output = dauphin_index.run(config, tmp_path, "d", sweep="d/x", store=None, progress=False)
    assert not output.frame["kept"].any() and output.figure.stat().st_size > 10_000
    assert output.table[1][-1][2] == "0"


def test_bad_configs() -> None:
    with pytest.raises(InputDataError, match=r"gd_steps\[i\] must be >= 0; got gd_steps\[i\]=-1"):
        dauphin_index.DauphinConfig(gd_steps=(-1,))
    with pytest.raises(InputDataError, match=r"keep_gradient_norm must satisfy 0.01 <= keep_gradient_norm"):
        dauphin_index.DauphinConfig(tolerance=1e-2, keep_gradient_norm=1e-3)
    with pytest.raises(
        InputDataError, match=r"num_outliers must satisfy 0 <= num_outliers <= \(parameters - 3\)"
    ):
        dauphin_index.DauphinConfig(hidden=1, num_outliers=100)
    with pytest.raises(
        InputDataError, match=r"high_loss_fraction must satisfy 0.0 < high_loss_fraction <= 1.0"
    ):
        dauphin_index.DauphinConfig(high_loss_fraction=0.0)
