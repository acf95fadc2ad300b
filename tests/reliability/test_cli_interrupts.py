"""Ctrl-C on the CLI as a real subprocess: SIGINT to the driver alone and to its whole process group.

Promise: exit status 130, one line on stderr saying how many trials are stored and that a rerun resumes,
no worker tracebacks, nothing stored as failed because of the interrupt, and a rerun that completes
the sweep without recomputing a stored trial.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

SPEC = """
name = "interrupted"
seed = 3
draws = {draws}

[problem]
name = "matrix_sensing"
rank = 2
dim = 14

[grid]
num_measurements = [120, 160]

[[solvers]]
name = "nuclear_norm"
"""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _flatminima(*args: str) -> list[str]:
    return [sys.executable, "-c", "from flatminima.cli import run; run()", *args]


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _rows(store: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as connection:
        return dict(connection.execute("SELECT status, COUNT(*) FROM trials GROUP BY status").fetchall())


def _interrupt_when_stored(
    command: list[str], store: Path, *, group: bool, limit: float = 120.0
) -> tuple[int, str]:
    """Start ``command``, send SIGINT once the store holds a trial, return (exit status, stderr)."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # as from a terminal: a runner started in the background (nohup, `cmd &`) passes SIGINT on ignored,
        # and Python then installs no KeyboardInterrupt handler
        preexec_fn=_default_interrupt,
    )
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if store.exists():
                try:
                    if sum(_rows(store).values()) > 0:
                        break
                except sqlite3.Error:  # the schema is being created
                    pass
            time.sleep(0.2)
        assert process.poll() is None, "the sweep finished before it could be interrupted"
        if group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, err


@pytest.mark.parametrize(
    ("executor", "group"),
    [(["--in-process"], False), (["--workers", "2"], True), (["--workers", "1"], False)],
    ids=["in-process-driver", "dask-process-group", "dask-driver"],
)
def test_ctrl_c_exits_130_with_one_line_and_the_rerun_resumes(
    tmp_path: Path, executor: list[str], group: bool
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(draws=15))
    store = tmp_path / "store.sqlite"
    command = _flatminima("sweep", str(spec), "--store", str(store), "--no-progress", *executor)
    code, err = _interrupt_when_stored(command, store, group=group)
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flatminima: interrupted"), err
    assert "rerun the same command to resume" in lines[0]
    stored = _rows(store)
    assert stored.get("failed", 0) == 0, stored  # no trial died of the interrupt
    assert 0 < stored.get("ok", 0) < 30
    if "trials" in lines[0]:  # the count, when the store could be read
        assert f"interrupted: {stored['ok']} trial" in lines[0]
    # the rerun finishes the sweep without recomputing what is stored
    done = subprocess.run(
        _flatminima("sweep", str(spec), "--store", str(store), "--no-progress", "--in-process"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"{stored['ok']} already stored" in done.stdout
    assert _rows(store) == {"ok": 30}


def test_ctrl_c_during_a_reproduction_exits_130_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "results"
    store = out / "flatminima.sqlite"
    command = _flatminima(
        "reproduce", "fig3-sensing", "--quick", "--out", str(out), "--no-progress", "--in-process"
    )
    code, err = _interrupt_when_stored(command, store, group=True)
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flatminima: interrupted"), err
    assert "rerun the same command to resume" in lines[0]
    assert _rows(store).get("failed", 0) == 0
    assert not (out / "fig3-sensing.csv").exists()  # the summary is written only by a finished run
