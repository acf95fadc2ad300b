"""Index of critical points against their loss, and the spectrum's bulk (Dauphin et al. 2014).

Question: at the critical points of a small network's training loss, does the index (the fraction of
negative Hessian eigenvalues) rise with the loss, so that high-loss critical points are saddles and
low-loss ones nearly minima (Dauphin et al., Fig. 1; Bray & Dean 2007 for Gaussian random fields)? And
is the bulk of the Hessian spectrum at high loss a Wigner semicircle?

Method: a one-hidden-layer tanh MLP (``hidden`` units, 16 inputs: the digits images 2x2 average-pooled
to 4x4 and standardized, 10 outputs, a few hundred parameters) fitted to one-hot targets of
``num_train`` digits by the square loss plus (weight_decay / 2) ||w||^2 (which keeps every critical
point finite). Each start (seed, k) draws an initialization from the seed's init stream, runs k steps of
gradient descent, then Levenberg-Marquardt on grad L(w) = 0 with the exact Hessian
(:mod:`._critical_points`), which is attracted to critical points of any index. A point is kept when
||grad L|| <= ``keep_gradient_norm``; how many were kept, and how "gradient-flat" the others are
(||H g|| / (||H|| ||g||), Frye et al.), is reported. At every point the dense Hessian is recomputed by
``HessianOperator.from_model`` (its difference from the closed form is in the CSV). The index counts
eigenvalues below -||g|| (an eigenvalue of magnitude <= ||g|| has no reliable sign at a point that far
from critical; their share is reported as ``undetermined`` and drawn as the error bar). For the kept
points with the highest ``high_loss_fraction`` of losses, the ``num_outliers`` largest eigenvalues
(about one per class, Papyan 2019) are set aside, the rest (the bulk) centred at its mean and scaled by
the semicircle radius R = 2 sigma that matches its second moment, and the pooled histogram compared with
the density (2 / pi) sqrt(1 - x^2) (Kolmogorov-Smirnov distance; kurtosis 2 for a semicircle, 3 for a
Gaussian). Nothing is tuned; the finding is whatever the numbers are.

References:
    Y. Dauphin, R. Pascanu, C. Gulcehre, K. Cho, S. Ganguli, Y. Bengio. Identifying and attacking the
    saddle point problem in high-dimensional non-convex optimization. NeurIPS 2014.
    A. J. Bray, D. S. Dean. Statistics of critical points of Gaussian fields on large-dimensional spaces.
    Physical Review Letters 98, 2007.
    C. G. Frye, N. S. Wadia, M. R. DeWeese, K. E. Bouchard. Critical point-finding methods reveal
    gradient-flat regions of deep network losses. Neural Computation 33(6), 2021.
    V. Papyan. Measurements of three-level hierarchical structure in the outliers in the spectrum of
    deepnet Hessians. ICML 2019.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_int_in_range, check_real
from flatminima.curvature import HessianOperator
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies import _study_tools as tools
from flatminima.experiments.studies._critical_points import TanhRegression, levenberg_marquardt
from flatminima.experiments.studies._stored_trials import Group, make_trial, records_rows, run_groups, single
from flatminima.experiments.study import StudyOutput

NUM_FEATURES = 16  # 4x4 pooled digits


@dataclasses.dataclass(frozen=True)
class DauphinConfig:
    """Hyperparameters of the study (see the module)."""

    seeds: tuple[int, ...] = tuple(range(12))
    gd_steps: tuple[int, ...] = (0, 10, 30, 100, 300, 1000, 3000)
    data_seed: int = 0
    num_train: int = 100
    hidden: int = 6
    weight_decay: float = 1e-3
    learning_rate: float = 0.2
    init_scale: float = 1.0
    max_iterations: int = 300
    tolerance: float = 1e-9
    keep_gradient_norm: float = 1e-3
    high_loss_fraction: float = 0.3
    num_outliers: int = 10
    num_resamples: int = 1000

    def __post_init__(self) -> None:
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        common.check_grid("gd_steps", self.gd_steps, check_int_in_range, low=0)
        check_int_in_range("data_seed", self.data_seed, low=0)
        check_int_in_range("num_train", self.num_train, low=10, high=1258, high_name="the training split")
        check_int_in_range("hidden", self.hidden, low=1)
        check_real("weight_decay", self.weight_decay, low=0.0)
        check_real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_real("init_scale", self.init_scale, low=0.0, low_open=True)
        check_int_in_range("max_iterations", self.max_iterations, low=1)
        check_real("tolerance", self.tolerance, low=0.0, low_open=True)
        check_real("keep_gradient_norm", self.keep_gradient_norm, low=self.tolerance)
        check_real("high_loss_fraction", self.high_loss_fraction, low=0.0, high=1.0, low_open=True)
        parameters = self.hidden * (NUM_FEATURES + 1) + 10 * (self.hidden + 1)
        check_int_in_range(
            "num_outliers", self.num_outliers, low=0, high=parameters - 3, high_name="(parameters - 3)"
        )
        check_int_in_range("num_resamples", self.num_resamples, low=10)


QUICK = DauphinConfig(seeds=(0, 1), gd_steps=(0, 10, 30, 100, 300, 1000), max_iterations=150)
FULL = DauphinConfig()


def regression(config: DauphinConfig) -> TanhRegression:
    """The loss of the study: pooled, standardized digits of ``data_seed`` and their one-hot targets."""
    data = common.digits(config.data_seed, config.num_train)
    x = nn.functional.avg_pool2d(data.x_train.reshape(-1, 1, 8, 8), 2).reshape(-1, NUM_FEATURES)
    std = x.std(0)
    x = (x - x.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
    targets = nn.functional.one_hot(data.y_train, 10).double()
    return TanhRegression(x, targets, config.hidden, config.weight_decay)


def _square_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * (output - target).square().sum(1).mean()


def find_and_measure(config: DauphinConfig, seed: int, steps: int) -> dict[str, Any]:
    """One start: init of ``seed``, ``steps`` GD steps, Levenberg-Marquardt, then the spectrum."""
    problem = regression(config)
    w = problem.initial(common.streams(seed)["init"], config.init_scale)
    for _ in range(steps):
        w = w - config.learning_rate * problem.gradient(w)
    out: dict[str, Any] = {"start_loss": problem.loss(w)}
    point = levenberg_marquardt(problem, w, tolerance=config.tolerance, max_iterations=config.max_iterations)
    model = problem.module(point.w)
    op = HessianOperator.from_model(model, _square_loss, [(problem.x, problem.targets)], mode="eval")
    hessian = op.dense() + config.weight_decay * torch.eye(op.size, dtype=torch.float64)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    gradient = problem.gradient(point.w)
    norm = point.gradient_norm
    with torch.no_grad():
        predictions = model(problem.x).argmax(1)
    out.update(loss=problem.loss(point.w), data_loss=problem.data_loss(point.w))
    out["train_error"] = float((predictions != problem.targets.argmax(1)).double().mean())
    out.update(gradient_norm=norm, iterations=point.iterations, converged=point.converged)
    out["kept"] = bool(norm <= config.keep_gradient_norm)
    out["index"] = float((eigenvalues < -norm).double().mean())
    out["undetermined"] = float((eigenvalues.abs() <= norm).double().mean())
    scale = float(eigenvalues.abs().max())
    out["gradient_flatness"] = float((hessian @ gradient).norm() / (scale * gradient.norm()))
    out.update(top_eigenvalue=float(eigenvalues[-1]), bottom_eigenvalue=float(eigenvalues[0]))
    out["hessian_check"] = float((hessian - problem.hessian(point.w)).abs().max())
    out["eigenvalues"] = eigenvalues.tolist()
    return out


def _groups(config: DauphinConfig, sweep: str) -> list[Group]:
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for name in ("seeds", "gd_steps", "high_loss_fraction", "num_outliers", "num_resamples"):
        del settings[name]  # the grid and the analysis do not change a start's result
    groups: list[Group] = []
    for seed in config.seeds:
        for steps in config.gd_steps:
            trial = make_trial(
                sweep, "digits-tanh", {"gd_steps": steps}, method="study", seed=seed, options=settings
            )
            groups.append(([trial], single(find_and_measure, config, seed, steps)))
    return groups


def semicircle_cdf(x: Any) -> Any:
    """The CDF of the semicircle law (2 / pi) sqrt(1 - x^2) on [-1, 1]."""
    import numpy

    x = numpy.clip(x, -1.0, 1.0)
    return 0.5 + (x * numpy.sqrt(1.0 - x**2) + numpy.arcsin(x)) / numpy.pi


def bulk(eigenvalues: Any, num_outliers: int) -> Any:
    """The bulk without the ``num_outliers`` largest, centred and divided by R = 2 sigma."""
    import numpy

    values = numpy.sort(numpy.asarray(eigenvalues, dtype=float))
    values = values[: len(values) - num_outliers]
    return (values - values.mean()) / (2.0 * values.std())


def analyse(frame: Any, config: DauphinConfig) -> dict[str, Any]:
    """Rank correlation of index with loss (bootstrap CI), the linear fit, and the semicircle check."""
    import numpy
    from scipy.stats import kstest

    kept = (
        frame[(frame["status"] == "ok") & frame["kept"].fillna(False).astype(bool)] if len(frame) else frame
    )
    out: dict[str, Any] = {"starts": len(frame), "kept": len(kept)}
    out["converged"] = int(frame["converged"].fillna(False).astype(bool).sum()) if len(frame) else 0
    loss, index = kept["data_loss"].to_numpy(float), kept["index"].to_numpy(float)
    out["rho"] = tools.spearman(loss, index)
    out["rho_interval"] = tools.bootstrap_interval(
        tools.spearman,
        [loss, index],
        generator=common.streams(config.data_seed)["measure"],
        num_resamples=config.num_resamples,
    )
    out["fit"] = tuple(numpy.polyfit(loss, index, 1)) if len(kept) >= 2 and numpy.ptp(loss) > 0 else None
    out["high"] = kept.iloc[0:0]
    out["pooled"] = numpy.zeros(0)
    if len(kept):
        cut = float(numpy.quantile(loss, 1.0 - config.high_loss_fraction))
        high = kept[kept["data_loss"] >= cut]
        pooled = numpy.concatenate([bulk(e, config.num_outliers) for e in high["eigenvalues"]])
        out.update(high=high, pooled=pooled, cut=cut)
        out["ks"] = float(kstest(pooled, semicircle_cdf).statistic)
        out["kurtosis"] = float(numpy.mean(pooled**4) / numpy.mean(pooled**2) ** 2)
        out["outside"] = float((numpy.abs(pooled) > 1).mean())
    return out


def run(
    config: DauphinConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Find critical points (resuming from the store), analyse, write the spectra, draw; see the module."""
    import pandas

    records, result = run_groups(
        _groups(config, sweep), sweep=sweep, name=name, config=config, store=store, progress=progress
    )
    full = pandas.DataFrame(records_rows(records))
    for column in ("kept", "converged", "eigenvalues"):
        if column not in full:
            full[column] = None
    analysis = analyse(full, config)
    spectra = [
        {
            "seed": r["seed"],
            "gd_steps": r["gd_steps"],
            "data_loss": r["data_loss"],
            "rank": k,
            "eigenvalue": v,
        }
        for _, r in full.iterrows()
        if r["status"] == "ok"
        for k, v in enumerate(r["eigenvalues"])
    ]
    pandas.DataFrame(spectra).to_csv(out_dir / f"{name}_eigenvalues.csv", index=False)
    frame = full.drop(columns=["eigenvalues"])
    figure = _draw(full, analysis, config, out_dir / f"{name}.png")
    headers = ["GD steps before LM", "starts", "kept", "loss (kept)", "index (kept)", "undetermined"]
    rows = []
    for steps, group in frame.groupby("gd_steps", sort=True):
        kept = group[group["kept"].fillna(False).astype(bool)]
        rows.append(
            [
                str(steps),
                str(len(group)),
                str(len(kept)),
                common.mean_std(kept["data_loss"]),
                common.mean_std(kept["index"]),
                common.mean_std(kept["undetermined"]),
            ]
        )
    rho = tools.interval_text(analysis["rho"], analysis["rho_interval"])
    rows.append(
        ["all", str(len(frame)), str(analysis["kept"]), "-", f"Spearman rho(loss, index) = {rho}", "-"]
    )
    return StudyOutput(frame, figure, (headers, rows), (result,))


