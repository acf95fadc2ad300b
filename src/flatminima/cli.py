"""The ``flatminima`` command line: a thin Typer shell over the public API.

Errors from the library (``FlatminimaError``) and bad command-line usage print one line on stderr and exit
with code 2, never a traceback. Ctrl-C (SIGINT to the driver or to its whole process group) exits with
code 130 and one line saying how many trials the store holds: every finished trial is committed as it
completes, so rerunning the same command resumes.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flatminima.errors import ConfigurationError, FlatminimaError

app = typer.Typer(
    name="flatminima",
    help="flatminima: flat minima of low-rank recovery and beyond.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclasses.dataclass
class _Running:
    """What the running command writes, for the one line an interrupt prints."""

    store: Path | None = None
    sweeps: tuple[str, ...] = ()


_RUNNING = _Running()


def _interrupted_line() -> str:
    """``interrupted: N trials stored ...`` from the store the command was writing (read-only)."""
    resume = "rerun the same command to resume"
    store, sweeps = _RUNNING.store, _RUNNING.sweeps
    if store is None or not store.is_file():
        return f"interrupted; {resume}"
    try:
        from flatminima.experiments import Store

        with Store(store, read_only=True) as database:
            count = sum(database.count(name) for name in sweeps) if sweeps else database.count()
    except Exception:  # the message must not fail; the store itself is intact
        return f"interrupted; {resume}"
    which = f" of {', '.join(sweeps)}" if sweeps else ""
    return f"interrupted: {count} trial{'' if count == 1 else 's'}{which} stored in {store}; {resume}"


def _print_version(value: bool) -> None:
    if value:
        from flatminima import __version__

        typer.echo(f"flatminima {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """flatminima: flat minima of low-rank recovery and beyond."""


@app.command()
def demo(
    dim: int = typer.Option(30, help="matrix dimension d (d x d ground truth)"),
    rank: int = typer.Option(2, help="rank r of the ground truth"),
    measurements: int = typer.Option(600, help="number m of Gaussian measurements"),
    width: int = typer.Option(30, help="factor width k"),
    seed: int = typer.Option(0, help="seed of the instance and the random point"),
) -> None:
    """Exact Hessian trace of Gaussian matrix sensing at the ground truth and at a random point."""
    from flatminima.demo import run_demo

    report = run_demo(dim=dim, rank=rank, num_measurements=measurements, width=width, seed=seed)
    typer.echo(
        f"Gaussian matrix sensing: d = {report.dim}, r = {report.rank}, m = {report.num_measurements}, "
        f"width k = {report.width}, seed = {seed}"
    )
    typer.echo(f"kappa(D1, D2) = {report.kappa:.4f}")
    typer.echo(f"{'point':<28}{'loss':>12}{'tr Hessian':>14}{'scaled tr':>12}")
    typer.echo(
        f"{'ground truth (balanced)':<28}{report.loss_at_truth:>12.3e}{report.trace_at_truth:>14.4f}"
        f"{report.scaled_trace_at_truth:>12.4f}"
    )
    typer.echo(
        f"{'random point':<28}{report.loss_at_random:>12.3e}{report.trace_at_random:>14.4f}"
        f"{report.scaled_trace_at_random:>12.4f}"
    )
    typer.echo(f"one closed-form trace evaluation: {report.seconds_per_trace * 1e6:.1f} microseconds")


_WORKERS_HELP = "local Dask worker processes, one thread each (default: the CPU count)"
_SCHEDULER_HELP = "address of an existing Dask scheduler, e.g. tcp://host:8786 (instead of a local cluster)"
_IN_PROCESS_HELP = "run the trials in this process, one by one (debugging; no Dask)"
_MAX_TRIALS_HELP = "run a sweep with more trials than the default limit (1,000,000) up to this many"
_OVERSUBSCRIBE_HELP = "allow more local workers than 4 per CPU"
_SIZE_HELP = (
    "grid size: default or large (Figure 3: dense sensing to d = 100, bilinear and completion to d = 1000, "
    "quadratic network to d = 200; writes NAME-large.csv/.png)"
)
_PROGRESS_HELP = "progress on stderr: a bar on a terminal, log lines otherwise"


def _executor(workers: int | None, scheduler: str | None, in_process: bool, oversubscribe: bool) -> Any:
    from flatminima.experiments import make_executor

    return make_executor(
        workers=workers, scheduler=scheduler, in_process=in_process, oversubscribe=oversubscribe
    )


def _print_table(title: str, table: tuple[list[str], list[list[str]]]) -> None:
    """Print ``(headers, rows)`` under ``title`` on stdout.

    On a terminal: a rich table as wide as the terminal (cells wrap between words). Otherwise (a log
    file, a pipe, a batch job): plain aligned text, one line per row, as wide as it needs, so that no
    name is ever broken; columns whose cells are all numbers (or "-") are right-aligned.
    """
    headers, rows = table
    isatty = getattr(sys.stdout, "isatty", None)
    if not (callable(isatty) and isatty()):

        def number(cell: str) -> bool:
            try:
                float(cell)
            except ValueError:
                return cell == "-"
            return True

        cells = [[" ".join(str(c).split()) for c in line] for line in [headers, *rows]]
        cells = [line + [""] * (len(headers) - len(line)) for line in cells]
        widths = [max(len(line[j]) for line in cells) for j in range(len(headers))]
        right = [bool(rows) and all(number(line[j]) for line in cells[1:]) for j in range(len(headers))]
        text = [
            "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right, strict=False))
            for line in cells
        ]
        rule = "  ".join("-" * w for w in widths)
        typer.echo("\n".join(line.rstrip() for line in [title, text[0], rule, *text[1:]]))
        return
    from rich.console import Console
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for header in headers:
        out.add_column(header, overflow="fold")
    for row in rows:
        out.add_row(*row)
    Console().print(out)


@app.command()
def sweep(
    spec: Annotated[
        Path,
        typer.Argument(
            metavar="SPEC.toml", help="the sweep specification (TOML; see flatminima.experiments.spec)"
        ),
    ],
    store: Annotated[Path, typer.Option("--store", help="SQLite store (created; reruns resume)")] = Path(
        "flatminima.sqlite"
    ),
    workers: Annotated[int | None, typer.Option("--workers", min=1, help=_WORKERS_HELP)] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help=_SCHEDULER_HELP)] = None,
    in_process: Annotated[bool, typer.Option("--in-process", help=_IN_PROCESS_HELP)] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="rerun trials stored as failed")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help=_PROGRESS_HELP)] = True,
    max_trials: Annotated[int | None, typer.Option("--max-trials", min=1, help=_MAX_TRIALS_HELP)] = None,
    oversubscribe: Annotated[bool, typer.Option("--oversubscribe", help=_OVERSUBSCRIBE_HELP)] = False,
) -> None:
    """Run a sweep (grid x draws x solvers) into a SQLite store; finished trials are skipped."""
    from flatminima.experiments import Store, load_spec, run_sweep
    from flatminima.experiments.executors import check_scheduler_address, check_workers
    from flatminima.experiments.reproduction import summarize_by_solver
    from flatminima.experiments.sweep import check_trial_limit, count_pending

    parsed = load_spec(spec)
    check_trial_limit(parsed, max_trials)
    check_workers(workers, oversubscribe=oversubscribe)
    if scheduler is not None:
        check_scheduler_address(scheduler)
    _RUNNING.store, _RUNNING.sweeps = store, (parsed.name,)
    with Store(store) as database:
        executor = None
        if count_pending(parsed, database, retry_failed=retry_failed) > 0:
            executor = _executor(workers, scheduler, in_process, oversubscribe)
        try:
            result = run_sweep(
                parsed,
                database,
                executor=executor,
                progress=progress,
                retry_failed=retry_failed,
                max_trials=max_trials,
            )
        finally:
            if executor is not None:
                executor.close()
        frame = database.dataframe(parsed.name)
    elsewhere = f", {result.elsewhere} by other drivers" if result.elsewhere else ""
    typer.echo(
        f"sweep {result.name}: {result.total} trials, {result.skipped} already stored, "
        f"{result.completed} run ({result.failed} failed){elsewhere} in {result.wall_time:.1f} s "
        f"({result.trials_per_second:.2f} trials/s, "
        f"{result.executor}); store: {store}"
    )
    if result.running_elsewhere:
        typer.echo(f"{result.running_elsewhere} trials still running in other drivers; rerun to collect them")
    _print_table(
        f"{parsed.name}: per solver", summarize_by_solver({parsed.name: frame}, ["success", "error"])
    )


@app.command()
def reproduce(
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="the reproduction (see --list)")] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="list the reproductions, one line each, and exit")
    ] = False,
    quick: Annotated[bool, typer.Option("--quick", help="the small grid (<= 2 minutes on 2 cores)")] = False,
    out: Annotated[Path, typer.Option("--out", help="output folder for NAME.csv and NAME.png")] = Path(
        "results"
    ),
    store: Annotated[
        Path | None, typer.Option("--store", help="SQLite store (default: OUT/flatminima.sqlite)")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help=_WORKERS_HELP)] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help=_SCHEDULER_HELP)] = None,
    in_process: Annotated[bool, typer.Option("--in-process", help=_IN_PROCESS_HELP)] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help=_PROGRESS_HELP)] = True,
    oversubscribe: Annotated[bool, typer.Option("--oversubscribe", help=_OVERSUBSCRIBE_HELP)] = False,
    size: Annotated[str, typer.Option("--size", help=_SIZE_HELP)] = "default",
) -> None:
    """Reproduce a figure or study: run it, write OUT/NAME.csv and OUT/NAME.png, print a summary.

    The paper's figures run as Dask sweeps (--workers, --scheduler); the network studies run in this
    process. Reruns resume from the store: finished trials are never recomputed.
    """
    from flatminima.experiments.reproductions import REPRODUCTIONS

    if list_:
        for key, reproduction in REPRODUCTIONS.items():
            typer.echo(f"{key:<19} {reproduction.summary}")
        return
    if name is None:
        raise ConfigurationError(f"give a reproduction name or --list; valid: {', '.join(REPRODUCTIONS)}")
    from flatminima.experiments.executors import check_scheduler_address, check_workers
    from flatminima.experiments.reproductions import get_reproduction
    from flatminima.experiments.reproductions_beyond import check_size
    from flatminima.experiments.runner import check_executor_options, check_outputs
    from flatminima.experiments.runner import reproduce as run_reproduction

    reproduction = get_reproduction(name)
    check_executor_options(reproduction, workers=workers, scheduler=scheduler)
    check_workers(workers, oversubscribe=oversubscribe)
    if scheduler is not None:
        check_scheduler_address(scheduler)
    check_size(size)
    stem = name if size == "default" else f"{name}-{size}"
    check_outputs(name, out, store, stem=stem)  # before the first trial, not after the whole run
    _RUNNING.store = store if store is not None else out / "flatminima.sqlite"
    executor = _executor(workers, scheduler, in_process, oversubscribe) if (in_process or scheduler) else None
    try:
        outcome = run_reproduction(
            name,
            quick=quick,
            out_dir=out,
            store_path=store,
            workers=workers,
            executor=executor,
            progress=progress,
            oversubscribe=oversubscribe,
            size=size,
        )
    finally:
        if executor is not None:
            executor.close()
    for result in outcome.sweeps:
        typer.echo(
            f"sweep {result.name}: {result.total} trials, {result.skipped} already stored, "
            f"{result.completed} run ({result.failed} failed) in {result.wall_time:.1f} s"
        )
    _print_table(f"{name}{' (quick)' if quick else ''}", outcome.table)
    typer.echo(f"wrote {outcome.csv} and {outcome.figure}; store: {outcome.store}")


@app.command()
def plot(
    store: Annotated[
        Path, typer.Argument(metavar="STORE", help="a SQLite store written by `sweep` or `reproduce`")
    ],
    out: Annotated[Path, typer.Option("--out", help="output folder (one PNG per sweep)")] = Path("figures"),
) -> None:
    """Draw every sweep of a store (heat maps or line plots, by each sweep's figure hints)."""
    from flatminima.experiments.runner import plot_store

    paths = plot_store(store, out)
    for path in paths:
        typer.echo(f"wrote {path}")
    if not paths:
        typer.echo("nothing to draw: the store holds no sweep with a grid and trials")


@app.command()
def export(
    store: Annotated[
        Path, typer.Argument(metavar="STORE", help="a SQLite store written by `sweep` or `reproduce`")
    ],
    out: Annotated[Path, typer.Option("--out", help="the output file: .csv or .parquet")],
    sweep_name: Annotated[str | None, typer.Option("--sweep", help="export only this sweep")] = None,
) -> None:
    """Export a store to CSV or Parquet: one row per trial (parameters, metrics, status, error, host, ...)."""
    from flatminima.experiments.runner import export_store

    path, rows = export_store(store, out, sweep=sweep_name)
    typer.echo(f"wrote {rows} rows to {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning library and usage errors into one line on stderr and exit 2."""
    try:
        try:
            code = app(args=argv, standalone_mode=False, prog_name="flatminima")
        except KeyboardInterrupt:  # outside the command (typer turns one inside into exit code 130)
            code = 130
        if code == 130:
            typer.echo(f"flatminima: {_interrupted_line()}", err=True)
            return 130
    except KeyboardInterrupt:  # a second Ctrl-C while the line above is written
        return 130
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        typer.echo("flatminima: aborted", err=True)
        return 130
    except FlatminimaError as error:
        typer.echo(f"flatminima: error: {error}", err=True)
        return 2
    except MemoryError:
        typer.echo("flatminima: error: out of memory; reduce the problem sizes", err=True)
        return 2
    except RuntimeError as error:
        if "can't allocate memory" not in str(error) and "out of memory" not in str(error).lower():
            raise
        typer.echo(
            f"flatminima: error: out of memory ({_allocation(str(error))}); reduce the sizes", err=True
        )
        return 2
    except typer.TyperException as error:  # click's usage errors (vendored by typer)
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        if type(error).__name__ == "NoArgsIsHelpError":  # bare `flatminima`: show the help as is
            typer.echo(message)
            return 0
        first_line = " ".join(message.split())
        typer.echo(f"flatminima: error: {first_line}", err=True)
        return 2
    return 0


def _allocation(message: str) -> str:
    """``tried to allocate N bytes`` from torch's allocator message, in GiB."""
    import re

    found = re.search(r"allocate (\d+) bytes", message)
    return f"tried to allocate {int(found.group(1)) / 2**30:.3g} GiB" if found else "allocation failed"


def run() -> None:
    """Console-script entry point (``flatminima``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
