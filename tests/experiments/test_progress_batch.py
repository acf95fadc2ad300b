"""Batch-job output: plain progress lines and plain tables when the stream is not a terminal."""

from __future__ import annotations

import io
import re
import sys

import pytest

from flatminima.cli import _print_table
from flatminima.experiments.progress import SweepProgress


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTTY(io.StringIO):
    """A captured stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def _run(total: int, *, seconds_per_trial: float, failed_every: int = 0, **options: float) -> list[str]:
    stream, clock = io.StringIO(), FakeClock()
    with SweepProgress("demo", total, skipped=3, stream=stream, clock=clock, **options) as bar:
        assert bar.plain
        for i in range(total):
            clock.now += seconds_per_trial
            bar.advance(failed=bool(failed_every) and i % failed_every == failed_every - 1)
    return stream.getvalue().splitlines()


def test_plain_lines_every_five_percent_with_counts_rate_and_eta() -> None:
    lines = _run(100, seconds_per_trial=2.0, failed_every=10, min_interval=0.0)
    assert lines[0] == "[demo] start: 100 trials to run, 3 skipped (finished in the store)"
    progress = lines[1:-1]
    assert len(progress) == 19  # 5%, 10%, ..., 95%; 100% is the closing line
    assert progress[0] == (
        "[demo] 5/100 (5%): done 5, failed 0, remaining 95, skipped 3; 2 s/trial, elapsed 0:00:10, "
        "ETA 0:03:10"
    )
    assert progress[1].startswith("[demo] 10/100 (10%): done 9, failed 1, remaining 90,")
    assert lines[-1] == (
        "[demo] finished 100/100 (100%): done 90, failed 10, remaining 0, skipped 3; 2 s/trial, "
        "elapsed 0:03:20"
    )
    assert all(line.isascii() for line in lines)


def test_min_interval_throttles_and_heartbeat_forces_lines() -> None:
    fast = _run(1000, seconds_per_trial=0.01, min_interval=10.0)
    assert len(fast) == 2  # 10 s in all: no line between start and end
    assert "100 trials/s" in fast[-1]
    # 10 s a trial, no 5% line allowed: the 120 s heartbeat gives a line every 12 trials (12, ..., 996)
    slow = _run(1000, seconds_per_trial=10.0, min_interval=1e9, heartbeat=120.0)
    assert len(slow) == 2 + 83
    assert slow[1].startswith("[demo] 12/1000 (1%)") and "elapsed 0:02:00, ETA 2:44:40" in slow[1]


def test_interrupted_sweep_says_where_it_stopped() -> None:
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt), SweepProgress("demo", 10, stream=stream) as bar:
        bar.advance(failed=False)
        bar.advance(failed=True)
        raise KeyboardInterrupt
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("[demo] stopped at 2/10 (20%): done 1, failed 1, remaining 8")
    assert "ETA" not in last


def test_nothing_to_run_is_one_line_and_disabled_is_silent() -> None:
    stream = io.StringIO()
    with SweepProgress("demo", 0, skipped=7, stream=stream):
        pass
    assert stream.getvalue() == "[demo] nothing to run, 7 skipped (finished in the store)\n"
    silent = io.StringIO()
    with SweepProgress("demo", 5, stream=silent, enabled=False) as bar:
        bar.advance(failed=False)
    assert silent.getvalue() == "" and bar.done == 1


def test_captured_stderr_gets_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with SweepProgress("demo", 2) as bar:  # the default stream: sys.stderr, captured (not a terminal)
        bar.advance(failed=False)
        bar.advance(failed=False)
    err = capsys.readouterr().err
    assert err.startswith("[demo] start: 2 trials to run\n")
    assert "[demo] finished 2/2 (100%): done 2, failed 0, remaining 0" in err
    assert "━" not in err  # no bar characters in a log


def test_a_terminal_gets_the_rich_bar() -> None:
    stream = FakeTTY()
    with SweepProgress("demo", 4, stream=stream) as bar:
        assert not bar.plain
        for i in range(4):
            bar.advance(failed=i == 0)
    out = stream.getvalue()
    assert "━" in out and "done 3 · failed 1 · remaining 0" in out
    assert "[demo]" not in out


WIDE = ["psi batch_size", "psi weight_decay", "psi width", "psi depth"]
TABLE = (
    ["measure", "tau", "psi learning_rate", "Psi", *WIDE],
    [
        ["magnitude_pac_bayes_flatness", "0.1234", "-", "-0.5", "1", "1", "1", "1"],
        ["hutchinson_squared_frobenius_norm", "0.9", "1", "x", "0", "0", "0", "0"],
    ],
)


def test_table_is_plain_and_unbroken_when_stdout_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _print_table("fantastic-measures (quick)", TABLE)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "fantastic-measures (quick)"
    assert re.fullmatch(r"measure +tau +psi learning_rate +Psi +" + " +".join(WIDE), lines[1])
    assert set(lines[2]) == {"-", " "}
    assert lines[3].startswith("magnitude_pac_bayes_flatness ") and lines[4].startswith(
        "hutchinson_squared_frobenius_norm "
    )
    # the columns line up: each column starts (left-aligned) or ends (numbers, right-aligned) together
    assert lines[3].index("0.1234") + len("0.1234") == lines[4].index("0.9") + len("0.9")
    assert lines[3].index("-0.5") == lines[4].index(" x") + 1  # a text column: left-aligned
    assert len(lines[1]) > 120 and len(lines) == 5  # one line per row, never folded to a console width
    assert not any(ch in "".join(lines) for ch in "┃│━")


def test_table_on_a_terminal_is_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTTY()
    monkeypatch.setattr(sys, "stdout", fake)
    _print_table("title", TABLE)
    out = fake.getvalue()
    assert "┃" in out or "│" in out
    assert "title" in out
