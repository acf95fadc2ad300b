"""The network studies through ``reproduce`` (quick modes) and their error messages."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas
import pytest

from flatminima.errors import ConfigurationError, InputDataError
from flatminima.experiments.reproductions import REPRODUCTIONS, get_reproduction
from flatminima.experiments.runner import reproduce
from flatminima.experiments.studies import dinh, keskar
from flatminima.experiments.study import Study


def _run(name: str, tmp_path: Path) -> tuple[pandas.DataFrame, object, float]:
    assert isinstance(REPRODUCTIONS[name], Study)
    start = time.perf_counter()
    outcome = reproduce(name, quick=True, out_dir=tmp_path, progress=False)
    elapsed = time.perf_counter() - start
    assert outcome.csv == tmp_path / f"{name}.csv" and outcome.csv.is_file()
    assert outcome.figure == tmp_path / f"{name}.png" and outcome.figure.stat().st_size > 10_000
    return pandas.read_csv(outcome.csv), outcome, elapsed


def test_dinh_quick_is_exact(tmp_path: Path) -> None:
    frame, outcome, elapsed = _run("dinh-reparam", tmp_path)
    assert elapsed < 120
    assert (frame["max_output_difference"] <= 1e-10).all()
    assert frame["trace"].to_numpy() == pytest.approx(frame["predicted_trace"].to_numpy(), rel=1e-9)
    ratio = frame["top_eigenvalue_ratio"]
    assert ((ratio >= frame["ratio_low"] * (1 - 1e-6)) & (ratio <= frame["ratio_high"] * (1 + 1e-6))).all()
    far = frame[(frame["alpha"] >= 10) | (frame["alpha"] <= 0.1)]
    assert (far["top_eigenvalue_ratio"] - 1).abs().min() > 0.5  # it does move
    for column in dinh.INVARIANT:
        assert frame[f"{column}_ratio"].to_numpy() == pytest.approx(1.0, rel=1e-6)
    assert frame["test_loss"].to_numpy() == pytest.approx(frame["test_loss"].iloc[0], rel=1e-10)
    headers, rows = outcome.table  # type: ignore[attr-defined]
    assert headers[0] == "alpha" and len(rows) == len(dinh.QUICK.alphas)


def test_keskar_quick(tmp_path: Path) -> None:
    frame, outcome, elapsed = _run("keskar-batch", tmp_path)
    assert elapsed < 120
    assert sorted(frame["regime"].unique()) == ["large", "small"]
    assert len(frame) == 2 * len(keskar.QUICK.seeds)
    assert frame["reached_target"].all() and (frame["train_loss"] <= keskar.QUICK.target_loss).all()
    for eps in ("0.001", "0.0005"):
        assert (frame[f"eps_sharpness_full_{eps}"] >= 0).all() and (
            frame[f"eps_sharpness_sub100_{eps}"] >= 0
        ).all()
    line = pandas.read_csv(tmp_path / "keskar-batch_interpolation.csv")
    assert line["t"].iloc[0] == -1.0 and line["t"].iloc[-1] == 2.0
    small = frame[(frame["regime"] == "small") & (frame["seed"] == 0)].iloc[0]
    t0 = line.iloc[(line["t"] - 0.0).abs().argmin()]
    assert t0["train_loss"] == pytest.approx(small["train_loss"], rel=1e-10)
    _, rows = outcome.table  # type: ignore[attr-defined]
    assert [row[0] for row in rows] == ["small", "large"]


def test_study_errors() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown reproduction 'keskar'; valid: .*keskar-batch"):
        get_reproduction("keskar")
    with pytest.raises(
        ConfigurationError, match=r"alphas must contain 1.0 \(the reference\); got alphas=\(2.0,\)"
    ):
        dinh.DinhConfig(alphas=(2.0,))
    with pytest.raises(
        InputDataError, match=r"alphas\[i\] must satisfy 0.0 < alphas\[i\]; got alphas\[i\]=-1.0"
    ):
        dinh.DinhConfig(alphas=(1.0, -1.0))
    with pytest.raises(InputDataError, match=r"large_batch must be >= 17; got large_batch=8"):
        keskar.KeskarConfig(large_batch=8)
    with pytest.raises(ConfigurationError, match=r"seeds must name at least one seed; got seeds=\(\)"):
        keskar.KeskarConfig(seeds=())


def test_impossible_batch_is_reported(tmp_path: Path) -> None:
    study = REPRODUCTIONS["keskar-batch"]
    assert isinstance(study, Study)
    config = dataclasses.replace(keskar.QUICK, num_train=50, large_batch=100, seeds=(0,))
    with pytest.raises(
        ConfigurationError, match=r"large_batch must be <= the training set size 50; got large_batch=100"
    ):
        keskar.run(config, tmp_path, "keskar-batch", sweep="x", store=None, progress=False)
