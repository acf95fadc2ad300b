"""The experiment commands of the CLI: sweep, reproduce, plot, export (typer's runner, main(argv) and a
real subprocess), complete --help, and one-line errors with exit code 2."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pandas
import pytest
import typer.main
from typer.testing import CliRunner

from flatminima.cli import app, main
from flatminima.experiments.reproductions import REPRODUCTIONS

SPEC = """
name = "cli"
seed = 1
draws = 2

[problem]
name = "matrix_sensing"
rank = 1
dim = 5

[grid]
num_measurements = [10, 30]

[[solvers]]
name = "least_norm"

[[solvers]]
name = "flat"
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("flatminima: error: ")
    return lines[0].removeprefix("flatminima: error: ")


def test_sweep_export_plot_with_the_runner(tmp_path: Path, spec_file: Path) -> None:
    runner = CliRunner()
    store = tmp_path / "s.sqlite"
    result = runner.invoke(
        app, ["sweep", str(spec_file), "--store", str(store), "--in-process", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "sweep cli: 8 trials, 0 already stored, 8 run (0 failed)" in result.output
    assert "least_norm" in result.output and "flat" in result.output
    again = runner.invoke(app, ["sweep", str(spec_file), "--store", str(store), "--no-progress"])
    assert again.exit_code == 0 and "8 already stored, 0 run" in again.output  # no cluster started

    result = runner.invoke(app, ["export", str(store), "--out", str(tmp_path / "t.csv")])
    assert result.exit_code == 0 and "wrote 8 rows" in result.output
    assert len(pandas.read_csv(tmp_path / "t.csv")) == 8
    result = runner.invoke(
        app, ["export", str(store), "--out", str(tmp_path / "t.parquet"), "--sweep", "cli"]
    )
    assert result.exit_code == 0 and len(pandas.read_parquet(tmp_path / "t.parquet")) == 8

    result = runner.invoke(app, ["plot", str(store), "--out", str(tmp_path / "figs")])
    assert result.exit_code == 0 and (tmp_path / "figs" / "cli.png").is_file()


def test_reproduce_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(REPRODUCTIONS)
    assert all(len(line.split(maxsplit=1)[1]) > 20 for line in lines)


def test_reproduce_writes_csv_png_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = REPRODUCTIONS["fig3-sensing"]
    small = [
        dataclasses.replace(
            s, name="fig3-sensing/cli-test", grid=(("dim", (5,)), ("measurements_per_dim", (2, 6))), draws=2
        )
        for s in original.specs(True)
    ]
    monkeypatch.setitem(
        REPRODUCTIONS, "fig3-sensing", dataclasses.replace(original, specs=lambda quick: small)
    )
    argv = ["reproduce", "fig3-sensing", "--quick", "--out", str(tmp_path), "--in-process", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep fig3-sensing/cli-test: 8 trials, 0 already stored, 8 run" in out
    assert "m / d @50% (d=5)" in out and "nuclear_norm" in out
    assert (tmp_path / "fig3-sensing.png").is_file() and (tmp_path / "flatminima.sqlite").is_file()
    frame = pandas.read_csv(tmp_path / "fig3-sensing.csv")
    assert len(frame) == 8 and set(frame["label"]) == {"flat", "nuclear_norm"}


def test_every_command_has_complete_help(capsys: pytest.CaptureFixture[str]) -> None:
    group = typer.main.get_command(app)  # typer's own (vendored) click objects
    commands = group.commands  # type: ignore[attr-defined]
    assert {"demo", "sweep", "reproduce", "plot", "export"} <= set(commands)
    for name, command in commands.items():
        assert command.help, name
        assert main([name, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts}"
                assert all(opt in text for opt in param.opts), f"{name} {param.opts}"
            else:
                assert param.help and " ".join(param.help.split()) in text, f"{name} {param.name}"
                assert param.metavar and param.metavar in text, f"{name} {param.name}"


def test_malformed_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    message = _one_error_line(capsys, ["sweep", str(bad), "--store", str(tmp_path / "s.sqlite")])
    assert message.startswith(f"{bad}: invalid TOML: ")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('name = "matrix_sensing"', 'name = "matrix_sensin"', "problem.name: must be one of "),
        ('name = "least_norm"', 'name = "lest_norm"', "solvers[0].name: unknown solver 'lest_norm'; valid: "),
        ("dim = 5", "dim = -5", "problem.dim: must be a positive integer, got -5"),
        (
            "num_measurements = [10, 30]",
            "num_measurements = [10, -30]",
            "grid.num_measurements[1]: must be a ",
        ),
    ],
)
def test_bad_spec_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.replace(old, new))
    message = _one_error_line(
        capsys, ["sweep", str(path), "--store", str(tmp_path / "s.sqlite"), "--in-process"]
    )
    assert message.startswith(expected)
    assert not (tmp_path / "s.sqlite").exists()


def test_unwritable_store(tmp_path: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    message = _one_error_line(
        capsys, ["sweep", str(spec_file), "--store", str(blocker / "s.sqlite"), "--in-process"]
    )
    assert "cannot" in message or "does not exist" in message
    message = _one_error_line(capsys, ["sweep", str(spec_file), "--store", str(tmp_path), "--in-process"])
    assert message.endswith("is a directory; give a file path")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["reproduce", "fig9"], "unknown reproduction 'fig9'; valid: fig3-sensing, "),
        (["reproduce"], "give a reproduction name or --list; valid: fig3-sensing"),
        (["reproduce", "fig3-sensing", "--workers", "0"], "Invalid value for '--workers'"),
        (["sweep", "missing.toml"], "cannot read sweep file 'missing.toml'"),
        (
            ["reproduce", "fig3-sensing", "--in-process", "--workers", "2"],
            "give either --in-process or --workers",
        ),
        (
            ["reproduce", "fig3-sensing", "--workers", "2", "--scheduler", "tcp://x:1"],
            "give either --workers",
        ),
        (["plot", "missing.sqlite"], "store 'missing.sqlite' does not exist"),
        (["export", "missing.sqlite", "--out", "x.csv"], "store 'missing.sqlite' does not exist"),
        (
            ["reproduce", "dinh-reparam", "--quick", "--workers", "2"],
            "--workers: 'dinh-reparam' is a network study that runs in this process",
        ),
        (
            ["reproduce", "keskar-batch", "--scheduler", "tcp://127.0.0.1:9"],
            "--scheduler: 'keskar-batch' is a network study that runs in this process",
        ),
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert _one_error_line(capsys, argv).startswith(expected)


def test_real_subprocess(tmp_path: Path, spec_file: Path) -> None:
    store = tmp_path / "s.sqlite"
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "flatminima.cli",
            "sweep",
            str(spec_file),
            "--store",
            str(store),
            "--in-process",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert "sweep cli: 8 trials" in ok.stdout
    assert "done 8" in ok.stderr  # the progress bar
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.replace("dim = 5", "dim = -5"))
    failed = subprocess.run(
        [sys.executable, "-m", "flatminima.cli", "sweep", str(bad), "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        "flatminima: error: problem.dim: must be a positive integer, got -5"
    ]
