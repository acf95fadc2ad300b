"""Reliability: a sweep killed with SIGKILL resumes without losing or duplicating finished trials; a
Dask worker killed mid-sweep does not stop the sweep."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flatminima.experiments import Store, parse_spec, run_sweep


def _rows(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    connection = sqlite3.connect(path, timeout=30)
    try:
        return connection.execute("SELECT key, created, metrics FROM trials ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the driver has not created the table yet
        return []
    finally:
        connection.close()


def _slow_spec(name: str, draws: int, solvers: list[str]) -> dict[str, Any]:
    """Gaussian sensing, d = 24, m = 300 and 400: milliseconds (least_norm) to a second (flat) per trial."""
    return {
        "name": name,
        "draws": draws,
        "problem": {"name": "matrix_sensing", "rank": 2, "dim": 24},
        "grid": {"num_measurements": [300, 400]},
        "solvers": solvers,
    }


def test_sigkill_mid_sweep_then_resume(tmp_path: Path, write_spec: Any) -> None:
    spec_data = _slow_spec("killed", draws=40, solvers=["least_norm"])
    spec_path = write_spec(spec_data)
    store = tmp_path / "s.sqlite"
    command = [
        sys.executable,
        "-m",
        "flatminima.cli",
        "sweep",
        str(spec_path),
        "--store",
        str(store),
        "--in-process",
        "--no-progress",
    ]
    total = len(parse_spec(spec_data).trials())
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_rows(store)) < 10 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    before = _rows(store)
    assert 10 <= len(before) < total, "the sweep must be killed mid-run"

    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"{total} trials, {len(before)} already stored, {total - len(before)} run" in finished.stdout
    after = _rows(store)
    keys = [row[0] for row in after]
    assert len(after) == total and len(set(keys)) == total
    assert set(keys) == {t.key for t in parse_spec(spec_data).trials()}
    assert after[: len(before)] == before  # finished rows untouched: not recomputed, not rewritten


class _KillOneWorker:
    """Wraps a DaskExecutor: SIGKILLs one worker process once the first record has come back."""

    def __init__(self, executor: Any) -> None:
        self.executor = executor
        self.description = executor.description
        self.killed: int | None = None

    def map_unordered(self, function: Any, items: Any) -> Iterator[tuple[Any, Any]]:
        for count, pair in enumerate(self.executor.map_unordered(function, items)):
            if count == 0:
                pids = sorted(self.executor.worker_pids().values())
                self.killed = pids[0]
                os.kill(self.killed, signal.SIGKILL)
            yield pair


@pytest.mark.dask
def test_killed_dask_worker_does_not_stop_the_sweep(tmp_path: Path) -> None:
    from flatminima.experiments import DaskExecutor

    spec = parse_spec(_slow_spec("dask-kill", draws=3, solvers=["flat", "nuclear_norm"]))
    with DaskExecutor(workers=2) as executor, Store(tmp_path / "s.sqlite") as store:
        assert len(executor.worker_pids()) == 2
        killer = _KillOneWorker(executor)
        result = run_sweep(spec, store, executor=killer, progress=False)
        assert killer.killed is not None
        assert result.completed == result.total == len(spec.trials())
        assert store.count() == result.total and store.count(status="failed") == 0
        deadline = time.monotonic() + 60
        while len(executor.worker_pids()) < 2 and time.monotonic() < deadline:  # the nanny restarts it
            time.sleep(0.2)
        pids = set(executor.worker_pids().values())
        assert len(pids) == 2 and killer.killed not in pids


@pytest.mark.dask
def test_existing_scheduler_through_the_cli(
    tmp_path: Path, write_spec: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import distributed

    from flatminima.cli import main

    spec_path = write_spec(_slow_spec("remote", draws=1, solvers=["least_norm"]))
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        argv = [
            "sweep",
            str(spec_path),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--scheduler",
            cluster.scheduler_address,
        ]
        assert main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sweep remote: 2 trials, 0 already stored, 2 run (0 failed)" in out
    assert f"Dask scheduler {cluster.scheduler_address}" in out


@pytest.mark.dask
def test_unreachable_scheduler_is_a_configuration_error() -> None:
    from flatminima.errors import ConfigurationError
    from flatminima.experiments import DaskExecutor

    with pytest.raises(ConfigurationError, match=r"cannot connect to the Dask scheduler 'tcp://127.0.0.1:9'"):
        DaskExecutor(scheduler="tcp://127.0.0.1:9", connect_timeout=1.0)
