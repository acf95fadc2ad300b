"""Named reproductions of the paper's experiments: sweep specs (quick and full), figure, summary table.

* ``fig3-sensing``: Gaussian sensing, rank 2, success of P_flat vs NNM. Full: d in {10, 20, 30, 40, 50},
  m/d in {2, 4, ..., 16}; quick: d in {8, 12, 16}, m/d in {2, 4, ..., 12}.
* ``fig3-bilinear``: bilinear sensing A_i = a_i b_i^T, rank 2; the grids of fig3-sensing.
* ``fig3-completion``: Bernoulli(p) completion, rank 2. Full: d in {10, ..., 50}, p in {0.1, ..., 1.0};
  quick: d in {8, 12, 16}, p in {0.2, 0.4, ..., 1.0}.
* ``fig3-quadratic``: quadratic network x^T M x, M = U1 U1^T - U2 U2^T with (r1, r2) = (2, 1). Full:
  d in {10, 15, 20, 25}, m/d in {2, 4, ..., 12}; quick: d in {6, 8, 10}.
* ``fig4-regularity``: log10 norm gap and balancedness of the flat factors (k = d) for sensing, bilinear
  and completion (5 draws per cell, every other m/d; quick: 3 draws on the quick grids).
* ``depth-hadamard`` and ``depth-deep``: the question of depth, in
  :mod:`flatminima.experiments.reproductions_depth`.
* ``completion-nonuniform`` and ``noisy-sensing``: beyond the paper, in
  :mod:`flatminima.experiments.reproductions_beyond`, which also holds the ``size="large"`` grids of the
  Figure 3 reproductions (:func:`reproduction_specs`).
* the network studies of :mod:`flatminima.experiments.studies` (trained on digits).

Per cell one ground truth M (rank 2, ||M||_F = 1; rank 3 for the network) and 10 fresh measurement draws
(Section 8 of Ding et al.); success iff the solve is certified and ||X - M||_F < 1e-6. The paper's exact
grids are not published in a form we have: the grids above are our choice (DESIGN 5) and every caption
states them.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Figures 3-4).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flatminima.errors import ConfigurationError
from flatminima.experiments import figures, transitions
from flatminima.experiments.reproduction import (
    Frames,
    Reproduction,
    Table,
    bound_ratio_text,
    reproduction_spec,
    single_frame,
    summarize_transitions,
    sweep_name,
)
from flatminima.experiments.reproductions_beyond import (
    BEYOND_REPRODUCTIONS,
    LARGE_GRIDS,
    check_size,
    large_grid,
)
from flatminima.experiments.reproductions_depth import DEPTH_REPRODUCTIONS
from flatminima.experiments.spec import SweepSpec
from flatminima.experiments.study import Study

# ---- Figure 3: success heat maps ------------------------------------------------------------------
_DIMS = {True: [8, 12, 16], False: [10, 20, 30, 40, 50]}
_RATIOS = {True: [2, 4, 6, 8, 10, 12], False: [2, 4, 6, 8, 10, 12, 14, 16]}
_FIG3 = {
    "fig3-sensing": (
        "Gaussian matrix sensing (Fig. 3a)",
        {"name": "matrix_sensing", "rank": 2},
        "measurements_per_dim",
    ),
    "fig3-bilinear": (
        "bilinear sensing (Fig. 3b)",
        {"name": "bilinear_sensing", "rank": 2},
        "measurements_per_dim",
    ),
    "fig3-completion": (
        "matrix completion (Fig. 3c)",
        {"name": "matrix_completion", "rank": 2},
        "probability",
    ),
    "fig3-quadratic": (
        "quadratic network (Fig. 3d)",
        {"name": "quadratic_network", "num_positive": 2, "num_negative": 1},
        "measurements_per_dim",
    ),
}


def _fig3_grid(name: str, quick: bool) -> dict[str, list[Any]]:
    if name == "fig3-completion":
        probabilities = [0.2, 0.4, 0.6, 0.8, 1.0] if quick else [round(0.1 * i, 1) for i in range(1, 11)]
        return {"dim": _DIMS[quick], "probability": probabilities}
    if name == "fig3-quadratic":
        return {
            "dim": [6, 8, 10] if quick else [10, 15, 20, 25],
            "measurements_per_dim": [2, 4, 6, 8, 10, 12],
        }
    return {"dim": _DIMS[quick], "measurements_per_dim": _RATIOS[quick]}


def _fig3_specs(name: str) -> Callable[..., list[SweepSpec]]:
    title, problem, y = _FIG3[name]

    def build(quick: bool, size: str = "default") -> list[SweepSpec]:
        if check_size(size) == "large":  # the grids of reproductions_beyond.LARGE_GRIDS
            grid, draws, options = large_grid(name, quick)
            solvers: list[Any] = [{"name": s, "options": options} for s in ("flat", "nuclear_norm")]
            return [
                reproduction_spec(
                    sweep_name(name, quick, "large"),
                    problem,
                    grid,
                    solvers,
                    draws=draws,
                    description=f"{title}, large grid",
                    figure={"kind": "success", "x": "dim", "y": y},
                )
            ]
        solvers = ["flat", "nuclear_norm"]
        return [
            reproduction_spec(
                sweep_name(name, quick),
                problem,
                _fig3_grid(name, quick),
                solvers,
                draws=10,
                description=title,
                figure={"kind": "success", "x": "dim", "y": y},
            )
        ]

    return build


def _draw_success(frames: Frames, specs: list[SweepSpec], path: Path) -> Path:
    spec = specs[0]
    x, y = spec.figure["x"], spec.figure["y"]
    frame = single_frame(frames)
    failed = int((frame["status"] == "failed").sum()) if len(frame) else 0
    extra = (
        f"{failed} of {len(frame)} trials failed (no certificate or singular D1, D2) and count as not "
        "recovered."
    )
    # -- transitions with intervals and theory (flatminima.experiments.transitions); NAME_transitions.csv
    labels = [s.label for s in spec.solvers]
    setting = {"problem": spec.problem, "fixed": spec.fixed, "x": x, "y": y}
    fits = transitions.reproduction_transitions(frame, labels=labels, **setting) if len(frame) else None
    curves, marks, note = transitions.heatmap_overlays(fits, **setting) if fits is not None else ({}, {}, "")
    if fits is not None:
        fits.to_csv(path.with_name(f"{path.stem}_transitions.csv"), index=False)
    return figures.success_heatmaps(
        frame,
        x=x,
        y=y,
        title=f"{spec.description}: success frequency, flat vs nuclear norm",
        caption=figures.grid_caption(spec.to_dict(), f"{extra} {note}"),
        path=path,
        order=labels,
        curves=curves,
        marks=marks,
    )


def summarize_success(frames: Frames, specs: list[SweepSpec]) -> Table:
    """Per d: each solver's m50 (p50) with its 95 % interval, overlap, theory (``summarize_transitions``)."""
    return summarize_transitions(frames, specs[0])


