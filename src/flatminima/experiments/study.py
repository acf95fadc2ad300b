"""Studies: reproductions that train networks instead of sweeping (problem, solver) trials.

A :class:`Study` is the second kind of named reproduction (besides the sweep-based
:class:`~flatminima.experiments.reproduction.Reproduction`): it holds a quick and a full configuration
and a function ``run(config, out_dir, name, store=..., progress=...) -> StudyOutput`` that trains and
measures, draws ``out_dir/NAME.png`` and returns the tidy frame written to ``out_dir/NAME.csv`` with the
summary table. :func:`flatminima.experiments.runner.reproduce` dispatches on the kind, so
``flatminima reproduce NAME [--quick]`` works for both. Studies that run many independent trainings store
each one in the SQLite store (as a trial keyed by its configuration), so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flatminima.experiments.progress import SweepProgress

if TYPE_CHECKING:
    import pandas

    from flatminima.experiments.store import Store
    from flatminima.experiments.sweep import SweepResult

Table = tuple[list[str], list[list[str]]]


@dataclasses.dataclass(frozen=True)
class StudyOutput:
    """What a study measured: the tidy frame (-> NAME.csv), the figure's path and the summary table."""

    frame: pandas.DataFrame
    figure: Path
    table: Table
    sweeps: tuple[SweepResult, ...] = ()


StudyFunction = Callable[..., StudyOutput]


@dataclasses.dataclass(frozen=True)
class Study:
    """A named study.

    Attributes:
        name: the command-line name.
        summary: one line for ``reproduce --list``.
        quick: the quick configuration (< 2 minutes on 2 cores).
        full: the full configuration.
        run: ``run(config, out_dir, name, *, store, progress) -> StudyOutput``.
    """

    name: str
    summary: str
    quick: Any
    full: Any
    run: StudyFunction

    def execute(
        self, *, quick: bool, out_dir: Path, store: Store, progress: bool, num_threads: int | None = 1
    ) -> StudyOutput:
        """Run the quick or full configuration into ``out_dir``.

        ``num_threads`` torch intra-op threads during the run (restored afterwards; None: unchanged): the
        networks are small, and one thread is faster than two contending ones on a shared machine.
        """
        import torch

        config = self.quick if quick else self.full
        name = f"{self.name}/quick" if quick else self.name
        previous = torch.get_num_threads()
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        try:
            return self.run(config, out_dir, self.name, sweep=name, store=store, progress=progress)
        finally:
            torch.set_num_threads(previous)


def progress_bar(name: str, total: int, enabled: bool) -> SweepProgress:
    """A rich progress bar over ``total`` units of work of a study (a no-op when disabled)."""
    return SweepProgress(name, total, enabled=enabled)
