"""The random-labels study (Zhang et al. 2017; Neyshabur et al. 2017): a tiny run, resumption, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas
import pytest
import torch

from flatminima.errors import ConfigurationError, InputDataError
from flatminima.experiments.reproductions import REPRODUCTIONS
from flatminima.experiments.runner import reproduce
from flatminima.experiments.studies import random_labels
from flatminima.experiments.studies._common import digits
from flatminima.experiments.study import Study

TINY = dataclasses.replace(
    random_labels.QUICK,
    label_fractions=(0.0, 1.0),
    train_sizes=(60,),
    seeds=(0,),
    sigmas=(0.02, 0.1),
    sharpness_samples=4,
    hidden=(16,),
)


def test_tiny_run_writes_csvs_figure_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = REPRODUCTIONS["random-labels"]
    assert isinstance(study, Study)
    monkeypatch.setitem(REPRODUCTIONS, "random-labels", dataclasses.replace(study, quick=TINY))
    state = torch.get_rng_state()
    outcome = reproduce("random-labels", quick=True, out_dir=tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # every draw comes from explicit generators
    assert outcome.figure == tmp_path / "random-labels.png" and outcome.figure.stat().st_size > 10_000
    frame = pandas.read_csv(outcome.csv)
    assert len(frame) == 2 and (frame["status"] == "ok").all()
    for column in (
        "label_fraction",
        "num_train",
        "seed",
        "train_error",
        "test_error",
        "changed_labels",
        "kl_at_pac_bayes_sigma",
        *random_labels.MEASURES,
    ):
        assert column in frame.columns, column
    assert not any(c.startswith("curve_") for c in frame.columns)
    by_fraction = frame.set_index("label_fraction")
    assert by_fraction.loc[0.0, "changed_labels"] == 0.0
    assert 0.7 < by_fraction.loc[1.0, "changed_labels"] < 1.0  # about 1/10 keep their label by chance
    curves = pandas.read_csv(tmp_path / "random-labels_curves.csv")
    assert len(curves) == 2 * len(TINY.sigmas)
    assert list(curves.columns[-4:]) == ["sigma", "kl", "expected_sharpness", "stderr"]
    # KL = ||w||^2 / (2 sigma^2): along a model's curve, kl * sigma^2 is one number
    for _, curve in curves.groupby("key"):
        product = (curve["kl"] * curve["sigma"] ** 2).to_numpy()
        assert product == pytest.approx(product[0], rel=1e-12)
    (sweep,) = outcome.sweeps
    assert sweep.total == sweep.completed == 2 and sweep.skipped == 0
    again = reproduce("random-labels", quick=True, out_dir=tmp_path, progress=False)
    (sweep,) = again.sweeps
    assert sweep.skipped == 2 and sweep.completed == 0
    assert again.table == outcome.table
    assert pandas.read_csv(tmp_path / "random-labels_curves.csv").equals(curves)


def test_randomize_labels_is_reproducible_and_exact() -> None:
    data = digits(0, 100)
    first = random_labels.randomize_labels(data, 0.25, torch.Generator().manual_seed(3))
    second = random_labels.randomize_labels(data, 0.25, torch.Generator().manual_seed(3))
    assert torch.equal(first.y_train, second.y_train)
    assert int((first.y_train != data.y_train).sum()) <= 25  # 25 relabelled, some keep their label
    assert torch.equal(first.y_test, data.y_test) and torch.equal(first.x_train, data.x_train)
    same = random_labels.randomize_labels(data, 0.0, torch.Generator().manual_seed(3))
    assert torch.equal(same.y_train, data.y_train)


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(
        InputDataError, match=r"label_fractions\[i\] must satisfy 0.0 <= label_fractions\[i\]"
    ):
        random_labels.RandomLabelsConfig(label_fractions=(0.0, 1.5))
    with pytest.raises(
        ConfigurationError, match=r"train_sizes must hold at least one value; got train_sizes=\(\)"
    ):
        random_labels.RandomLabelsConfig(train_sizes=())
    with pytest.raises(InputDataError, match=r"train_sizes\[i\] must satisfy 2 <= train_sizes\[i\] <= 1258"):
        random_labels.RandomLabelsConfig(train_sizes=(5000,))
    with pytest.raises(
        ConfigurationError, match=r"batch_size must be <= the smallest training set 20; got batch_size=32"
    ):
        random_labels.RandomLabelsConfig(train_sizes=(20, 100))
    with pytest.raises(
        InputDataError, match=r"sigmas\[i\] must satisfy 0.0 < sigmas\[i\]; got sigmas\[i\]=0.0"
    ):
        random_labels.RandomLabelsConfig(sigmas=(0.0,))