def _draw(frame: Any, analysis: dict[str, Any], config: DauphinConfig, path: Path) -> Path:
    import numpy

    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.4))
    ok = frame[frame["status"] == "ok"] if len(frame) else frame
    kept = ok[ok["kept"].astype(bool)] if len(ok) else ok
    ax = axes[0]
    if len(kept):
        steps = sorted(config.gd_steps)
        colors = plt.get_cmap("viridis")(numpy.linspace(0, 0.9, len(steps)))
        for color, k in zip(colors, steps, strict=True):
            part = kept[kept["gd_steps"] == k]
            ax.errorbar(
                part["data_loss"],
                part["index"],
                yerr=[numpy.zeros(len(part)), part["undetermined"]],
                fmt="o",
                color=color,
                markersize=5,
                capsize=2,
                label=f"{k} GD steps, then LM",
            )
    if analysis["fit"] is not None:
        slope, intercept = analysis["fit"]
        xs = numpy.linspace(kept["data_loss"].min(), kept["data_loss"].max(), 10)
        ax.plot(xs, intercept + slope * xs, "k--", linewidth=1, label=f"least squares: slope {slope:.3g}")
    rho = tools.interval_text(analysis["rho"], analysis["rho_interval"])
    ax.set_title(f"index against loss: Spearman rho = {rho}", fontsize=10)
    ax.set_xlabel("training loss at the critical point, (1/2n) sum ||f(x) - y||^2")
    ax.set_ylabel("index (fraction of eigenvalues < -||grad L||)")
    tools.legend(ax, fontsize=7)
    ax = axes[1]
    pooled = analysis["pooled"]
    if len(pooled):
        ax.hist(
            pooled, bins=40, density=True, alpha=0.6, label=f"bulk, {len(analysis['high'])} high-loss points"
        )
        xs = numpy.linspace(-1, 1, 201)
        ax.plot(xs, 2 / numpy.pi * numpy.sqrt(1 - xs**2), "k-", label="semicircle (2/pi) sqrt(1 - x^2)")
        ax.set_title(
            f"bulk at loss >= {analysis['cut']:.3g}: KS distance {analysis['ks']:.3f}, "
            f"kurtosis {analysis['kurtosis']:.3g} (semicircle 2)",
            fontsize=10,
        )
    ax.set_xlabel(f"(eigenvalue - bulk mean) / (2 sigma), the {config.num_outliers} largest set aside")
    ax.set_ylabel("density")
    tools.legend(ax, fontsize=7)
    ax = axes[2]
    if len(ok):
        norms = numpy.log10(ok["gradient_norm"].clip(lower=1e-16).to_numpy(float))
        ax.hist(
            [norms[ok["kept"].astype(bool).to_numpy()], norms[~ok["kept"].astype(bool).to_numpy()]],
            bins=25,
            stacked=True,
            label=[f"kept ({len(kept)})", f"not kept ({len(ok) - len(kept)})"],
        )
    ax.axvline(math.log10(config.keep_gradient_norm), color="k", linestyle="--", label="keep threshold")
    ax.set_xlabel("log10 ||grad L|| after Levenberg-Marquardt")
    ax.set_ylabel("number of starts")
    ax.set_title(f"{analysis['kept']} of {analysis['starts']} starts kept", fontsize=10)
    tools.legend(ax, fontsize=7)
    fig.suptitle("Critical points of a tanh MLP on pooled digits (Dauphin et al. 2014)")
    fig.tight_layout(rect=(0, 0.13, 1, 0.96))
    return common.finish(fig, common.caption(config, _finding(ok, analysis)), path)


