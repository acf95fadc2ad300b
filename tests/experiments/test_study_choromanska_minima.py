"""The choromanska-minima study: a tiny end-to-end run, resumption, the spreads and bad configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas
import pytest
import torch

from flatminima.errors import ConfigurationError, InputDataError
from flatminima.experiments.reproductions import REPRODUCTIONS
from flatminima.experiments.runner import reproduce
from flatminima.experiments.studies import choromanska_minima
from flatminima.experiments.study import Study

TINY = choromanska_minima.ChoromanskaConfig(
    widths=(2, 8), seeds=(0, 1, 2), epochs=3, num_train=200, batch_size=50, num_resamples=50
)


def test_tiny_run_end_to_end_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = REPRODUCTIONS["choromanska-minima"]
    assert isinstance(study, Study)
    monkeypatch.setitem(REPRODUCTIONS, "choromanska-minima", dataclasses.replace(study, quick=TINY))
    state = torch.get_rng_state()
    outcome = reproduce("choromanska-minima", quick=True, out_dir=tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never used
    frame = pandas.read_csv(outcome.csv)
    expected = {"width", "seed", "status", "train_loss", "test_loss", "train_error", "test_error", "epochs"}
    assert expected <= set(frame.columns)
    assert len(frame) == 6 and (frame["status"] == "ok").all() and (frame["epochs"] == 3).all()
    spread = pandas.read_csv(tmp_path / "choromanska-minima_spread.csv")
    assert list(spread["width"]) == [2, 2, 8, 8] and list(spread["split"]) == ["test", "train"] * 2
    test = frame[frame["width"] == 2]["test_loss"]
    row = spread[(spread["width"] == 2) & (spread["split"] == "test")].iloc[0]
    assert row["std"] == pytest.approx(test.std(ddof=1)) and row["gap"] == pytest.approx(
        test.mean() - test.min()
    )
    assert row["std_low"] <= row["std_high"]
    assert outcome.figure.stat().st_size > 10_000
    (sweep,) = outcome.sweeps
    assert sweep.completed == 6 and sweep.skipped == 0
    again = reproduce("choromanska-minima", quick=True, out_dir=tmp_path, progress=False)
    (sweep,) = again.sweeps
    assert sweep.skipped == 6 and sweep.completed == 0
    assert again.table == outcome.table


def test_bad_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"seeds must name at least two seeds .*; got seeds=\(0,\)"):
        choromanska_minima.ChoromanskaConfig(seeds=(0,))
    with pytest.raises(ConfigurationError, match=r"widths must hold at least one value; got widths=\(\)"):
        choromanska_minima.ChoromanskaConfig(widths=())
    with pytest.raises(InputDataError, match=r"learning_rate must satisfy 0.0 < learning_rate; got"):
        choromanska_minima.ChoromanskaConfig(learning_rate=0.0)
    config = dataclasses.replace(TINY, batch_size=500, num_train=100)
    with pytest.raises(
        ConfigurationError, match=r"batch_size must be <= the training set size 100; got batch_size=500"
    ):
        choromanska_minima.run(config, tmp_path, "choromanska-minima", sweep="x", store=None, progress=False)
    assert not (tmp_path / "choromanska-minima.png").exists()
