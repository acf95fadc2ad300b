"""The ``flatminima demo`` command and the CLI's error contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flatminima.cli import main


def test_demo_prints_traces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dim", "8", "--measurements", "160", "--width", "8"]) == 0
    out = capsys.readouterr().out
    assert "kappa(D1, D2)" in out
    assert "ground truth (balanced)" in out
    assert "random point" in out


def test_demo_bad_rank_is_one_line_exit_2() -> None:
    cmd = [sys.executable, "-m", "flatminima.cli", "demo", "--dim", "5", "--rank", "9"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["flatminima: error: rank must satisfy 1 <= rank <= min(d1, d2) = 5; got rank=9."]
    assert "Traceback" not in proc.stderr


def test_unknown_option_is_one_line_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flatminima.cli", "demo", "--nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "No such option: --nope" in proc.stderr


def test_version_flag_prints_the_version() -> None:
    import subprocess
    import sys

    from flatminima import __version__

    done = subprocess.run(
        [sys.executable, "-c", "from flatminima.cli import run; run()", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"flatminima {__version__}"
