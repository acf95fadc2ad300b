"""The ``flatminima`` command line: a thin Typer shell over the public API.

Errors from the library (``FlatminimaError``) and bad command-line usage print one line on stderr and exit
with code 2, never a traceback.
"""

from __future__ import annotations

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


@app.callback()
def _root() -> None:
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


def _executor(workers: int | None, scheduler: str | None, in_process: bool) -> Any:
    from flatminima.experiments import make_executor

    return make_executor(workers=workers, scheduler=scheduler, in_process=in_process)


def _print_table(title: str, table: tuple[list[str], list[list[str]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    headers, rows = table
    out = Table(title=title, title_justify="left")
    for header in headers:
        out.add_column(header, overflow="fold")
    for row in rows:
        out.add_row(*row)
    Console(width=max(100, 14 * len(headers))).print(out)


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
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="draw a progress bar on stderr")
    ] = True,
) -> None:
    """Run a sweep (grid x draws x solvers) into a SQLite store; finished trials are skipped."""
    from flatminima.experiments import Store, load_spec, run_sweep
    from flatminima.experiments.reproduction import summarize_by_solver

    parsed = load_spec(spec)
    with Store(store) as database:
        executor = None
        if database.finished_keys({t.key for t in parsed.trials()}) != {t.key for t in parsed.trials()}:
            executor = _executor(workers, scheduler, in_process)
        try:
            result = run_sweep(
                parsed, database, executor=executor, progress=progress, retry_failed=retry_failed
            )
        finally:
            if executor is not None:
                executor.close()
        frame = database.dataframe(parsed.name)
    typer.echo(
        f"sweep {result.name}: {result.total} trials, {result.skipped} already stored, "
        f"{result.completed} run ({result.failed} failed) in {result.wall_time:.1f} s "
        f"({result.trials_per_second:.2f} trials/s, "
        f"{result.executor}); store: {store}"
    )
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
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="draw progress bars on stderr")
    ] = True,
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
    from flatminima.experiments.reproductions import get_reproduction
    from flatminima.experiments.runner import check_executor_options
    from flatminima.experiments.runner import reproduce as run_reproduction

    check_executor_options(get_reproduction(name), workers=workers, scheduler=scheduler)
    executor = _executor(workers, scheduler, in_process) if (in_process or scheduler) else None
    try:
        outcome = run_reproduction(
            name,
            quick=quick,
            out_dir=out,
            store_path=store,
            workers=workers,
            executor=executor,
            progress=progress,
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
        app(args=argv, standalone_mode=False, prog_name="flatminima")
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        typer.echo("flatminima: aborted", err=True)
        return 130
    except FlatminimaError as error:
        typer.echo(f"flatminima: error: {error}", err=True)
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


def run() -> None:
    """Console-script entry point (``flatminima``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
