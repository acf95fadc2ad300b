"""Reproductions beyond the paper: non-uniform completion, noisy sensing, the large Figure 3 grids."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas
import pytest

from flatminima.errors import ConfigurationError
from flatminima.experiments import InProcessExecutor, SweepSpec, Trial, run_trial
from flatminima.experiments.beyond_methods import noise_radius
from flatminima.experiments.reproductions import REPRODUCTIONS, Reproduction, reproduction_specs
from flatminima.experiments.reproductions_beyond import LARGE_GRIDS, THEORY_CONSTANT
from flatminima.experiments.runner import reproduce
from flatminima.theory import nuclear_norm_statistical_dimension

NAMES = ["completion-nonuniform", "noisy-sensing"]
MODULE = "flatminima.experiments.beyond_methods"


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_quick_and_full_specs(name: str) -> None:
    reproduction = REPRODUCTIONS[name]
    assert isinstance(reproduction, Reproduction)
    quick, full = reproduction.specs(True), reproduction.specs(False)
    assert {s.name.removesuffix("/quick") for s in quick} <= {s.name for s in full}
    assert all(s.name.startswith(name) and s.truth == "draw" for s in quick + full)
    assert sum(s.num_trials for s in quick) < sum(s.num_trials for s in full)
    assert all([s.label for s in spec.solvers] == ["flat", "nuclear_norm"] for spec in quick)


def test_nonuniform_specs_sweep_the_skews() -> None:
    specs = REPRODUCTIONS["completion-nonuniform"].specs(True)
    assert [(s.fixed["row_skew"], s.fixed["column_skew"]) for s in specs] == [
        (0.0, 0.0),
        (0.5, 0.5),
        (1.0, 1.0),
    ]
    assert {s.fixed["dim"] for s in specs} == {20}


def _shrink(spec: SweepSpec) -> SweepSpec:
    grid = tuple((key, (values[0], values[-1])) for key, values in spec.grid)
    fixed = {**spec.fixed, "dim": 8}
    return dataclasses.replace(
        spec, name=spec.name.replace("/quick", "/test"), grid=grid, draws=2, fixed=fixed
    )


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_on_a_tiny_grid(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = REPRODUCTIONS[name]
    assert isinstance(original, Reproduction)
    tiny = dataclasses.replace(original, specs=lambda quick: [_shrink(s) for s in original.specs(True)])
    monkeypatch.setitem(REPRODUCTIONS, name, tiny)
    outcome = reproduce(name, quick=True, out_dir=tmp_path, executor=InProcessExecutor(), progress=False)
    assert outcome.figure.stat().st_size > 5000
    frame = pandas.read_csv(outcome.csv)
    assert len(frame) == sum(s.num_trials for s in tiny.specs(True))
    headers, rows = outcome.table
    assert rows and all(len(row) == len(headers) for row in rows)
    if name == "noisy-sensing":
        ok = frame[frame["status"] == "ok"]
        assert len(ok) == len(frame)  # every noisy solve is certified
        assert (ok["error"] > 0).all() and (ok["bound_ratio"] < THEORY_CONSTANT).all()
        spec = tiny.specs(True)[0]
        delta = nuclear_norm_statistical_dimension(8, 8, int(spec.fixed["rank"]))
        assert headers[1] == "m/delta"
        assert {row[1] for row in rows} == {
            f"{float(r) * 8 / delta:.2f}" for r in dict(spec.grid)["measurements_per_dim"]
        }
    else:
        assert {"num_observations", "empty_lines", "singular"} <= set(frame.columns)
        assert headers[3] == "singular D" and {row[0] for row in rows} == {"0", "0.5", "1"}


def _completion_trial(method: str, probability: float) -> Trial:
    params = {"shape": [12, 12], "rank": 1, "probability": probability, "row_skew": 1.0, "column_skew": 1.0}
    return Trial(
        "t", "matrix_completion", params, {}, f"{MODULE}:{method}", "x", {}, seed=0, draw=0, truth="draw"
    )


def test_singular_rescaling_is_a_counted_failure() -> None:
    flat = run_trial(_completion_trial("completion_flat", 0.1))
    nuclear = run_trial(_completion_trial("completion_nuclear_norm", 0.1))
    assert flat.status == "failed" and flat.metrics["singular"] is True and flat.metrics["empty_lines"] > 0
    assert flat.error is not None and "singular D1, D2" in flat.error and not flat.success
    assert nuclear.status == "ok" and nuclear.metrics["singular"] is False
    assert nuclear.metrics["num_observations"] == flat.metrics["num_observations"]  # the same mask
    full = run_trial(_completion_trial("completion_flat", 1.0))
    assert full.status == "ok" and full.success and full.metrics["empty_lines"] == 0


def _noisy_trial(options: dict[str, object], noise_std: float = 0.01) -> Trial:
    params = {"shape": [8, 8], "rank": 1, "num_measurements": 64, "noise_std": noise_std}
    return Trial("t", "matrix_sensing", params, {}, f"{MODULE}:noisy_flat", "x", options, seed=0, draw=0)


def test_noisy_methods_use_the_documented_radius() -> None:
    expected = run_trial(_noisy_trial({}))
    assert expected.status == "ok"
    assert expected.metrics["eps"] == pytest.approx(0.01 * math.sqrt(64 + 2 * math.sqrt(128)), rel=1e-12)
    assert expected.metrics["bound_unit"] == pytest.approx(expected.metrics["eps"] / 8, rel=1e-12)
    assert expected.metrics["bound_ratio"] == pytest.approx(
        expected.metrics["error"] * 8 / expected.metrics["eps"]
    )
    oracle = run_trial(_noisy_trial({"eps_rule": "oracle"}))
    assert oracle.metrics["eps"] == pytest.approx(1.05 * oracle.metrics["noise_norm"], rel=1e-12)
    bad = run_trial(_noisy_trial({"eps_rule": "median"}))
    assert bad.status == "failed" and "eps_rule: must be 'expected' or 'oracle', got 'median'" in (
        bad.error or ""
    )
    assert noise_radius(0.0, 10) == 0.0


@pytest.mark.parametrize("name", sorted(LARGE_GRIDS))
def test_large_grids(name: str) -> None:
    reproduction = REPRODUCTIONS[name]
    assert isinstance(reproduction, Reproduction)
    (full,) = reproduction_specs(reproduction, False, "large")
    (quick,) = reproduction_specs(reproduction, True, "large")
    assert full.name == f"{name}/large" and quick.name == f"{name}/large/quick"
    dims = dict(full.grid)["dim"]
    assert max(dims) == {"fig3-sensing": 100, "fig3-quadratic": 200}.get(name, 1000)
    assert dict(quick.grid)["dim"] == dims[:1] and quick.draws == 2 and full.draws == 10
    assert reproduction_specs(reproduction, True) == reproduction.specs(True)  # the default size


def test_size_errors() -> None:
    sensing = REPRODUCTIONS["fig3-sensing"]
    assert isinstance(sensing, Reproduction)
    with pytest.raises(ConfigurationError, match=r"--size: must be one of default, large, got 'huge'"):
        reproduction_specs(sensing, False, "huge")
    other = REPRODUCTIONS["completion-nonuniform"]
    assert isinstance(other, Reproduction)
    with pytest.raises(
        ConfigurationError, match=r"--size large: reproduction 'completion-nonuniform' has no large"
    ):
        reproduction_specs(other, False, "large")
