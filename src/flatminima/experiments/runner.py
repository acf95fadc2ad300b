"""The public operations behind the CLI: reproduce a named experiment, plot a store, export a store.

``reproduce`` runs a reproduction's sweeps into a store (resuming whatever is already there), then writes
``DIR/NAME.csv`` (one row per trial and method) and ``DIR/NAME.png`` from the store, and returns the
summary table. ``plot_store`` draws one figure per sweep of any store; ``export_store`` writes a store
to CSV or Parquet.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flatminima.errors import ConfigurationError
from flatminima.experiments import figures
from flatminima.experiments.executors import make_executor
from flatminima.experiments.reproduction import Reproduction, Table
from flatminima.experiments.reproductions import get_reproduction, reproduction_specs
from flatminima.experiments.reproductions_beyond import check_size
from flatminima.experiments.store import Store
from flatminima.experiments.study import Study
from flatminima.experiments.sweep import SweepResult, count_pending, run_sweep

if TYPE_CHECKING:
    import pandas


@dataclasses.dataclass(frozen=True)
class ReproductionOutcome:
    """What :func:`reproduce` wrote and measured."""

    name: str
    csv: Path
    figure: Path
    store: Path
    table: Table
    sweeps: tuple[SweepResult, ...]


def _output_dir(out_dir: str | Path) -> Path:
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(
            f"--out {str(path)!r}: cannot create the folder ({error.strerror or error})"
        ) from None
    return path


def check_output_file(path: Path, option: str) -> None:
    """Refuse an output file that is a directory or cannot be written (before any work is done).

    Raises:
        ConfigurationError: naming the option and the path.
    """
    if path.is_dir():
        raise ConfigurationError(f"{option} {str(path)!r}: is a directory, need a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigurationError(f"{option} {str(path)!r}: the file is not writable")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:  # the first existing ancestor gets the folder
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigurationError(f"{option} {str(path)!r}: cannot write in {str(parent)!r}")


def check_outputs(
    name: str, out_dir: str | Path, store_path: str | Path | None = None, *, stem: str | None = None
) -> None:
    """Check every file ``reproduce(name)`` will write (OUT/STEM.csv, .png, _transitions.csv, the store).

    ``stem``: the files' name (default ``name``; ``NAME-large`` for a large run).

    Raises:
        ConfigurationError: unknown name, or an output path that is a directory or not writable.
    """
    get_reproduction(name)
    stem = name if stem is None else stem
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {str(out)!r}: exists and is not a folder")
    for suffix in (".csv", ".png", "_transitions.csv"):
        check_output_file(out / f"{stem}{suffix}", "--out")
    check_output_file(Path(store_path) if store_path is not None else out / "flatminima.sqlite", "--store")


def reproduce(
    name: str,
    *,
    quick: bool = False,
    out_dir: str | Path = "results",
    store_path: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    executor: Any = None,
    progress: bool = True,
    oversubscribe: bool = False,
    size: str = "default",
) -> ReproductionOutcome:
    """Run (or resume) the reproduction ``name`` and write its CSV, figure and summary.

    Args:
        name: a key of :data:`flatminima.experiments.reproductions.REPRODUCTIONS`.
        quick: the small grid (<= 2 minutes on 2 cores).
        out_dir: output folder (created).
        store_path: the SQLite store (default ``out_dir/flatminima.sqlite``).
        workers: local Dask worker processes (default: the CPU count).
        scheduler: the address of an existing Dask scheduler instead of a local cluster.
        executor: an executor object instead (e.g. ``InProcessExecutor()``).
        progress: draw progress bars on stderr.
        oversubscribe: allow more local workers than 4 per CPU.
        size: ``"default"`` or ``"large"`` (Figure 3: dense sensing to d = 100, bilinear and completion to
            d = 1000, quadratic network to d = 200); a large run writes ``NAME-large.csv`` / ``.png``.

    Network studies (:class:`~flatminima.experiments.study.Study`) run in this process with one torch
    thread (``workers``, ``scheduler`` and ``executor`` do not apply); their trials, if any, go to the
    same store.

    Returns:
        A :class:`ReproductionOutcome`.

    Raises:
        ConfigurationError: unknown name, unwritable output or store, bad executor options.
    """
    reproduction = get_reproduction(name)
    check_executor_options(reproduction, workers=workers, scheduler=scheduler)
    check_size(size)
    if size != "default" and isinstance(reproduction, Study):
        raise ConfigurationError(f"--size {size}: {name!r} is a network study; it has one size")
    stem = name if size == "default" else f"{name}-{size}"
    check_outputs(name, out_dir, store_path, stem=stem)
    out = _output_dir(out_dir)
    store_file = Path(store_path) if store_path is not None else out / "flatminima.sqlite"
    if isinstance(reproduction, Study):  # a network study: it trains and measures itself
        with Store(store_file) as store:
            output = reproduction.execute(quick=quick, out_dir=out, store=store, progress=progress)
        csv = out / f"{name}.csv"
        output.frame.to_csv(csv, index=False)
        return ReproductionOutcome(name, csv, output.figure, store_file, output.table, output.sweeps)
    specs = reproduction_specs(reproduction, quick, size)
    results = []
    with Store(store_file) as store:
        pending = sum(count_pending(spec, store) for spec in specs)
        owned = executor is None and pending > 0
        if owned:
            executor = make_executor(workers=workers, scheduler=scheduler, oversubscribe=oversubscribe)
        try:
            for spec in specs:
                results.append(run_sweep(spec, store, executor=executor, progress=progress))
        finally:
            if owned:
                executor.close()
        frames = {spec.name: store.dataframe(spec.name) for spec in specs}
    csv = out / f"{stem}.csv"
    _concat(frames).to_csv(csv, index=False)
    png = reproduction.draw(frames, specs, out / f"{stem}.png")
    return ReproductionOutcome(
        name, csv, png, store_file, reproduction.summarize(frames, specs), tuple(results)
    )


def check_executor_options(
    reproduction: Reproduction | Study, *, workers: int | None, scheduler: str | None
) -> None:
    """Refuse --workers / --scheduler for a network study (it runs in this process, one torch thread).

    Raises:
        ConfigurationError: if ``reproduction`` is a study and either option is given.
    """
    if isinstance(reproduction, Study) and (workers is not None or scheduler is not None):
        option = "--workers" if workers is not None else "--scheduler"
        raise ConfigurationError(
            f"{option}: {reproduction.name!r} is a network study that runs in this process (no Dask); "
            f"drop {option}"
        )


def _concat(frames: Mapping[str, pandas.DataFrame]) -> pandas.DataFrame:
    import pandas

    present = [f for f in frames.values() if len(f)]
    return pandas.concat(present, ignore_index=True) if present else pandas.DataFrame()


def draw_sweep(frame: pandas.DataFrame, spec: Mapping[str, Any], path: str | Path) -> Path | None:
    """Draw one stored sweep by its ``figure`` hints (None when it has no grid to plot against)."""
    grid = list(spec.get("grid", {}))
    figure = dict(spec.get("figure", {}))
    if not grid or frame.empty:
        return None
    x = figure.get("x", grid[0])
    y = figure.get("y", grid[1] if len(grid) > 1 else None)
    kind = figure.get("kind", "success")
    title = spec.get("description") or spec["name"]
    caption = figures.grid_caption(spec)
    if kind == "success" and y is not None:
        return figures.success_heatmaps(frame, x=x, y=y, title=title, caption=caption, path=path)
    if kind == "regularity" and y is not None:
        problem = str(spec["problem"]["name"])
        return figures.regularity_heatmaps(
            {problem: frame}, x=x, ys={problem: y}, title=title, caption=caption, path=path
        )
    panels = [("success", "mean", "success frequency")]
    if kind == "hadamard":
        panels += [("nonzeros", "median", "median nonzeros"), ("error", "median", "median error")]
    elif kind == "deep" and "trace_ratio" in frame:
        panels += [("trace_ratio", "mean", "trace / closed form")]
    elif "error" in frame:
        panels += [("error", "median", "median error")]
    return figures.line_panels(
        frame, x=x, panels=panels, title=title, caption=caption, path=path, log_scale=("error",)
    )


def plot_store(store_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Draw every sweep of a store into ``out_dir`` (``<sweep name with / as __>.png``).

    The store is opened read-only (it may be another user's, in a read-only folder) and never modified.
    """
    with Store(store_path, read_only=True) as store:
        sweeps = {name: (store.sweep_spec(name), store.dataframe(name)) for name in store.sweeps()}
    out = _output_dir(out_dir)
    paths = []
    for name, (spec, frame) in sweeps.items():
        if spec is None:
            continue
        path = draw_sweep(frame, spec, out / f"{name.replace('/', '__')}.png")
        if path is not None:
            paths.append(path)
    return paths


