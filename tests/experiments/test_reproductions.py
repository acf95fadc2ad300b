"""Named reproductions: valid quick and full specs, and the whole pipeline on shrunken grids."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas
import pytest

from flatminima.errors import ConfigurationError
from flatminima.experiments import InProcessExecutor, SweepSpec
from flatminima.experiments.reproductions import REPRODUCTIONS, Reproduction, get_reproduction
from flatminima.experiments.runner import reproduce

NAMES = [
    "fig3-sensing",
    "fig3-bilinear",
    "fig3-completion",
    "fig3-quadratic",
    "fig4-regularity",
    "depth-hadamard",
    "depth-deep",
]


def test_registry_names() -> None:
    assert list(REPRODUCTIONS)[: len(NAMES)] == NAMES  # network studies follow (tests/networks)
    with pytest.raises(ConfigurationError, match=r"unknown reproduction 'fig5'; valid: fig3-sensing, "):
        get_reproduction("fig5")


@pytest.mark.parametrize("name", NAMES)
def test_quick_and_full_specs(name: str) -> None:
    reproduction = REPRODUCTIONS[name]
    quick, full = reproduction.specs(True), reproduction.specs(False)
    assert [s.name.removesuffix("/quick") for s in quick] == [s.name for s in full]
    assert all(s.name.startswith(name) and s.name.endswith("/quick") for s in quick)
    assert sum(len(s.trials()) for s in quick) < sum(len(s.trials()) for s in full)
    if name.startswith("fig3"):
        (spec,) = full
        assert spec.draws == 10 and spec.truth == "cell" and spec.tolerance == 1e-6
        assert [s.name for s in spec.solvers] == ["flat", "nuclear_norm"]
        dims = dict(spec.grid)["dim"]
        assert min(dims) >= 10 and max(dims) <= 50


def _shrink(spec: SweepSpec, name: str) -> SweepSpec:
    """One draw, the smallest d, the first and last value of the other keys (the last for depth-deep)."""

    def keep(key: str, values: tuple[object, ...]) -> tuple[object, ...]:
        if key == "dim":
            return values[:1]
        return values[-1:] if name == "depth-deep" else (values[0], values[-1])

    grid = tuple((key, keep(key, values)) for key, values in spec.grid)
    solvers = spec.solvers
    if spec.name.startswith("depth-deep/sensing"):  # the depth-4 search is the slow one; N = 2, 3 here
        solvers = tuple(s for s in solvers if s.label != "N=4")
    return dataclasses.replace(
        spec, name=spec.name.replace("/quick", "/test"), grid=grid, draws=1, solvers=solvers
    )


def shrunk(name: str) -> Reproduction:
    original = REPRODUCTIONS[name]
    return dataclasses.replace(original, specs=lambda quick: [_shrink(s, name) for s in original.specs(True)])


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_on_a_shrunken_grid(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REPRODUCTIONS, name, shrunk(name))
    outcome = reproduce(name, quick=True, out_dir=tmp_path, executor=InProcessExecutor(), progress=False)
    assert outcome.csv == tmp_path / f"{name}.csv" and outcome.figure == tmp_path / f"{name}.png"
    assert outcome.figure.stat().st_size > 5000
    frame = pandas.read_csv(outcome.csv)
    expected = sum(len(s.trials()) for s in REPRODUCTIONS[name].specs(True))
    assert len(frame) == expected == sum(r.completed for r in outcome.sweeps)
    headers, rows = outcome.table
    assert rows and all(len(row) == len(headers) for row in rows)
    again = reproduce(name, quick=True, out_dir=tmp_path, executor=InProcessExecutor(), progress=False)
    assert sum(r.completed for r in again.sweeps) == 0
    if name == "depth-hadamard":  # m = 30 measurements of a 3-sparse x in R^40: k = 2 recovers, k = 8 not
        by_label = frame[frame["num_measurements"] == 30].set_index("label")
        assert bool(by_label.loc["k=2", "success"]) and not bool(by_label.loc["k=8", "success"])
        assert by_label.loc["k=8", "nonzeros"] == 40
    if name == "depth-deep":  # full observation: the found minimum matches the closed form
        population = frame[frame["sweep"].str.contains("population")]
        assert (population["status"] == "ok").all()
        assert ((population["trace_ratio"] - 1.0).abs() < 1e-6).all()
    if name == "fig3-sensing":  # the top of the quick grid (m/d = 12) recovers, the bottom (m/d = 2) not
        assert frame[frame["measurements_per_dim"] == 12]["success"].all()
        assert not frame[frame["measurements_per_dim"] == 2]["success"].any()