# ---- Figure 4: regularity -------------------------------------------------------------------------
def _fig4_specs(quick: bool) -> list[SweepSpec]:
    out = []
    for part in ("sensing", "bilinear", "completion"):
        _, problem, y = _FIG3[f"fig3-{part}"]
        grid = _fig3_grid(f"fig3-{part}", quick)
        if not quick:  # the regularity metrics are smooth: a coarser y-grid, fewer draws
            grid[y] = grid[y][::2] if part != "completion" else [0.2, 0.4, 0.6, 0.8, 1.0]
        out.append(
            reproduction_spec(
                sweep_name("fig4-regularity", quick, part),
                problem,
                grid,
                ["flat_regularity"],
                draws=3 if quick else 5,
                description=f"regularity of flat solutions, {part}",
                figure={"kind": "regularity", "x": "dim", "y": y},
            )
        )
    return out


def _draw_regularity(frames: Frames, specs: list[SweepSpec], path: Path) -> Path:
    parts = {spec.name.split("/")[1]: frames.get(spec.name) for spec in specs}
    ys = {spec.name.split("/")[1]: spec.figure["y"] for spec in specs}
    import pandas

    data = {k: (v if v is not None else pandas.DataFrame()) for k, v in parts.items()}
    caption = " | ".join(figures.grid_caption(spec.to_dict()) for spec in specs)
    caption += (
        " Norm gap = ||L_f||^2 + ||R_f||^2 - 2 ||X_nuc||_* and balancedness = ||L_f^T L_f - R_f^T R_f||_F "
        "with (L_f, R_f) from the full SVD of the flat solution (k = d); blank cells: singular D1, D2 or no "
        "certified solve."
    )
    return figures.regularity_heatmaps(
        data, x="dim", ys=ys, title="Regularity of flat solutions (Fig. 4)", caption=caption, path=path
    )


