"""The hochreiter-mdl study (Hochreiter & Schmidhuber 1997): a tiny run, resumption, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas
import pytest
import torch

from flatminima.errors import ConfigurationError, InputDataError
from flatminima.experiments.reproductions import REPRODUCTIONS
from flatminima.experiments.runner import reproduce
from flatminima.experiments.studies import hochreiter_mdl
from flatminima.experiments.study import Study

TINY = dataclasses.replace(
    hochreiter_mdl.QUICK,
    seeds=(0,),
    hidden=(6,),
    learning_rate=0.3,
    num_train=100,
    small_batch=20,
    large_batch=100,
    target_loss=0.3,
    granularities=("tensor", "coordinate"),
    num_bisections=4,
    num_directions=2,
)


def test_tiny_run_writes_csvs_figure_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = REPRODUCTIONS["hochreiter-mdl"]
    assert isinstance(study, Study)
    monkeypatch.setitem(REPRODUCTIONS, "hochreiter-mdl", dataclasses.replace(study, quick=TINY))
    state = torch.get_rng_state()
    outcome = reproduce("hochreiter-mdl", quick=True, out_dir=tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # every draw comes from explicit generators
    assert outcome.figure == tmp_path / "hochreiter-mdl.png" and outcome.figure.stat().st_size > 10_000
    frame = pandas.read_csv(outcome.csv)
    assert list(frame["regime"]) == ["small", "large"] and list(frame["batch_size"]) == [20, 100]
    assert (frame["status"] == "ok").all()
    for granularity in ("tensor", "coordinate"):
        for stem in ("bits", "log_volume", "scale", "saturated", "violation", "evaluations"):
            assert f"{stem}_{granularity}" in frame.columns
        assert frame[f"scale_{granularity}"].between(0, 1).all()
    for column in ("test_error", "gap_error", "top_eigenvalue", "trace", "num_parameters"):
        assert column in frame.columns
    tensors = pandas.read_csv(tmp_path / "hochreiter-mdl_tensors.csv")
    assert list(tensors.columns) == ["seed", "regime", "granularity", "tensor", "bits"]
    # the per-tensor bits add up to the description length of the whole box
    total = tensors.groupby(["regime", "granularity"])["bits"].sum()
    for row in frame.itertuples():
        for granularity in ("tensor", "coordinate"):
            expected = getattr(row, f"bits_{granularity}")
            assert total[(row.regime, granularity)] == pytest.approx(expected, rel=1e-9)
    (sweep,) = outcome.sweeps
    assert sweep.total == sweep.completed == 2 and sweep.skipped == 0
    again = reproduce("hochreiter-mdl", quick=True, out_dir=tmp_path, progress=False)
    (sweep,) = again.sweeps
    assert sweep.skipped == 2 and sweep.completed == 0
    assert again.table == outcome.table


def test_bad_configurations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"granularities must be a non-empty subset of"):
        hochreiter_mdl.HochreiterConfig(granularities=("voxel",))
    with pytest.raises(ConfigurationError, match=r"granularities must be a non-empty subset of"):
        hochreiter_mdl.HochreiterConfig(granularities=())
    with pytest.raises(InputDataError, match=r"epsilon must satisfy 0.0 < epsilon; got epsilon=0.0"):
        hochreiter_mdl.HochreiterConfig(epsilon=0.0)
    with pytest.raises(ConfigurationError, match=r"seeds must hold at least one value; got seeds=\(\)"):
        hochreiter_mdl.HochreiterConfig(seeds=())
    with pytest.raises(InputDataError, match=r"large_batch must be >= 17; got large_batch=8"):
        hochreiter_mdl.HochreiterConfig(large_batch=8)
    config = dataclasses.replace(TINY, num_train=50, large_batch=100)
    with pytest.raises(
        ConfigurationError, match=r"large_batch must be <= the training set size 50; got large_batch=100"
    ):
        hochreiter_mdl.run(config, tmp_path, "hochreiter-mdl", sweep="x", store=None, progress=False)
