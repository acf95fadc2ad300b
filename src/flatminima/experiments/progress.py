"""Progress of sweeps and studies on stderr: a rich bar on a terminal, plain log lines otherwise.

On a terminal (or a Jupyter notebook) :class:`SweepProgress` draws a live rich bar with the trials done,
failed, remaining and skipped, the elapsed time and the ETA. When the stream is not a terminal (a batch
job, a log file, a pipe) a live bar would print nothing until the end and then one truncated line, so it
writes one plain ASCII line instead when the sweep starts, every ``log_percent`` percent of the trials
(but at most one line per ``min_interval`` seconds, and at least one per ``heartbeat`` seconds while
trials finish), and when it ends; for example::

    [fig3-sensing/quick] start: 400 trials to run, 12 skipped (finished in the store)
    [fig3-sensing/quick] 20/400 (5%): done 19, failed 1, remaining 380, skipped 12; 2.1 trials/s,
    elapsed 0:00:09, ETA 0:03:00
    [fig3-sensing/quick] finished 400/400 (100%): done 396, failed 4, remaining 0, skipped 12;
    2 trials/s, elapsed 0:03:20

(one line each in the log). "done" counts the trials that finished without failing, as on the bar.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def _clock_text(seconds: float) -> str:
    """``H:MM:SS`` of a non-negative duration (``?`` when unknown or infinite)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _rate_text(rate: float) -> str:
    """Trials per second, or seconds per trial when slower than one a second."""
    if rate <= 0 or not math.isfinite(rate):
        return "? trials/s"
    return f"{rate:.3g} trials/s" if rate >= 1 else f"{1 / rate:.3g} s/trial"


class SweepProgress:
    """Progress of one sweep; a no-op when disabled.

    Args:
        name: the sweep's name.
        total: trials to run in this session (finished ones already skipped).
        skipped: trials found finished in the store.
        enabled: report progress at all.
        stream: where to write (default: ``sys.stderr`` at construction).
        interactive: draw the live rich bar (True) or write plain log lines (False); default: whether
            ``stream`` is a terminal (or a notebook), as rich sees it.
        log_percent: plain mode: a line each time this many percent of ``total`` more have finished.
        min_interval: plain mode: seconds between two progress lines at least (the last line always
            comes).
        heartbeat: plain mode: seconds after which a line comes anyway if trials finished meanwhile.
        clock: the time source in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        name: str,
        total: int,
        *,
        skipped: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        log_percent: float = 5.0,
        min_interval: float = 10.0,
        heartbeat: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.done = 0
        self.failed = 0
        self.total = total
        self.skipped = skipped
        self.enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._step = max(1, math.ceil(total * log_percent / 100)) if total > 0 else 1
        self._min_interval = min_interval
        self._heartbeat = heartbeat
        self._clock = clock
        self._start = self._last_time = clock()
        self._last_done = 0
        self._closed = False
        self._progress: Any = None
        if not enabled:
            return
        from rich.console import Console

        console = Console(file=self._stream)
        if interactive is None:
            interactive = console.is_terminal or console.is_jupyter
        if interactive:
            self._progress = self._rich_bar(console)

    def _rich_bar(self, console: Any) -> Any:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "done {task.fields[done]} · failed {task.fields[failed]} · remaining {task.fields[remaining]}"
            ),
            TextColumn("· skipped {task.fields[skipped]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = progress.add_task(
            self.name, total=self.total, done=0, failed=0, remaining=self.total, skipped=self.skipped
        )
        return progress

    @property
    def plain(self) -> bool:
        """Whether progress goes out as plain log lines (enabled, and not on a terminal)."""
        return self.enabled and self._progress is None

    def line(self, *, final: bool = False) -> str:
        """The plain log line of the current counts (``final``: the closing line, without ETA)."""
        elapsed = self._clock() - self._start
        remaining = max(self.total - self.done, 0)
        rate = self.done / elapsed if elapsed > 0 else math.nan
        percent = 100 * min(self.done, self.total) / self.total if self.total else 100.0
        head = "finished " if final and remaining == 0 else "stopped at " if final else ""
        text = (
            f"[{self.name}] {head}{self.done}/{self.total} ({percent:.0f}%): done {self.done - self.failed}, "
            f"failed {self.failed}, remaining {remaining}, skipped {self.skipped}; "
            f"{_rate_text(rate)}, elapsed {_clock_text(elapsed)}"
        )
        if not final:
            text += f", ETA {_clock_text(remaining / rate if rate > 0 else math.inf)}"
        return text

    def _write(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()

    def _due(self) -> bool:
        """Whether a plain progress line is due after the latest trial."""
        since = self._clock() - self._last_time
        crossed = self.done // self._step > self._last_done // self._step
        return (crossed and since >= self._min_interval) or since >= self._heartbeat

    def advance(self, *, failed: bool) -> None:
        """Count one finished trial (failed or not)."""
        self.done += 1
        self.failed += int(failed)
        if self._progress is not None:
            self._progress.update(
                self._task,
                advance=1,
                done=self.done - self.failed,
                failed=self.failed,
                remaining=self.total - self.done,
            )
        elif self.plain and self.done < self.total and self._due():
            self._write(self.line())
            self._last_time, self._last_done = self._clock(), self.done

    def __enter__(self) -> SweepProgress:
        self._start = self._last_time = self._clock()
        if self._progress is not None:
            self._progress.start()
        elif self.plain:
            skipped = f", {self.skipped} skipped (finished in the store)" if self.skipped else ""
            plural = "" if self.total == 1 else "s"
            start = f"start: {self.total} trial{plural} to run" if self.total else "nothing to run"
            self._write(f"[{self.name}] {start}{skipped}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._closed:
            return
        self._closed = True
        if self._progress is not None:
            self._progress.stop()
        elif self.plain and (self.total or self.done):  # "nothing to run" needs no closing line
            self._write(self.line(final=True))
