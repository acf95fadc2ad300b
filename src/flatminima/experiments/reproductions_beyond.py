"""Reproductions beyond the paper: non-uniform completion, noisy sensing, and large grids for Figure 3.

* ``completion-nonuniform`` (where flatness may help): matrix completion under power-law sampling,
  entry (i, j) observed with probability min(1, c i^{-a} j^{-a}) of mean p
  (:mod:`flatminima.problems.nonuniform`), one sweep per skew a. P_flat is then the weighted trace norm
  with the empirical marginals (Srebro & Salakhutdinov 2010; Foygel et al. 2011), NNM the plain one.
  Success and median ||X - M||_F against the expected number of observations p d^2. Quick: d = 20,
  a in {0, 0.5, 1}, p in {0.3, ..., 0.9}, 8 draws; full: d = 50, a in {0, 0.5, 1, 1.5}, 9 values of p,
  10 draws. A flat solve with an unobserved row or column (singular D1, D2) fails and is counted.
* ``noisy-sensing``: Gaussian sensing, b = A(M) + sigma e, both relaxations with the ball constraint
  ||B(Z) - b||_2 <= eps, eps = sigma sqrt(m + 2 sqrt(2 m)) (mean plus two standard deviations of
  ||sigma e||^2 ~ sigma^2 chi^2_m, the choice of Candès & Plan 2010; it uses sigma, not the draw's noise).
  Median error against sigma beside the stable-recovery bound C eps / sqrt(m) (Candès & Plan 2011; the
  noisy recovery of Ding et al. 2024, Appendix A). Quick: d = 20, m/d in {8, 12};
  full: d = 30, m/d in {6, 8, 12, 16} (m < d^2 throughout); sigma in {1e-4, ..., 1e-1}; 10 draws.
* :data:`LARGE_GRIDS`: the ``size="large"`` grids of the Figure 3 reproductions (dense sensing to
  d = 100, bilinear sensing and completion to d = 1000 through the factor search, the quadratic network
  to d = 200); :mod:`flatminima.experiments.reproductions` builds them.

Each trial uses one ground truth per draw (``truth = "draw"``), so that a median averages over truths.
The methods are those of :mod:`flatminima.experiments.beyond_methods` (the registered ``flat`` and
``nuclear_norm`` solves plus mask counts or the noise radius), named ``"module:function"`` so that every
Dask worker imports them.

The bound drawn beside the noisy errors: with A / sqrt(m) satisfying RIP with delta = delta_4r <
sqrt(2) - 1, ||X - M||_F <= C1 eps / sqrt(m), C1 = 4 sqrt(1 + delta) / (1 - (1 + sqrt 2) delta)
(Candès 2008 for vectors, carried to matrices by Candès & Plan 2011; the paper's Appendix A is not
available to us). delta is not known for these m, so the figure draws C1 at delta -> 0 (= 4, a lower
estimate of the theory's constant) and the constant fitted to the data (the largest error sqrt(m) / eps);
for P_flat the RIP constants of B = A(D1^{-1} . D2^{-1}) also carry kappa(D1, D2)^2 (Lemma 4.6).

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Section 5, Appendix A).
    N. Srebro, R. Salakhutdinov. Collaborative filtering in a non-uniform world: learning with the
    weighted trace norm. NeurIPS 2010.
    R. Foygel, R. Salakhutdinov, O. Shamir, N. Srebro. Learning with the weighted trace-norm under
    arbitrary sampling distributions. NeurIPS 2011.
    E. Candès. The restricted isometry property and its implications for compressed sensing. C. R. Acad.
    Sci. Paris, Ser. I 346, 2008.
    E. Candès, Y. Plan. Matrix completion with noise. Proc. IEEE 98(6), 2010.
    E. Candès, Y. Plan. Tight oracle inequalities for low-rank matrix recovery from a minimal number of
    noisy random measurements. IEEE Trans. Inf. Theory 57(4), 2011.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flatminima.errors import ConfigurationError
from flatminima.experiments import figures
from flatminima.experiments.reproduction import Frames, Reproduction, Table, reproduction_spec, sweep_name
from flatminima.experiments.spec import SweepSpec

if TYPE_CHECKING:
    import pandas

_MODULE = "flatminima.experiments.beyond_methods"
#: the constant C1 = 4 sqrt(1 + delta) / (1 - (1 + sqrt 2) delta) of the stable-recovery bound at delta -> 0.
THEORY_CONSTANT = 4.0


def _solvers(kind: str, options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    return [
        {"name": f"{_MODULE}:{kind}_{relaxation}", "label": relaxation, "options": dict(options or {})}
        for relaxation in ("flat", "nuclear_norm")
    ]


def _ok(frame: pandas.DataFrame) -> pandas.DataFrame:
    return frame[frame["status"] == "ok"] if len(frame) else frame


def _solved(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Trials with a recovered X (a finite error): certified or not; singular D and crashes left out."""
    if frame.empty or "error" not in frame:
        return frame.iloc[0:0]
    return frame[frame["error"].notna() & frame["error"].map(lambda v: math.isfinite(float(v)))]


