"""The wen-xor study: batched two-layer training, a tiny end-to-end run, resumption and bad configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas
import pytest
import torch

from flatminima.errors import ConfigurationError, InputDataError
from flatminima.experiments.reproductions import REPRODUCTIONS
from flatminima.experiments.runner import reproduce
from flatminima.experiments.studies import _study_tools as tools
from flatminima.experiments.studies import _two_layer as two_layer
from flatminima.experiments.studies import wen_xor
from flatminima.experiments.study import Study
from flatminima.optim import sam_perturbation

TINY = wen_xor.WenXorConfig(
    seeds=(0,),
    models_per_seed=3,
    init_scales=(1.0,),
    width=16,
    num_train=12,
    num_test=200,
    max_steps=3000,
    sam_steps=1000,
    target_loss=0.05,
    learning_rate=0.05,
    num_resamples=50,
)


@pytest.mark.parametrize("bias", [True, False])
def test_closed_form_gradient_and_network_agree_with_autograd(bias: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    params = two_layer.initial_parameters(2, 5, bias, 1.0, generator)
    x = torch.rand(7, 2, generator=generator, dtype=torch.float64) * 2 - 1
    y = torch.sign(x[:, 0] * x[:, 1])
    loss, grads = two_layer.loss_and_gradient(params, x, y)
    for index in range(2):
        model = two_layer.network(params, index)
        value = two_layer.square_loss(model(x), y)
        assert value.item() == pytest.approx(float(loss[index]), rel=1e-12)
        autograd = torch.autograd.grad(value, list(model.parameters()))
        assert torch.allclose(autograd[0], grads["W"][index, :, :2], atol=1e-12)
        assert torch.allclose(autograd[1 if not bias else 2].reshape(-1), grads["a"][index], atol=1e-12)
        if bias:
            assert torch.allclose(autograd[1], grads["W"][index, :, 2], atol=1e-12)
            assert float(autograd[3]) == pytest.approx(float(grads["c"][index]), abs=1e-12)


def test_batched_sam_step_is_sam_perturbation_per_network() -> None:
    generator = torch.Generator().manual_seed(0)
    params = two_layer.initial_parameters(2, 4, True, 1.0, generator)
    x = torch.rand(6, 2, generator=generator, dtype=torch.float64) * 2 - 1
    y = torch.sign(x[:, 0] * x[:, 1])
    after, _, steps = two_layer.train(
        params,
        x,
        y,
        algorithm="sam",
        learning_rate=0.1,
        rho=0.05,
        target_loss=1e-12,
        max_steps=1,
        sam_steps=1,
    )
    assert steps.tolist() == [1, 1]
    for index in range(2):
        model = two_layer.network(params, index)
        weights = list(model.parameters())
        grads = torch.autograd.grad(two_layer.square_loss(model(x), y), weights)
        eps = sam_perturbation(weights, grads, rho=0.05)
        with torch.no_grad():
            for w, e in zip(weights, eps, strict=True):
                w.add_(e)
        ascent = torch.autograd.grad(two_layer.square_loss(model(x), y), weights)
        expected = params["W"][index, :, :2] - 0.1 * ascent[0]
        assert torch.allclose(after["W"][index, :, :2], expected, atol=1e-12)


def test_bootstrap_and_spearman() -> None:
    assert tools.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert tools.spearman([1, 1, 1], [1, 2, 3]) != tools.spearman([1, 1, 1], [1, 2, 3])  # NaN
    low, high = tools.bootstrap_interval(
        tools.spearman,
        [[1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5]],
        generator=torch.Generator().manual_seed(0),
        num_resamples=200,
    )
    assert -1.0 <= low <= high <= 1.0


def test_tiny_run_end_to_end_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = REPRODUCTIONS["wen-xor"]
    assert isinstance(study, Study)
    monkeypatch.setitem(REPRODUCTIONS, "wen-xor", dataclasses.replace(study, quick=TINY))
    state = torch.get_rng_state()
    outcome = reproduce("wen-xor", quick=True, out_dir=tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never used
    frame = pandas.read_csv(outcome.csv)
    expected = {"bias", "init_scale", "algorithm", "seed", "draw", "status", "train_loss", "reached_target"}
    expected |= {"train_error", "test_error", "trace", "top_eigenvalue", "steps", "parameter_norm"}
    assert expected <= set(frame.columns)
    assert len(frame) == 2 * 2 * 3 and (frame["status"] == "ok").all()
    reached = frame[frame["reached_target"]]
    assert len(reached) > 0 and (reached["train_loss"] <= TINY.target_loss).all()
    assert (reached["trace"] >= reached["top_eigenvalue"] - 1e-9).all() and (
        reached["train_error"] == 0
    ).all()
    assert outcome.figure.stat().st_size > 10_000
    summary = pandas.read_csv(tmp_path / "wen-xor_summary.csv")
    assert {"rho_trace", "rho_trace_low", "rho_trace_high", "flattest_worse_than_median"} <= set(
        summary.columns
    )
    (sweep,) = outcome.sweeps
    assert sweep.total == sweep.completed == 12 and sweep.skipped == 0
    again = reproduce("wen-xor", quick=True, out_dir=tmp_path, progress=False)
    (sweep,) = again.sweeps
    assert sweep.skipped == 12 and sweep.completed == 0
    assert again.table == outcome.table
    pandas.testing.assert_frame_equal(pandas.read_csv(again.csv), frame)


def test_bad_configs() -> None:
    with pytest.raises(
        ConfigurationError, match=r"algorithms must name some of gd, sam; got algorithms=\('adam',\)"
    ):
        wen_xor.WenXorConfig(algorithms=("adam",))
    with pytest.raises(ConfigurationError, match=r"biases must hold True and/or False; got biases=\(\)"):
        wen_xor.WenXorConfig(biases=())
    with pytest.raises(InputDataError, match=r"init_scales\[i\] must satisfy 0.0 < init_scales\[i\]"):
        wen_xor.WenXorConfig(init_scales=(0.0,))
    with pytest.raises(InputDataError, match=r"sam_steps must satisfy 0 <= sam_steps <= max_steps = 10"):
        wen_xor.WenXorConfig(max_steps=10, sam_steps=20)
