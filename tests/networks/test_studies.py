"""The network studies through ``reproduce`` (quick modes) and their error messages."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas
import pytest

from flatminima.errors import ConfigurationError, InputDataError
from flatminima.experiments.reproductions import REPRODUCTIONS, get_reproduction
from flatminima.experiments.runner import reproduce
from flatminima.experiments.studies import dinh, fantastic, keskar, landscapes, noise_scale, sensing_landscape
from flatminima.experiments.study import Study


def _run(name: str, tmp_path: Path) -> tuple[pandas.DataFrame, object]:
    """Run a quick study (timings of the quick modes are reported by the reproductions, not asserted)."""
    assert isinstance(REPRODUCTIONS[name], Study)
    outcome = reproduce(name, quick=True, out_dir=tmp_path, progress=False)
    assert outcome.csv == tmp_path / f"{name}.csv" and outcome.csv.is_file()
    assert outcome.figure == tmp_path / f"{name}.png" and outcome.figure.stat().st_size > 10_000
    return pandas.read_csv(outcome.csv), outcome


def test_dinh_quick_is_exact(tmp_path: Path) -> None:
    frame, outcome = _run("dinh-reparam", tmp_path)
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
    frame, outcome = _run("keskar-batch", tmp_path)
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


TINY = dataclasses.replace(
    fantastic.QUICK, batch_sizes=(64,), widths=(8, 32), depths=(1,), target_loss=0.1, num_train=300
)


@pytest.mark.slow
def test_fantastic_quick(tmp_path: Path) -> None:
    frame, _ = _run("fantastic-measures", tmp_path)
    assert len(frame) == len(fantastic.QUICK.grid()) and (frame["status"] == "ok").all()


def test_fantastic_tiny_resumes_from_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = REPRODUCTIONS["fantastic-measures"]
    assert isinstance(study, Study)
    monkeypatch.setitem(REPRODUCTIONS, "fantastic-measures", dataclasses.replace(study, quick=TINY))
    frame, outcome = _run("fantastic-measures", tmp_path)
    assert len(frame) == len(TINY.grid()) == 4 and (frame["status"] == "ok").all()
    (sweep,) = outcome.sweeps  # type: ignore[attr-defined]
    assert sweep.total == sweep.completed == len(frame) and sweep.skipped == 0
    taus = pandas.read_csv(tmp_path / "fantastic-measures_tau.csv")
    assert list(taus["measure"]) == list(fantastic.MEASURE_NAMES)
    assert taus["tau"].dropna().between(-1, 1).all() and taus["tau"].notna().sum() >= 10
    assert list(taus.columns[3:6]) == ["learning_rate", "width", "Psi"]  # only varied hyperparameters
    assert list(taus.columns[7:]) == [
        "tau_low",
        "tau_high",
        *[f"{h}_{end}" for h in ("learning_rate", "width") for end in ("low", "high")],
        "Psi_low",
        "Psi_high",
    ]
    known = taus.dropna(subset=["tau"])
    assert (known["tau_low"] <= known["tau_high"]).all() and known["tau_low"].between(-1, 1).all()
    for measure_name in ("hochreiter_box", "expected_sharpness_kl", "vc_bartlett2019", "vc_harvey2017"):
        assert frame[measure_name].notna().all() and (frame[measure_name] > 0).all()
    assert frame.groupby("width")["vc_harvey2017"].nunique().eq(1).all()  # architecture only
    assert "CI]" in outcome.table[0][1]  # type: ignore[attr-defined]
    again = reproduce("fantastic-measures", quick=True, out_dir=tmp_path, progress=False)
    (sweep,) = again.sweeps
    assert sweep.skipped == len(frame) and sweep.completed == 0
    assert again.table == outcome.table  # type: ignore[attr-defined]


def test_granulated_tau_by_hand() -> None:
    # two hyperparameters with two values each and one seed: psi_h averages the tau of each pair.
    rows = []
    gaps = {(0.1, 32): 0.1, (0.1, 128): 0.3, (0.3, 32): 0.2, (0.3, 128): 0.4}
    for (lr, batch), gap in gaps.items():
        row = dict.fromkeys(fantastic.HYPERPARAMETERS, 0)
        row.update(learning_rate=lr, batch_size=batch, status="ok", reached_target=True, gap_error=gap)
        row["path_norm"] = gap if lr == 0.1 else -gap  # agrees with the gap along batch size only at lr = 0.1
        rows.append(row)
    taus = fantastic.correlations(pandas.DataFrame(rows)).set_index("measure")
    assert taus.loc["path_norm", "batch_size"] == pytest.approx(0.0)  # +1 at lr = 0.1, -1 at lr = 0.3
    assert taus.loc["path_norm", "learning_rate"] == pytest.approx(-1.0)
    assert taus.loc["path_norm", "Psi"] == pytest.approx(-0.5)
    assert math.isnan(taus.loc["hutchinson_trace", "tau"])


def test_fantastic_config_errors() -> None:
    with pytest.raises(ConfigurationError, match=r"widths must hold at least one value; got widths=\(\)"):
        fantastic.FantasticConfig(widths=())
    with pytest.raises(InputDataError, match=r"depths\[i\] must be >= 1; got depths\[i\]=0"):
        fantastic.FantasticConfig(depths=(0,))
    with pytest.raises(InputDataError, match=r"weight_decays\[i\] must satisfy 0.0 <= weight_decays\[i\]"):
        fantastic.FantasticConfig(weight_decays=(-1.0,))
    with pytest.raises(InputDataError, match=r"seeds\[i\] must be >= 0; got seeds\[i\]=-1"):
        fantastic.FantasticConfig(seeds=(-1,))
    with pytest.raises(ConfigurationError, match=r"seeds must hold at least one value; got seeds=\(\)"):
        noise_scale.NoiseScaleConfig(seeds=())
    with pytest.raises(InputDataError, match=r"learning_rates\[i\] must satisfy 0.0 < learning_rates\[i\]"):
        noise_scale.NoiseScaleConfig(learning_rates=(0.1, 0.0))
    with pytest.raises(ConfigurationError, match=r"batch_sizes must be <= the training set size 50; got 64"):
        config = dataclasses.replace(noise_scale.QUICK, batch_sizes=(64,), num_train=50)
        noise_scale.run(config, Path("."), "noise-scale", sweep="x", store=None, progress=False)


def test_landscape_digits_quick(tmp_path: Path) -> None:
    frame, _ = _run("landscape-digits", tmp_path)
    assert list(frame["solution"]) == ["small", "large"]
    assert (frame["width_random_mean"] > 0).all() and (frame["width_top_eigenvector"] > 0).all()
    grid = pandas.read_csv(tmp_path / "landscape-digits_grid.csv")
    points = landscapes.QUICK.grid_points**2
    assert len(grid) == 4 * points  # two solutions x (random, hessian)
    centre = grid[(grid["x"] == 0) & (grid["y"] == 0)]
    for regime in ("small", "large"):
        expected = float(frame.loc[frame["solution"] == regime, "train_loss"].iloc[0])
        values = centre.loc[centre["solution"] == regime, "train_loss"]
        assert values.to_numpy() == pytest.approx(expected, rel=1e-10)
        assert grid.loc[grid["solution"] == regime, "train_loss"].min() >= expected * (1 - 0.5)


def test_landscape_config_errors() -> None:
    with pytest.raises(InputDataError, match=r"grid_points must be >= 3; got grid_points=2"):
        landscapes.LandscapeConfig(grid_points=2)
    with pytest.raises(InputDataError, match=r"delta must satisfy 0.0 < delta; got delta=0.0"):
        landscapes.LandscapeConfig(delta=0.0)
    # the training settings are checked as in the Keskar study (shared BatchRegimes)
    with pytest.raises(InputDataError, match=r"learning_rate must satisfy 0.0 < learning_rate; got"):
        landscapes.LandscapeConfig(learning_rate=0.0)
    with pytest.raises(InputDataError, match=r"max_epochs must be >= 1; got max_epochs=0"):
        keskar.KeskarConfig(max_epochs=0)


def test_landscape_impossible_batch_is_reported(tmp_path: Path) -> None:
    config = dataclasses.replace(landscapes.QUICK, num_train=50, large_batch=100)
    with pytest.raises(
        ConfigurationError, match=r"large_batch must be <= the training set size 50; got large_batch=100"
    ):
        landscapes.run(config, tmp_path, "landscape-digits", sweep="x", store=None, progress=False)


def test_landscape_sensing_quick(tmp_path: Path) -> None:
    frame, _ = _run("landscape-sensing", tmp_path)
    assert list(frame["solution"]) == list(sensing_landscape.SOLUTIONS)
    assert (frame["loss"] < 1e-9).all()  # every point is (numerically) a global minimizer
    flat = frame.set_index("solution")["scaled_trace"]
    assert flat["flat"] <= flat.min() * (1 + 1e-6)  # P_flat minimizes the scaled trace over the zero-loss set
    norm = frame.set_index("solution")["nuclear_norm"]
    assert norm["norm-minimal"] <= norm.min() * (1 + 1e-6)
    grid = pandas.read_csv(tmp_path / "landscape-sensing_grid.csv")
    assert (
        len(grid) == 4 * 3 * sensing_landscape.QUICK.grid_points**2
    )  # solutions x (scaled, filter, hessian)
    assert sorted(grid["kind"].unique()) == ["filter", "hessian", "scaled"]
    centre = grid[(grid["x"] == 0) & (grid["y"] == 0)]
    assert (centre["loss"] < 1e-9).all()
    assert (frame["width_scaled_mean"] > 0).all() and (frame["width_filter_mean"] > 0).all()


def test_sensing_config_errors() -> None:
    with pytest.raises(InputDataError, match=r"rank must satisfy 1 <= rank <= dim = 4; got rank=5"):
        sensing_landscape.SensingLandscapeConfig(dim=4, rank=5)
    with pytest.raises(InputDataError, match=r"large_init must satisfy 0.0 < large_init; got large_init=0.0"):
        sensing_landscape.SensingLandscapeConfig(large_init=0.0)


def test_seed_is_reported_but_not_averaged_into_psi() -> None:
    rows = []
    for seed, (measure_value, gap) in enumerate(((1.0, 0.2), (2.0, 0.1))):
        row = dict.fromkeys(fantastic.HYPERPARAMETERS, 0)
        row.update(seed=seed, status="ok", reached_target=True, gap_error=gap, path_norm=measure_value)
        rows.append(row)
    taus = fantastic.correlations(pandas.DataFrame(rows)).set_index("measure")
    assert taus.loc["path_norm", "seed"] == pytest.approx(-1.0)
    assert math.isnan(taus.loc["path_norm", "Psi"])


def test_cli_runs_a_study_and_lists_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flatminima.cli import main

    assert main(["reproduce", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()]
    for name in ("keskar-batch", "fantastic-measures", "dinh-reparam", "noise-scale"):
        assert name in listed
    assert main(["reproduce", "noise-scale", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "noise-scale (quick)" in out and "Kendall tau with log(eta/B)" in out
    assert (tmp_path / "noise-scale.png").stat().st_size > 10_000
    frame = pandas.read_csv(tmp_path / "noise-scale.csv")
    config = noise_scale.QUICK
    assert len(frame) == len(config.learning_rates) * len(config.batch_sizes) * len(config.seeds)
    assert frame["ratio"].to_numpy() == pytest.approx(
        (frame["learning_rate"] / frame["batch_size"]).to_numpy()
    )
    ok = frame[~frame["diverged"]]
    assert (ok["top_eigenvalue"] > 0).all() and ok["test_accuracy"].between(0, 1).all()
    assert main(["reproduce", "noise-scal", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err == [err[0]] and "unknown reproduction 'noise-scal'; valid:" in err[0] and "noise-scale" in err[0]
    )


def test_flat_algorithms_quick(tmp_path: Path) -> None:
    frame, outcome = _run("flat-algorithms", tmp_path)
    assert (tmp_path / "flat_algorithms_trajectories.csv").is_file()
    assert set(frame["setting"]) == {"sensing", "quadratic_network"}
    flat = frame[frame["algorithm"] == "flat"]
    assert flat["str_ratio"].to_numpy() == pytest.approx(1.0)  # the flat solution is its own reference
    runs = frame[frame["init"] != "-"]
    assert runs["final_loss"].notna().all() and set(runs["init"]) == {"small", "large"}
    headers, rows = outcome.table  # type: ignore[attr-defined]
    assert headers[:3] == ["setting", "init", "algorithm"] and len(rows) == len(
        frame.groupby(["setting", "init", "algorithm"])
    )
