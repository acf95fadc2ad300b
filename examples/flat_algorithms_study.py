"""Issue 5: a study of which flat-minimum-seeking algorithms actually reach the flat solution.

Gaussian matrix sensing (d = 30, rank 2, width k = d, m = 150..450 across the recovery threshold) and a
quadratic network (d = 15, 2 positive and 1 negative teacher units, m = 60): GD, heavy-ball GD, large-step
GD, SGD, SAM (full batch and minibatch), adaptive SAM, Entropy-SGD, label-noise SGD, SWA, replicated SGD,
GD under a large-rate burst and a cyclic schedule, and the explicit trace penalties (closed form and
Hutchinson) run from the same small and large initializations; each
final point is compared with the flat solution (P_flat) and the norm-minimal one (NNM) from the certified
convex solvers.

Run::

    python examples/flat_algorithms_study.py            # default size (about 10 minutes on 2 cores)
    python examples/flat_algorithms_study.py --quick    # seconds

Outputs (in ``flat_algorithms_study_output/`` unless ``--output`` is given): ``flat_algorithms_study.csv``,
``flat_algorithms_trajectories.csv`` and ``flat_algorithms_study.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flatminima.solvers.nonconvex.study import StudyOutput, run_flat_algorithms_study, summary_table


def main(quick: bool = True, output_dir: str | Path | None = None, verbose: bool = False) -> StudyOutput:
    """Run the study (``quick``: the tiny configuration), print the summary tables, return the output."""
    out = Path(output_dir) if output_dir is not None else Path("flat_algorithms_study_output")
    result = run_flat_algorithms_study(out, quick=quick, progress=print if verbose else None)
    for setting in ("sensing", "quadratic_network"):
        for init in ("small", "large"):
            print(
                f"\n{setting}, init '{init}' (str ratio = scaled trace / flat; rec. err = ||X - M|| / ||M||):"
            )
            print(summary_table(result.rows, setting=setting, init=init))
    paths = f"{result.table_path}, {result.trajectories_path}, {result.figure_path}"
    print(f"\nwrote {paths} in {result.wall_time:.0f} s")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny configuration (seconds)")
    parser.add_argument("--output", default=None, help="output folder")
    args = parser.parse_args()
    main(quick=args.quick, output_dir=args.output, verbose=True)