def _finding(ok: Any, analysis: dict[str, Any]) -> str:
    """The caption's statement of what was measured (computed, never hard-coded)."""
    parts = [
        f"{analysis['kept']} of {analysis['starts']} starts reached ||grad L|| <= keep_gradient_norm "
        f"({analysis['converged']} reached the tolerance)."
    ]
    if len(ok) > analysis["kept"]:
        others = ok[~ok["kept"].astype(bool)]
        parts.append(
            f"The others stalled with median ||grad L|| {others['gradient_norm'].median():.2g} and median "
            f"||Hg||/(||H|| ||g||) {others['gradient_flatness'].median():.2g} (gradient-flat regions)."
        )
    if analysis["kept"]:
        rho = tools.interval_text(analysis["rho"], analysis["rho_interval"])
        parts.append(f"Spearman rho(loss, index) = {rho} (95% bootstrap CI over kept points).")
        parts.append(
            f"Bulk of the {len(analysis['high'])} highest-loss points: KS distance to the semicircle "
            f"{analysis['ks']:.3f}, kurtosis {analysis['kurtosis']:.3g} (semicircle 2, Gaussian 3), "
            f"{100 * analysis['outside']:.1f}% of the bulk outside [-R, R]."
        )
        check = ok["hessian_check"].max()
        parts.append(
            f"Closed-form and autograd Hessians agree to {check:.1e}. Error bars: undetermined share."
        )
    return " ".join(parts)