def _by_solver(spec: SweepSpec, frame: pandas.DataFrame) -> list[tuple[str, pandas.DataFrame]]:
    """(label, trials) per solver of ``spec`` in the spec's order (solvers without trials left out)."""
    groups = [(s.label, frame[frame["label"] == s.label]) for s in spec.solvers]
    return [(label, group) for label, group in groups if len(group)]


# ---- completion under power-law sampling -------------------------------------------------------------
def _nonuniform_specs(quick: bool) -> list[SweepSpec]:
    dim = 20 if quick else 50
    skews = [0.0, 0.5, 1.0] if quick else [0.0, 0.5, 1.0, 1.5]
    probabilities = [0.3, 0.45, 0.6, 0.75, 0.9] if quick else [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8]
    return [
        reproduction_spec(
            sweep_name("completion-nonuniform", quick, f"skew{skew:g}"),
            {"name": "matrix_completion", "rank": 2, "dim": dim, "row_skew": skew, "column_skew": skew},
            {"probability": probabilities},
            _solvers("completion"),
            draws=8 if quick else 10,
            truth="draw",
            description=f"completion under power-law sampling, skew a = b = {skew:g}",
            figure={"kind": "table", "x": "probability"},
        )
        for skew in skews
    ]


def _skew(spec: SweepSpec) -> float:
    return float(spec.fixed["row_skew"])


def _observations(spec: SweepSpec, frame: pandas.DataFrame) -> pandas.Series:
    """The expected number of observations p d^2 of each trial."""
    return frame["probability"] * float(spec.fixed["dim"]) ** 2


def _draw_nonuniform(frames: Frames, specs: list[SweepSpec], path: Path) -> Path:
    plt = figures._pyplot()
    fig, axes = plt.subplots(2, len(specs), figsize=(4.2 * len(specs) + 0.6, 7.6), squeeze=False)
    counts = []
    for column, spec in enumerate(specs):
        frame = frames.get(spec.name)
        top, bottom = axes[0][column], axes[1][column]
        top.set_title(f"skew a = b = {_skew(spec):g}", fontsize=10)
        if frame is None or frame.empty:
            continue
        frame = frame.assign(observations=_observations(spec, frame))
        for index, (label, group) in enumerate(_by_solver(spec, frame)):
            color = f"C{index}"
            success = group.groupby("observations")["success"].mean()
            top.plot(success.index, success.to_numpy(dtype=float), marker="o", color=color, label=str(label))
            solved = _solved(group)
            if len(solved):
                error = solved.groupby("observations")["error"].median()
                bottom.plot(
                    error.index, error.to_numpy(dtype=float), marker="o", color=color, label=str(label)
                )
            singular = int(group["singular"].eq(True).sum()) if "singular" in group else 0
            uncertified = int((group["status"] == "failed").sum()) - singular
            counts.append(f"a={_skew(spec):g} {label}: {singular} singular D, {uncertified} uncertified")
        top.set_ylim(-0.05, 1.05)
        top.set_ylabel("success frequency")
        bottom.set_yscale("log")
        bottom.set_ylabel("median ||X - M||_F")
        for ax in (top, bottom):
            ax.set_xlabel("expected observations p d^2")
            ax.grid(alpha=0.3)
        top.legend(fontsize=8)
    template = specs[0].to_dict()
    for key in ("row_skew", "column_skew"):
        template["problem"].pop(key, None)
    caption = (
        f"{figures.grid_caption(template)} Skews a = b in {{{', '.join(f'{_skew(s):g}' for s in specs)}}}: "
        "P_ij = min(1, c i^-a j^-b) with mean p. Failed trials count as not recovered: "
        + "; ".join(counts)
        + ". A singular D (an unobserved row or column) leaves P_flat undefined (no X, left out of the "
        "medians; NNM still solves); uncertified solves (KKT residual above 1e-9) enter the medians."
    )
    fig.subplots_adjust(wspace=0.4)
    fig.suptitle("Completion under power-law sampling: flat (weighted trace norm) vs nuclear norm")
    return figures._finish(fig, caption, path)


