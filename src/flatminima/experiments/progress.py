"""A rich progress bar for sweeps: trials done / failed / remaining, rate and ETA (on stderr)."""

from __future__ import annotations

from typing import Any


class SweepProgress:
    """Progress of one sweep; a no-op when disabled.

    Args:
        name: the sweep's name.
        total: trials to run in this session (finished ones already skipped).
        skipped: trials found finished in the store.
        enabled: draw the bar (on stderr).
    """

    def __init__(self, name: str, total: int, *, skipped: int = 0, enabled: bool = True) -> None:
        self.done = 0
        self.failed = 0
        self.total = total
        self._progress: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
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
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(
            name, total=total, done=0, failed=0, remaining=total, skipped=skipped
        )

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

    def __enter__(self) -> SweepProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
