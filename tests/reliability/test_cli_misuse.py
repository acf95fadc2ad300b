"""Misuse of the CLI: refused at once with one line and exit code 2, before any trial runs.

Scheduler addresses that are malformed or point at the dashboard, worker counts beyond the machine,
output paths that are folders, demo sizes that cannot be allocated, and a trial count beyond the limit.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flatminima.cli import main
from flatminima.experiments.executors import WORKERS_PER_CPU, check_scheduler_address

SPEC = """
name = "misuse"
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
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("flatminima: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://127.0.0.1:8787", "dashboard"),
        ("https://cluster.example:8787/status", "dashboard"),
        ("tcp://::bad", "must be SCHEME://HOST:PORT"),
        ("tcp://host:99999", "must be SCHEME://HOST:PORT"),
        ("localhost", "must be SCHEME://HOST:PORT"),
        ("ftp://host:21", "must be SCHEME://HOST:PORT"),
        ("", "must be SCHEME://HOST:PORT"),
    ],
)
def test_malformed_scheduler_address_is_refused_at_once(
    capsys: pytest.CaptureFixture[str], spec_file: Path, tmp_path: Path, address: str, expected: str
) -> None:
    start = time.monotonic()
    line = _one_line(
        capsys, ["sweep", str(spec_file), "--store", str(tmp_path / "s.sqlite"), "--scheduler", address]
    )
    assert expected in line and repr(address) in line
    assert time.monotonic() - start < 10  # not the connect timeout (20 s) nor the client's 40 s close
    assert not (tmp_path / "s.sqlite").exists() or _trials(tmp_path / "s.sqlite") == 0


@pytest.mark.parametrize(
    "address", ["tcp://127.0.0.1:8786", "127.0.0.1:8786", "tls://[::1]:8786", "ws://h:1"]
)
def test_well_formed_scheduler_addresses_pass_the_check(address: str) -> None:
    assert check_scheduler_address(address) == address


def _trials(store: Path) -> int:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM trials").fetchone()[0])


@pytest.mark.parametrize("command", ["sweep", "reproduce"])
def test_too_many_workers_is_refused_naming_the_limit(
    capsys: pytest.CaptureFixture[str], spec_file: Path, tmp_path: Path, command: str
) -> None:
    import os

    limit = WORKERS_PER_CPU * max(1, os.cpu_count() or 1)
    target = (
        [str(spec_file), "--store", str(tmp_path / "s.sqlite")]
        if command == "sweep"
        else ["fig3-sensing", "--quick", "--out", str(tmp_path / "out")]
    )
    line = _one_line(capsys, [command, *target, "--workers", "10000"])
    assert "--workers 10000" in line and f"limit {limit}" in line and "--oversubscribe" in line


def test_output_file_that_is_a_folder_is_refused_before_the_first_trial(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "fig3-sensing.png").mkdir(parents=True)
    line = _one_line(capsys, ["reproduce", "fig3-sensing", "--quick", "--out", str(out), "--in-process"])
    assert "fig3-sensing.png" in line and "is a directory" in line
    assert not (out / "flatminima.sqlite").exists()  # nothing ran


def test_store_that_is_a_folder_is_refused_before_the_first_trial(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "store").mkdir()
    line = _one_line(
        capsys,
        ["reproduce", "fig3-sensing", "--quick", "--out", str(tmp_path), "--store", str(tmp_path / "store")],
    )
    assert "--store" in line and "is a directory" in line


