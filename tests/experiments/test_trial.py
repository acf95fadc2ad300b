"""Trials: canonical keys, random streams (one truth per cell), purity, and failures recorded not raised."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch

from flatminima.experiments import (
    METHODS,
    Method,
    MethodContext,
    Trial,
    TrialFailed,
    parse_spec,
    register_method,
    run_trial,
    trial_instance,
)


def _trial(**changes: Any) -> Trial:
    base = Trial(
        sweep="t",
        problem="matrix_sensing",
        params={"shape": [5, 5], "rank": 1, "num_measurements": 30},
        cell={"num_measurements": 30},
        method="least_norm",
        label="least_norm",
        options={},
        seed=1,
        draw=0,
    )
    return dataclasses.replace(base, **changes)


def test_key_is_a_hash_of_every_field() -> None:
    trial = _trial()
    assert trial.key == _trial().key
    assert len(trial.key) == 32 and int(trial.key, 16) >= 0
    for change in (
        {"sweep": "u"},
        {"seed": 2},
        {"draw": 1},
        {"method": "flat", "label": "flat"},
        {"options": {"cg_tolerance": 1e-10}},
        {"params": {"shape": [5, 5], "rank": 1, "num_measurements": 31}},
        {"truth": "draw"},
        {"tolerance": 1e-5},
    ):
        assert _trial(**change).key != trial.key, change
    assert Trial.from_dict(trial.to_dict()) == trial


def test_one_ground_truth_per_cell_fresh_measurements_per_draw() -> None:
    first, _ = trial_instance(_trial(draw=0))
    second, _ = trial_instance(_trial(draw=1))
    torch.testing.assert_close(first.ground_truth, second.ground_truth, rtol=0, atol=0)
    assert not torch.equal(first.observations, second.observations)
    torch.testing.assert_close(first.observations, first.operator.apply(first.ground_truth), rtol=0, atol=0)
    assert float(torch.linalg.matrix_norm(first.ground_truth)) == pytest.approx(1.0)
    assert int(torch.linalg.matrix_rank(first.ground_truth)) == 1


def test_truth_per_draw_and_across_cells() -> None:
    first, _ = trial_instance(_trial(truth="draw", draw=0))
    second, _ = trial_instance(_trial(truth="draw", draw=1))
    assert not torch.equal(first.ground_truth, second.ground_truth)
    other_cell, _ = trial_instance(_trial(params={"shape": [5, 5], "rank": 1, "num_measurements": 31}))
    same_cell, _ = trial_instance(_trial())
    assert not torch.equal(other_cell.ground_truth, same_cell.ground_truth)


def test_instance_does_not_depend_on_the_method() -> None:
    a, gens_a = trial_instance(_trial())
    b, gens_b = trial_instance(_trial(method="flat", label="flat"))
    torch.testing.assert_close(a.observations, b.observations, rtol=0, atol=0)
    assert set(gens_a) == {"init", "solver"}
    assert torch.equal(torch.rand(3, generator=gens_a["init"]), torch.rand(3, generator=gens_b["init"]))


def test_run_trial_is_pure_and_recovers_when_m_is_large() -> None:
    trial = _trial(params={"shape": [4, 4], "rank": 1, "num_measurements": 20})
    first, second = run_trial(trial), run_trial(trial)
    assert first.status == "ok" and first.error is None
    assert first.metrics == second.metrics
    assert first.metrics["error"] < 1e-8 and first.metrics["success"] is True  # m > d1 d2: unique solution
    assert first.key == trial.key and first.trial == trial.to_dict()
    assert first.host and first.version and first.created.endswith("+00:00") and first.duration > 0


def test_flat_solver_trial() -> None:
    trial = _trial(method="flat", label="flat", params={"shape": [6, 6], "rank": 1, "num_measurements": 60})
    record = run_trial(trial)
    assert record.status == "ok", record.error
    assert record.metrics["solver_status"] == "converged"
    assert record.metrics["error"] < 1e-6 and record.success
    assert record.metrics["max_relative_residual"] <= 1e-8


@pytest.fixture
def temporary_method() -> Iterator[Any]:
    names: list[str] = []

    def add(name: str, function: Any) -> str:
        register_method(Method(name=name, summary="test", function=function))
        names.append(name)
        return name

    yield add
    for name in names:
        METHODS.pop(name, None)


def test_crashing_method_is_recorded(temporary_method: Any) -> None:
    def crash(instance: Any, options: Mapping[str, Any], context: MethodContext) -> dict[str, Any]:
        raise RuntimeError("boom\nsecond line")

    name = temporary_method("test_crash", crash)
    record = run_trial(_trial(method=name, label=name))
    assert record.status == "failed"
    assert record.error == "RuntimeError: boom second line"
    assert record.metrics == {"success": False}


def test_failed_certificate_keeps_metrics(temporary_method: Any) -> None:
    def uncertified(instance: Any, options: Mapping[str, Any], context: MethodContext) -> dict[str, Any]:
        raise TrialFailed(f"{context.label}: no certificate", {"error": 1e-12, "iterations": 7})

    name = temporary_method("test_uncertified", uncertified)
    record = run_trial(_trial(method=name, label=name))
    assert record.status == "failed" and record.error == f"{name}: no certificate"
    assert record.metrics == {"error": 1e-12, "iterations": 7, "success": False}


def test_diverged_method_is_not_a_success(temporary_method: Any) -> None:
    def diverge(instance: Any, options: Mapping[str, Any], context: MethodContext) -> dict[str, Any]:
        return {"error": float("nan"), "value": torch.tensor(2.0)}

    name = temporary_method("test_diverge", diverge)
    record = run_trial(_trial(method=name, label=name))
    assert record.status == "ok" and math.isnan(record.metrics["error"])
    assert record.metrics["value"] == 2.0 and record.metrics["success"] is False


def test_unknown_method_at_run_time_is_a_failed_trial() -> None:
    record = run_trial(_trial(method="no_such_method", label="x"))
    assert record.status == "failed"
    assert record.error is not None and "unknown solver 'no_such_method'" in record.error


def test_import_path_method() -> None:
    spec = parse_spec(
        {
            "name": "plugin",
            "problem": {"name": "matrix_sensing", "dim": 4, "rank": 1, "num_measurements": 20},
            "solvers": [{"name": "flatminima.experiments.methods:_least_norm", "label": "plugin"}],
        }
    )
    (trial,) = spec.trials()
    record = run_trial(trial)
    assert record.status == "ok" and record.success
