"""The ``flatminima`` command line: a thin Typer shell over the public API.

Errors from the library (``FlatminimaError``) and bad command-line usage print one line on stderr and exit
with code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from flatminima.errors import FlatminimaError

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