def test_export_to_a_folder_is_refused(
    capsys: pytest.CaptureFixture[str], spec_file: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s.sqlite"
    assert main(["sweep", str(spec_file), "--store", str(store), "--in-process", "--no-progress"]) == 0
    capsys.readouterr()
    (tmp_path / "table.csv").mkdir()
    line = _one_line(capsys, ["export", str(store), "--out", str(tmp_path / "table.csv")])
    assert "is a directory" in line


def test_demo_sizes_that_cannot_be_allocated_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line(capsys, ["demo", "--dim", "100000"])
    assert "--dim 100000" in line and "GiB" in line


def test_allocation_failure_inside_a_command_is_one_line() -> None:
    """A size no check foresaw still ends in one line, not torch's allocator traceback."""
    code = (
        "import sys, torch\n"
        "from flatminima import cli\n"
        "@cli.app.command('huge')\n"
        "def huge() -> None:\n"
        "    torch.empty(2**60, dtype=torch.uint8)\n"
        "sys.exit(cli.main(['huge']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "out of memory" in lines[0], done.stderr


def test_a_grid_of_billions_of_trials_is_refused_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    counts = ", ".join(str(v) for v in range(10, 1010))  # 10^3 x 10^3 grid cells x 10^3 draws = 10^9
    dims = ", ".join(str(v) for v in range(5, 1005))
    spec = tmp_path / "huge.toml"
    text = SPEC.replace("draws = 2", "draws = 1000").replace("dim = 5\n", "")
    spec.write_text(text.replace("[10, 30]", f"[{counts}]\ndim = [{dims}]"))
    start = time.monotonic()
    line = _one_line(capsys, ["sweep", str(spec), "--store", str(tmp_path / "s.sqlite"), "--in-process"])
    assert "1000000000 trials" in line.replace(",", "") and "--max-trials" in line
    assert time.monotonic() - start < 30  # counted, not built


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.mark.parametrize("command", ["export", "plot"])
@pytest.mark.parametrize("content", ["foreign", "empty", "text"])
def test_read_only_commands_refuse_files_that_are_not_stores_and_leave_them_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, content: str
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    target = folder / "other.sqlite"
    if content == "foreign":  # another application's database, in rollback-journal mode
        with sqlite3.connect(target) as connection:
            connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
            connection.execute("INSERT INTO invoices (total) VALUES (12.5)")
        connection.close()
    elif content == "empty":
        target.touch()
    else:
        target.write_text("name,value\na,1\n")
    before = _snapshot(folder)
    out = tmp_path / ("table.csv" if command == "export" else "figures")
    line = _one_line(capsys, [command, str(target), "--out", str(out)])
    assert "not a flatminima store" in line and str(target) in line
    assert _snapshot(folder) == before  # byte-identical, no -wal / -shm files, no new tables
    assert not out.exists()


def test_export_and_plot_do_not_modify_a_store(
    capsys: pytest.CaptureFixture[str], spec_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "stores"
    folder.mkdir()
    store = folder / "s.sqlite"
    assert main(["sweep", str(spec_file), "--store", str(store), "--in-process", "--no-progress"]) == 0
    before = _snapshot(folder)
    assert main(["export", str(store), "--out", str(tmp_path / "t.csv")]) == 0
    assert main(["plot", str(store), "--out", str(tmp_path / "figures")]) == 0
    capsys.readouterr()
    assert _snapshot(folder) == before
    assert (tmp_path / "t.csv").read_text().count("\n") == 5  # header + 2 cells x 2 draws


def test_a_changed_spec_under_a_stored_name_is_refused_not_mixed(
    capsys: pytest.CaptureFixture[str], spec_file: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s.sqlite"
    assert main(["sweep", str(spec_file), "--store", str(store), "--in-process", "--no-progress"]) == 0
    capsys.readouterr()
    spec_file.write_text(SPEC.replace("rank = 1", "rank = 2"))
    line = _one_line(
        capsys, ["sweep", str(spec_file), "--store", str(store), "--in-process", "--no-progress"]
    )
    assert "'misuse' is stored with a different spec" in line and "problem.rank" in line
    assert _trials(store) == 4


def test_invalid_solver_options_are_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.sqlite"
    for option, value in [
        ("max_iterations", "-5"),
        ("tolerance", "nan"),
        ("tolerance", "inf"),
        ("time_limit", "-1"),
    ]:
        spec = tmp_path / "bad.toml"
        spec.write_text(
            SPEC.replace('name = "least_norm"', f'name = "flat"\noptions = {{ {option} = {value} }}')
        )
        line = _one_line(capsys, ["sweep", str(spec), "--store", str(store), "--in-process"])
        assert f"solvers[0].options.{option}" in line, line
    assert not store.exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["fig3-sensing", "--size", "huge"], "--size: must be one of default, large, got 'huge'"),
        (["keskar-batch", "--size", "large"], "--size large: 'keskar-batch' is a network study"),
    ],
)
def test_unknown_or_inapplicable_size_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], expected: str
) -> None:
    line = _one_line(capsys, ["reproduce", *argv, "--quick", "--out", str(tmp_path / "out")])
    assert expected in line
    assert not (tmp_path / "out").exists()  # refused before anything was created