def export_store(store_path: str | Path, out: str | Path, *, sweep: str | None = None) -> tuple[Path, int]:
    """Write the store's trials (one row each) to ``out``: ``.csv`` or ``.parquet`` (needs pyarrow).

    Returns:
        (path, number of rows).

    Raises:
        ConfigurationError: missing store, unknown suffix or sweep, unwritable file, no Parquet engine.
    """
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigurationError(f"--out {str(path)!r}: must end in .csv or .parquet")
    check_output_file(path, "--out")
    with Store(store_path, read_only=True) as store:
        if sweep is not None and sweep not in store.sweeps():
            raise ConfigurationError(
                f"--sweep {sweep!r}: not in the store; stored: {', '.join(store.sweeps()) or 'none'}"
            )
        frame = store.dataframe(sweep)
    try:
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            for column in frame.columns[frame.dtypes.map(lambda t: t.kind == "O")]:  # one type per column
                if frame[column].map(type).nunique(dropna=True) > 1:
                    frame[column] = frame[column].map(lambda v: v if v is None else str(v))
            frame.to_parquet(path, index=False)
    except ImportError as error:
        raise ConfigurationError(f"Parquet export needs pyarrow: pip install pyarrow ({error})") from None
    except OSError as error:
        raise ConfigurationError(f"--out {str(path)!r}: cannot write ({error.strerror or error})") from None
    return path, len(frame)
