"""The width-sweep study (Neyshabur, Tomioka & Srebro 2015): a tiny run, resumption, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas
import pytest
import torch

from flatminima.errors import ConfigurationError, InputDataError
from flatminima.experiments.reproductions import REPRODUCTIONS
from flatminima.experiments.runner import reproduce
from flatminima.experiments.studies import width_sweep
from flatminima.experiments.study import Study

TINY = dataclasses.replace(width_sweep.QUICK, widths=(4, 32), seeds=(0,), num_train=120, max_epochs=300)


def test_tiny_run_writes_csv_figure_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = REPRODUCTIONS["width-sweep"]
    assert isinstance(study, Study)
    monkeypatch.setitem(REPRODUCTIONS, "width-sweep", dataclasses.replace(study, quick=TINY))
    state = torch.get_rng_state()
    outcome = reproduce("width-sweep", quick=True, out_dir=tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # every draw comes from explicit generators
    assert outcome.figure == tmp_path / "width-sweep.png" and outcome.figure.stat().st_size > 10_000
    frame = pandas.read_csv(outcome.csv)
    assert list(frame["width"]) == [4, 32] and (frame["status"] == "ok").all()
    for column in (
        "train_error",
        "test_error",
        "num_parameters",
        "box_bits_per_parameter",
        "parameter_norm",
        "distance_from_init",
        *width_sweep.MEASURES,
    ):
        assert column in frame.columns, column
    assert list(frame["num_parameters"]) == [64 * 4 + 4 + 4 * 10 + 10, 64 * 32 + 32 + 32 * 10 + 10]
    # the VC bounds grow with the parameter count; Harvey et al.'s rate is W U exactly
    assert list(frame["vc_harvey2017"]) == [
        float(w * u) for w, u in zip(frame["num_parameters"], (4, 32), strict=True)
    ]
    assert frame["vc_bartlett2019"].is_monotonic_increasing
    ratio = frame["hochreiter_box"] / frame["num_parameters"]
    assert frame["box_bits_per_parameter"].to_numpy() == pytest.approx(ratio.to_numpy())
    (sweep,) = outcome.sweeps
    assert sweep.total == sweep.completed == 2 and sweep.skipped == 0
    again = reproduce("width-sweep", quick=True, out_dir=tmp_path, progress=False)
    (sweep,) = again.sweeps
    assert sweep.skipped == 2 and sweep.completed == 0
    assert again.table == outcome.table


def test_bad_configurations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"widths must hold at least one value; got widths=\(\)"):
        width_sweep.WidthSweepConfig(widths=())
    with pytest.raises(InputDataError, match=r"widths\[i\] must be >= 1; got widths\[i\]=0"):
        width_sweep.WidthSweepConfig(widths=(0, 8))
    with pytest.raises(ConfigurationError, match=r"widths must be distinct; got widths=\(8, 8\)"):
        width_sweep.WidthSweepConfig(widths=(8, 8))
    with pytest.raises(InputDataError, match=r"num_train must be >= 32; got num_train=10"):
        width_sweep.WidthSweepConfig(num_train=10)
    with pytest.raises(InputDataError, match=r"sharpness_sigma must satisfy 0.0 < sharpness_sigma"):
        width_sweep.WidthSweepConfig(sharpness_sigma=-1.0)