def _paired(frame: pandas.DataFrame, certified: bool = True) -> tuple[int, int]:
    """(draws where both methods have an X, of them those where flat's error is the lower).

    ``certified``: count only certified solves; otherwise every X with a finite error.
    """
    ok = _ok(frame) if certified else _solved(frame)
    if ok.empty:
        return 0, 0
    keys = [c for c in ("probability", "noise_std", "measurements_per_dim") if c in ok] + ["draw"]
    table = ok.pivot_table(index=keys, columns="label", values="error", aggfunc="first")
    if not {"flat", "nuclear_norm"} <= set(table.columns):
        return 0, 0
    both = table.dropna(subset=["flat", "nuclear_norm"])
    return len(both), int((both["flat"] < both["nuclear_norm"]).sum())


def _summarize_nonuniform(frames: Frames, specs: list[SweepSpec]) -> Table:
    """Per skew and solver: counts, success rate, smallest m at 50% success, median error per m."""
    spec0 = specs[0]
    dim = float(spec0.fixed["dim"])
    observations = [p * dim**2 for p in dict(spec0.grid)["probability"]]
    headers = ["skew", "solver", "trials", "singular D", "uncertified", "success", "m @50%"]
    headers += [f"median err @ m={m:g}" for m in observations] + ["flat < NNM (paired)"]
    rows = []
    for spec in specs:
        frame = frames.get(spec.name)
        if frame is None or frame.empty:
            continue
        frame = frame.assign(observations=_observations(spec, frame))
        pairs, wins = _paired(frame, certified=False)
        for label, group in _by_solver(spec, frame):
            singular = int(group["singular"].eq(True).sum()) if "singular" in group else 0
            rate = group.groupby("observations")["success"].mean()
            hits = [float(m) for m, s in rate.items() if s >= 0.5]
            solved = _solved(group)
            median = solved.groupby("observations")["error"].median() if len(solved) else {}
            rows.append(
                [
                    f"{_skew(spec):g}",
                    str(label),
                    str(len(group)),
                    str(singular),
                    str(int((group["status"] == "failed").sum()) - singular),
                    f"{group['success'].mean():.2f}",
                    f"{min(hits):g}" if hits else "-",
                    *[f"{median[m]:.2g}" if m in median else "-" for m in observations],
                    f"{wins}/{pairs}" if label == "flat" else "",
                ]
            )
    return headers, rows


# ---- noisy Gaussian sensing --------------------------------------------------------------------------
def _noisy_specs(quick: bool) -> list[SweepSpec]:
    return [
        reproduction_spec(
            sweep_name("noisy-sensing", quick),
            {"name": "matrix_sensing", "rank": 2, "dim": 20 if quick else 30},
            {
                "measurements_per_dim": [8, 12] if quick else [6, 8, 12, 16],
                "noise_std": [1e-4, 1e-3, 1e-2, 1e-1],
            },
            _solvers("noisy"),
            draws=10,
            truth="draw",
            description="noisy Gaussian sensing, ball-constrained relaxations",
            figure={"kind": "table", "x": "noise_std", "y": "measurements_per_dim"},
        )
    ]


def fitted_constant(frame: pandas.DataFrame) -> float:
    """The smallest C with error <= C eps / sqrt(m) on every certified trial of ``frame`` (nan if none)."""
    ok = _ok(frame)
    return float(ok["bound_ratio"].max()) if len(ok) and "bound_ratio" in ok else math.nan


