"""Figure 3-4 reproductions end to end: wall time, trials lost to a solver limit, per-trial solve times.

Runs ``flatminima reproduce NAME`` (quick or full grid) into a fresh folder and reads its CSV back:

* wall time of the whole reproduction (the Dask sweep, the figure and the table);
* trials that failed, split into *singular D* (completion masks with an empty row or column: the flat
  relaxation does not exist there, and the figure says how many) and *lost to the solver* (anything
  else: an iteration or time limit, a stalled certificate), which must be 0;
* the distribution of the per-trial solve time (median, 90th and 99th percentiles, maximum).

Run as a script (not part of the test suite):

    .venv/bin/python benchmarks/bench_reproductions.py --quick fig3-sensing fig3-completion
    .venv/bin/python benchmarks/bench_reproductions.py fig3-completion          # the full grid
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas

FIGURES = ("fig3-sensing", "fig3-bilinear", "fig3-completion", "fig3-quadratic", "fig4-regularity")


def summarize(frame: pandas.DataFrame) -> dict[str, object]:
    """Counts of failed, singular-D and lost trials, and solve-time quantiles, of one reproduction's CSV."""
    failed = frame[frame["status"] == "failed"]
    messages = failed["error_message"].fillna("").astype(str) if "error_message" in failed else None
    if messages is None:
        messages = pandas.Series([], dtype=str)
    singular = messages.str.contains("SingularRescalingError")
    times = frame["solve_time"].dropna() if "solve_time" in frame else pandas.Series([], dtype=float)
    return {
        "trials": len(frame),
        "failed": len(failed),
        "singular_D": int(singular.sum()),
        "lost_to_solver": int((~singular).sum()),
        "lost_messages": list(messages[~singular])[:5],
        "solve_time_quantiles": {q: float(times.quantile(q)) for q in (0.5, 0.9, 0.99, 1.0)}
        if len(times)
        else {},
    }


def run(name: str, quick: bool, workers: int | None, out: str | None = None) -> dict[str, object]:
    """Run one reproduction in ``out`` (default: a temporary folder) and summarize its CSV files."""
    with tempfile.TemporaryDirectory() as temporary:
        folder = str(Path(out) / name) if out else temporary
        command = [
            sys.executable,
            "-m",
            "flatminima.cli",
            "reproduce",
            name,
            "--out",
            folder,
            "--no-progress",
        ]
        command += ["--quick"] if quick else []
        command += ["--workers", str(workers)] if workers else []
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        frames = [pandas.read_csv(path) for path in sorted(Path(folder).glob("*.csv"))]
        frame = pandas.concat(frames, ignore_index=True) if frames else pandas.DataFrame()
    return {"name": name, "grid": "quick" if quick else "full", "wall_s": wall, **summarize(frame)}


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(FIGURES))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=None, help="keep each reproduction's CSV, figure and store here")
    args = parser.parse_args()
    for name in args.names:
        row = run(name, args.quick, args.workers, args.out)
        quantiles = row.pop("solve_time_quantiles")
        messages = row.pop("lost_messages")
        print(
            " ".join(
                f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}"
                for key, value in row.items()
            )
        )
        if quantiles:
            print(
                "  solve time s: "
                + ", ".join(f"q{int(100 * q)}={value:.3f}" for q, value in quantiles.items())
            )
        for message in messages:
            print(f"  lost: {str(message)[:240]}")


if __name__ == "__main__":
    main()