def _summarize_regularity(frames: Frames, specs: list[SweepSpec]) -> Table:
    import numpy

    headers = [
        "problem",
        "certified",
        "recovered",
        "median log10 gap",
        "median log10 balancedness",
        "max gap / bound",
        "max balancedness_* / bound",
    ]
    rows = []
    for spec in specs:
        frame = frames.get(spec.name)
        if frame is None or frame.empty or "norm_gap" not in frame:
            rows.append([spec.name, "0", "0", "-", "-", "-", "-"])
            continue
        ok = frame[frame["status"] == "ok"]
        rec = ok[ok["success"]]
        rows.append(
            [
                spec.name.split("/")[1],
                str(len(ok)),
                str(len(rec)),
                f"{numpy.log10(rec['norm_gap'].abs().clip(lower=1e-300)).median():.2f}" if len(rec) else "-",
                f"{numpy.log10(rec['balancedness'].clip(lower=1e-300)).median():.2f}" if len(rec) else "-",
                bound_ratio_text(ok["factor_norm"], ok["bound_factor_norm"]),
                bound_ratio_text(ok["balancedness_nuclear"], ok["bound_balancedness"]),
            ]
        )
    return headers, rows


REPRODUCTIONS: dict[str, Reproduction | Study] = {}
for _name, _entry in _FIG3.items():
    REPRODUCTIONS[_name] = Reproduction(
        _name,
        f"{_entry[0]}: success heat maps, flat vs nuclear norm",
        _fig3_specs(_name),
        _draw_success,
        summarize_success,
    )
REPRODUCTIONS["fig4-regularity"] = Reproduction(
    "fig4-regularity",
    "log10 norm gap and balancedness of flat factors (k = d): sensing, bilinear, completion",
    _fig4_specs,
    _draw_regularity,
    _summarize_regularity,
)
REPRODUCTIONS.update(DEPTH_REPRODUCTIONS)
REPRODUCTIONS.update(BEYOND_REPRODUCTIONS)


# Network studies: the second kind of reproduction (see flatminima.experiments.study).
from flatminima.experiments.studies import STUDIES  # noqa: E402

REPRODUCTIONS.update(STUDIES)


def reproduction_specs(reproduction: Reproduction, quick: bool, size: str = "default") -> list[SweepSpec]:
    """The sweeps of ``reproduction`` at ``size`` (what ``reproduce --size`` runs).

    ``"default"`` is ``reproduction.specs(quick)``; ``"large"`` the Figure 3 grids of
    :data:`~flatminima.experiments.reproductions_beyond.LARGE_GRIDS` (sweeps ``NAME/large[/quick]``).

    Raises:
        ConfigurationError: an unknown size, or ``"large"`` for a reproduction without a large grid.
    """
    if check_size(size) == "default":
        return reproduction.specs(quick)
    if reproduction.name not in LARGE_GRIDS:
        large_grid(reproduction.name, quick)  # raises, naming the reproductions that have one
    build = typing.cast(Callable[..., list[SweepSpec]], reproduction.specs)
    return build(quick, size=size)


def get_reproduction(name: str) -> Reproduction | Study:
    """The reproduction ``name``.

    Raises:
        ConfigurationError: for an unknown name (listing the valid ones).
    """
    if name not in REPRODUCTIONS:
        raise ConfigurationError(f"unknown reproduction {name!r}; valid: {', '.join(REPRODUCTIONS)}")
    return REPRODUCTIONS[name]
