"""The flat-algorithms study: examples/flat_algorithms_study.py runs in quick mode and writes its outputs."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from nonconvex_cases import make_generator, sensing_objective

from flatminima.solvers.nonconvex._study_measures import procrustes_distance
from flatminima.solvers.nonconvex.study import StudyConfig, algorithm_suite

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flat_algorithms_study.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("flat_algorithms_study_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_study_runs_and_writes_table_trajectories_and_figure(tmp_path: Path) -> None:
    output = _load_example().main(quick=True, output_dir=tmp_path)
    assert output.table_path.exists() and output.trajectories_path.exists()
    assert output.figure_path is not None and output.figure_path.stat().st_size > 10_000
    with output.table_path.open() as handle:
        rows = list(csv.DictReader(handle))
    config = StudyConfig.quick()
    algorithms = set(algorithm_suite(20, config.iterations))
    settings = {(r["setting"], int(r["num_measurements"])) for r in rows}
    assert settings == {("sensing", 20), ("sensing", 48), ("quadratic_network", 30)}
    for setting in settings:
        chosen = [r for r in rows if (r["setting"], int(r["num_measurements"])) == setting]
        for init in config.init_scales:
            assert {r["algorithm"] for r in chosen if r["init"] == init} == algorithms
        flat = next(r for r in chosen if r["algorithm"] == "flat")
        nnm = next(r for r in chosen if r["algorithm"] == "nnm")
        assert float(flat["str_ratio"]) == pytest.approx(1.0, rel=1e-9)
        assert float(flat["final_loss"]) < 1e-12 and float(nnm["final_loss"]) < 1e-12
        # the flat solution minimizes str over the zero-loss set: NNM's factors are no flatter
        assert float(nnm["str_ratio"]) >= 1.0 - 1e-6
        assert float(flat["factor_dist_flat"]) < 1e-6 and float(nnm["dist_nnm"]) < 1e-9
    # every run is accounted for, with finite measures unless it diverged
    for r in rows:
        if r["status"] != "diverged":
            assert math.isfinite(float(r["final_loss"])) and math.isfinite(float(r["str_ratio"]))
    with output.trajectories_path.open() as handle:
        trajectories = list(csv.DictReader(handle))
    for algorithm in ("label_noise_sgd", "sam"):
        assert any(t["algorithm"] == algorithm and int(t["iteration"]) > 0 for t in trajectories)


def test_procrustes_distance_is_rotation_invariant() -> None:
    objective = sensing_objective(width=3)
    L, R = objective.random_params(generator=make_generator(0))
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=make_generator(1), dtype=torch.float64))
    assert procrustes_distance((L @ Q, R @ Q), (L, R), joint=True) < 1e-7
    assert procrustes_distance((L @ Q, R), (L, R), joint=False) < 1e-7
    # a rescaling L -> 2L, R -> R/2 keeps L R^T but moves the factors (and the trace)
    assert procrustes_distance((2 * L, R / 2), (L, R), joint=True) > 0.1