def _statistical_dimension(spec: SweepSpec) -> float:
    """Statistical dimension of the nuclear norm's descent cone at the truth of ``spec`` (d x d, rank r)."""
    from flatminima.theory import nuclear_norm_statistical_dimension

    dim, rank = int(spec.fixed["dim"]), int(spec.fixed["rank"])
    return nuclear_norm_statistical_dimension(dim, dim, rank)


def _draw_noisy(frames: Frames, specs: list[SweepSpec], path: Path) -> Path:
    spec = specs[0]
    frame = frames.get(spec.name)
    ratios = list(dict(spec.grid)["measurements_per_dim"])
    delta = _statistical_dimension(spec)
    dim = float(spec.fixed["dim"])
    plt = figures._pyplot()
    fig, axes = plt.subplots(
        1, len(ratios), figsize=(4.2 * len(ratios) + 0.6, 4.8), squeeze=False, layout="constrained"
    )
    for column, (ax, ratio) in enumerate(zip(axes[0], ratios, strict=True)):
        below = ratio * dim < delta
        where = "below the transition" if below else "above the transition"
        ax.set_title(f"m / d = {ratio:g}: m / delta = {ratio * dim / delta:.2f}\n({where})", fontsize=10)
        ax.set_xlabel("noise level sigma")
        if column == 0:
            ax.set_ylabel("||X - M||_F")
        cell = None if frame is None or frame.empty else _ok(frame[frame["measurements_per_dim"] == ratio])
        if cell is None or cell.empty:
            continue
        for label, group in _by_solver(spec, cell):
            series = group.groupby("noise_std")["error"]
            median = series.median()
            line = ax.plot(median.index, median.to_numpy(dtype=float), marker="o", label=f"{label} (median)")
            ax.fill_between(
                median.index,
                series.min().to_numpy(dtype=float),
                series.max().to_numpy(dtype=float),
                alpha=0.15,
                color=line[0].get_color(),
            )
        unit = cell.groupby("noise_std")["bound_unit"].median()
        ax.plot(unit.index, THEORY_CONSTANT * unit, "k--", label=f"{THEORY_CONSTANT:g} eps/sqrt(m)")
        fitted = fitted_constant(cell)
        if math.isfinite(fitted) and not below:
            ax.plot(unit.index, fitted * unit, "k:", label=f"fitted {fitted:.2f} eps/sqrt(m)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    failed = 0 if frame is None or frame.empty else int((frame["status"] == "failed").sum())
    caption = (
        f"{figures.grid_caption(spec.to_dict())} eps = sigma sqrt(m + 2 sqrt(2m)) (mean + 2 sd of "
        "||noise||^2; not the draw's noise). Bands: min-max over draws. Dashed: 4 eps/sqrt(m), the "
        "constant of the stable-recovery bound ||X - M||_F <= C eps/sqrt(m) (Candès-Plan 2011) in the "
        "limit delta_4r -> 0 (the bound grows with delta, which is not known for these m, and for P_flat "
        "with kappa(D1, D2)). Dotted: the constant fitted per panel, the largest measured error sqrt(m)/eps "
        "of both methods, drawn only above the noiseless transition: delta = "
        f"{delta:.1f} is the statistical dimension of the nuclear norm's descent cone (Amelunxen et al. "
        "2014), below which even noiseless recovery fails and no stable-recovery bound holds. The success "
        f"rule does not apply here. {failed} trials failed (no certificate)."
    )
    fig.suptitle("Noisy Gaussian sensing: stable recovery of flat and norm-minimal solutions")
    return figures._finish(fig, caption, path)


def _summarize_noisy(frames: Frames, specs: list[SweepSpec]) -> Table:
    frame = frames.get(specs[0].name)
    noises = list(dict(specs[0].grid)["noise_std"])
    headers = ["m/d", "m/delta", "solver", "trials", "failed", *[f"median err @ sigma={s:g}" for s in noises]]
    headers += ["median C", "max C", "log-log slope", "flat < NNM (paired)"]
    rows: list[list[str]] = []
    if frame is None or frame.empty:
        return headers, rows
    import numpy

    delta = _statistical_dimension(specs[0])
    dim = float(specs[0].fixed["dim"])
    for ratio, cell in frame.groupby("measurements_per_dim", sort=True):
        pairs, wins = _paired(cell)
        for label, group in _by_solver(specs[0], cell):
            ok = _ok(group)
            median = ok.groupby("noise_std")["error"].median() if len(ok) else None
            errors = [f"{median[s]:.3g}" if median is not None and s in median else "-" for s in noises]
            slope = "-"
            if median is not None and len(median) >= 2:
                fit = numpy.polyfit(numpy.log10(median.index), numpy.log10(median.to_numpy()), 1)
                slope = f"{fit[0]:.2f}"
            rows.append(
                [
                    f"{ratio:g}",
                    f"{float(ratio) * dim / delta:.2f}",
                    str(label),
                    str(len(group)),
                    str(len(group) - len(ok)),
                    *errors,
                    f"{ok['bound_ratio'].median():.2f}" if len(ok) else "-",
                    f"{ok['bound_ratio'].max():.2f}" if len(ok) else "-",
                    slope,
                    f"{wins}/{pairs}" if label == "flat" else "",
                ]
            )
    return headers, rows


BEYOND_REPRODUCTIONS: dict[str, Reproduction] = {
    "completion-nonuniform": Reproduction(
        "completion-nonuniform",
        "completion under power-law sampling (skews 0, 0.5, 1): flat (weighted trace norm) vs nuclear norm",
        _nonuniform_specs,
        _draw_nonuniform,
        _summarize_nonuniform,
    ),
    "noisy-sensing": Reproduction(
        "noisy-sensing",
        "noisy Gaussian sensing: error vs noise level of the ball-constrained relaxations, with the bound",
        _noisy_specs,
        _draw_noisy,
        _summarize_noisy,
    ),
}


# ---- large grids of Figure 3 (size="large") ---------------------------------------------------------
#: size="large" grids of the Figure 3 reproductions: the grid, draws and solver options of the full run.
#: Solvers are chosen by method="auto": the Z-space ADMM (+ interior point) up to d1 d2 = 300^2, the
#: factor-space search above (d = 400, 1000 of bilinear sensing and completion). Bilinear sensing caps the
#: solves at 2000 iterations (a hard d = 1000 cell costs about 0.4 s per L-BFGS iteration on one core).
LARGE_GRIDS: dict[str, tuple[dict[str, list[Any]], dict[str, Any]]] = {
    "fig3-sensing": ({"dim": [50, 75, 100], "measurements_per_dim": [2, 4, 6, 8, 10, 12, 14, 16]}, {}),
    "fig3-bilinear": (
        {"dim": [100, 400, 1000], "measurements_per_dim": [4, 8, 12, 16, 24]},
        {"max_iterations": 2000},
    ),
    "fig3-completion": ({"dim": [100, 400, 1000], "probability": [0.01, 0.02, 0.05, 0.1, 0.2, 0.4]}, {}),
    "fig3-quadratic": ({"dim": [50, 100, 200], "measurements_per_dim": [2, 4, 6, 8, 10, 12]}, {}),
}
#: the sizes a reproduction may be asked for.
SIZES = ("default", "large")


def large_grid(name: str, quick: bool) -> tuple[dict[str, list[Any]], int, dict[str, Any]]:
    """(grid, draws, solver options) of the large version of ``name``.

    Full: the grid of :data:`LARGE_GRIDS` with 10 draws. Quick: a smoke run at the smallest large d
    (every value of the other axis, 2 draws; minutes, not the two minutes of the default quick grids).

    Raises:
        ConfigurationError: ``name`` has no large grid.
    """
    if name not in LARGE_GRIDS:
        raise ConfigurationError(
            f"--size large: reproduction {name!r} has no large grid; those with one: {', '.join(LARGE_GRIDS)}"
        )
    grid, options = LARGE_GRIDS[name]
    grid = {key: list(values) for key, values in grid.items()}
    if quick:
        grid["dim"] = grid["dim"][:1]
    return grid, 2 if quick else 10, dict(options)


def check_size(size: object) -> str:
    """Return ``size`` if it is one of :data:`SIZES`; raise ConfigurationError otherwise."""
    if size not in SIZES:
        raise ConfigurationError(f"--size: must be one of {', '.join(SIZES)}, got {size!r}")
    return str(size)
