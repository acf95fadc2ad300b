"""A "fantastic generalization measures" study in miniature (Jiang et al. 2020) on digits.

A grid of MLPs varying learning rate, batch size, width, depth, weight decay and seed is trained by SGD
until the training cross-entropy is <= ``target_loss`` (Jiang et al. stop at 0.01). For every model we
compute each flatness measure of :data:`flatminima.curvature.MEASURES` used by Jiang et al. (through
:func:`flatminima.curvature.measure`), norm-based baselines and the optimization speed, and correlate
each with the generalization gap g = test error - train error by Kendall's tau

    tau = (2 / (n (n - 1))) sum_{i<j} sign(mu_i - mu_j) sign(g_i - g_j)    (scipy's tau-b, ties handled),

overall, and granulated (Jiang et al., eq. 4): for each hyperparameter h, tau within every group of
models that differ only in h, averaged over the groups (psi_h); Psi is the mean of psi_h over the
hyperparameters h (psi_seed, for models differing only in the seed, is reported but not averaged). Every
measure is oriented as a complexity (larger = predicted larger gap): PAC-Bayes measures use 1/sigma^2.
Models that do not reach the target are kept in the CSV and left out of the correlations, as in the paper.

Every tau has a percentile bootstrap interval (``bootstrap_resamples`` resamples, ``confidence`` level,
from a generator seeded by ``bootstrap_seed``): the overall tau resamples the models with replacement
(:func:`~flatminima.experiments.studies._study_tools.kendall_bootstrap`); psi_h resamples the groups of
models that differ only in h (each group's tau fixed: resampling models would break the groups), and
Psi averages the resampled psi_h. The caption names the measures whose tau interval excludes 0.

Beyond Jiang et al.'s list the study carries Hochreiter and Schmidhuber's flat-box description length
(``hochreiter_box``, one half-width per parameter tensor, tolerance 0.01 of training cross-entropy), the
expected sharpness E[L(w + u)] - L(w), u ~ N(0, sigma^2 I), at the fixed sigma
:data:`EXPECTED_SHARPNESS_SIGMA` (``expected_sharpness_kl``; at the PAC-Bayes sigma it would equal the
search threshold by construction), and the VC-dimension bounds of Bartlett et al. (2019) and Harvey et
al. (2017) as capacity baselines (the models are ``nn.Sequential`` ReLU MLPs, which they can read; they
depend on width and depth only).

Each model is one trial of the SQLite store (keyed by its hyperparameters and the study settings), so an
interrupted run resumes where it stopped. The PAC-Bayes sigma here bounds the increase of the training
cross-entropy by 0.1 (Jiang et al. use the 0-1 error); worst-case sharpness uses an l2 ball of radius 0.05.

References:
    Y. Jiang, B. Neyshabur, H. Mobahi, D. Krishnan, S. Bengio. Fantastic generalization measures and
    where to find them. ICLR 2020.
    S. Hochreiter, J. Schmidhuber. Flat minima. Neural Computation 9(1), 1997.
    B. Neyshabur, S. Bhojanapalli, D. McAllester, N. Srebro. Exploring generalization in deep learning.
    NeurIPS 2017.
    P. L. Bartlett, N. Harvey, C. Liaw, A. Mehrabian. Nearly-tight VC-dimension and pseudodimension
    bounds for piecewise linear neural networks. JMLR 20(63), 2019.
    B. Efron, R. Tibshirani. An introduction to the bootstrap. Chapman & Hall, 1993 (percentile
    intervals).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_int_in_range, check_real
from flatminima.curvature import measure
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies._stored_trials import make_trial, records_frame, run_units
from flatminima.experiments.studies._study_tools import kendall_bootstrap, mean_bootstrap
from flatminima.experiments.study import StudyOutput
from flatminima.networks import evaluate, linear_layers
from flatminima.random import child_generators

HYPERPARAMETERS = ("learning_rate", "batch_size", "width", "depth", "weight_decay", "seed")
FLATNESS = (
    "lanczos_top_eigenvalue",
    "hutchinson_trace",
    "hutchinson_squared_frobenius_norm",
    "epsilon_sharpness",
    "worst_case_sharpness",
    "adaptive_worst_case_sharpness",
    "pac_bayes_flatness",
    "pac_bayes_orig",
    "pac_bayes_init",
    "magnitude_pac_bayes_flatness",
    "magnitude_pac_bayes_orig",
    "magnitude_pac_bayes_init",
    "hochreiter_box",
    "expected_sharpness_kl",
)
#: measures from the registry that are not flatness measures (computed by ``measure`` too).
REGISTRY_BASELINES = ("path_norm", "gradient_variance", "vc_bartlett2019", "vc_harvey2017")
BASELINES = (
    *REGISTRY_BASELINES,
    "parameter_norm",
    "distance_from_init",
    "log_product_frobenius",
    "log_product_spectral",
    "num_steps",
)
MEASURE_NAMES = (*FLATNESS, *BASELINES)
#: the noise standard deviation of the expected sharpness.
EXPECTED_SHARPNESS_SIGMA = 0.05
#: options of the measures added with the flatness literature (part of every trial's key).
NEW_MEASURE_OPTIONS: dict[str, dict[str, Any]] = {
    "hochreiter_box": {"epsilon": 0.01, "granularity": "tensor"},
    "expected_sharpness_kl": {"sigma": EXPECTED_SHARPNESS_SIGMA},
}
#: config fields of the analysis only: they change no trial and are left out of the stored spec.
ANALYSIS_FIELDS = ("bootstrap_resamples", "bootstrap_seed", "confidence")


@dataclasses.dataclass(frozen=True)
class FantasticConfig:
    """The grid and the training settings (see the module)."""

    learning_rates: tuple[float, ...] = (0.03, 0.1)
    batch_sizes: tuple[int, ...] = (32, 128)
    widths: tuple[int, ...] = (16, 64)
    depths: tuple[int, ...] = (1, 2)
    weight_decays: tuple[float, ...] = (0.0, 5e-4)
    seeds: tuple[int, ...] = (0, 1)
    target_loss: float = 0.01
    max_epochs: int = 1500
    num_train: int | None = None
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        common.check_grid("learning_rates", self.learning_rates, check_real, low=0.0, low_open=True)
        common.check_grid("batch_sizes", self.batch_sizes, check_int_in_range, low=1)
        common.check_grid("widths", self.widths, check_int_in_range, low=1)
        common.check_grid("depths", self.depths, check_int_in_range, low=1)
        common.check_grid("weight_decays", self.weight_decays, check_real, low=0.0)
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        check_real("target_loss", self.target_loss, low=0.0, low_open=True)
        check_int_in_range("max_epochs", self.max_epochs, low=1)
        check_int_in_range("bootstrap_resamples", self.bootstrap_resamples, low=1)
        check_int_in_range("bootstrap_seed", self.bootstrap_seed, low=0)
        check_real("confidence", self.confidence, low=0.0, high=1.0, low_open=True, high_open=True)

    def grid(self) -> list[dict[str, Any]]:
        """Every hyperparameter combination, as dicts keyed by :data:`HYPERPARAMETERS`."""
        values = (
            self.learning_rates,
            self.batch_sizes,
            self.widths,
            self.depths,
            self.weight_decays,
            self.seeds,
        )
        return [dict(zip(HYPERPARAMETERS, combo, strict=True)) for combo in itertools.product(*values)]


QUICK = FantasticConfig(
    learning_rates=(0.03, 0.1),
    batch_sizes=(32, 128),
    widths=(16, 64),
    depths=(1, 2),
    weight_decays=(0.0,),
    seeds=(0,),
    target_loss=0.05,
    num_train=600,
)
FULL = FantasticConfig()


def norm_baselines(model: nn.Module, initial: nn.Module) -> dict[str, float]:
    """||w||^2, ||w - w0||^2, sum_l log ||W_l||_F^2 and sum_l log ||W_l||_2^2 (Jiang et al., App. C)."""
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    w0 = torch.cat([p.detach().reshape(-1) for p in initial.parameters()])
    weights = [layer.weight.detach() for layer in linear_layers(model)]
    return {
        "parameter_norm": float(w.square().sum()),
        "distance_from_init": float((w - w0).square().sum()),
        "log_product_frobenius": sum(math.log(float(W.square().sum())) for W in weights),
        "log_product_spectral": sum(2 * math.log(float(torch.linalg.matrix_norm(W, ord=2))) for W in weights),
    }


def _trial(config: FantasticConfig, sweep: str, hp: dict[str, Any]) -> Any:
    params = {
        **hp,
        "target_loss": config.target_loss,
        "max_epochs": config.max_epochs,
        "num_train": config.num_train,
    }
    cell = {k: v for k, v in hp.items() if k != "seed"}
    # the measures are part of the key: a study with other measures never reuses stale rows
    options = {"measures": list(MEASURE_NAMES), **NEW_MEASURE_OPTIONS}
    return make_trial(sweep, "digits", params, method="sgd", seed=hp["seed"], cell=cell, options=options)


def train_and_measure(config: FantasticConfig, hp: dict[str, Any]) -> dict[str, Any]:
    """Train one model of the grid and compute every measure and the gaps."""
    data = common.digits(hp["seed"], config.num_train)
    initial, result = common.train_digits(
        data,
        hp["seed"],
        hidden=[hp["width"]] * hp["depth"],
        learning_rate=hp["learning_rate"],
        batch_size=hp["batch_size"],
        target_loss=config.target_loss,
        max_epochs=config.max_epochs,
        weight_decay=hp["weight_decay"],
    )
    metrics: dict[str, Any] = {"reached_target": result.reached_target, "diverged": result.diverged}
    metrics.update(epochs=result.epochs, num_steps=result.steps)
    if result.diverged:
        return metrics
    metrics.update(evaluate(result.model, data))
    op = common.hessian(result.model, data)
    w0 = {key: p.detach() for key, p in initial.named_parameters()}
    options: dict[str, dict[str, Any]] = {
        "lanczos_top_eigenvalue": {"tol": 1e-6},
        "epsilon_sharpness": {"epsilon": 1e-3},
        "pac_bayes_init": {"initial_weights": w0},
        "magnitude_pac_bayes_init": {"initial_weights": w0},
        **NEW_MEASURE_OPTIONS,
    }
    table = measure(
        op, [*FLATNESS, *REGISTRY_BASELINES], generator=common.streams(hp["seed"])["measure"], options=options
    )
    metrics.update({record.name: record.value for record in table})
    metrics.update(norm_baselines(result.model, initial))
    return metrics


def run(
    config: FantasticConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train the grid (resuming from the store), correlate with bootstrap intervals, draw; see the module."""
    trials = [
        (_trial(config, sweep, hp), functools.partial(train_and_measure, config, hp)) for hp in config.grid()
    ]
    stored = {k: v for k, v in dataclasses.asdict(config).items() if k not in ANALYSIS_FIELDS}
    records, result = run_units(trials, name=name, sweep=sweep, config=stored, store=store, progress=progress)
    frame = records_frame(records, HYPERPARAMETERS, key=True)
    taus = correlations(
        frame, resamples=config.bootstrap_resamples, seed=config.bootstrap_seed, level=config.confidence
    )
    taus.to_csv(out_dir / f"{name}_tau.csv", index=False)
    figure = _draw(taus, frame, config, out_dir / f"{name}.png")
    varied = [h for h in HYPERPARAMETERS if h in taus.columns]
    level = f"{100 * config.confidence:g}% CI"
    headers = ["measure", f"tau [{level}]", *[f"psi {h}" for h in varied], f"Psi [{level}]"]
    rows = [
        [r["measure"], _with_ci(r, "tau"), *[common.fmt(r[h]) for h in varied], _with_ci(r, "Psi")]
        for _, r in taus.iterrows()
    ]
    return StudyOutput(frame, figure, (headers, rows), (result,))


def _with_ci(row: Any, column: str) -> str:
    value, low, high = row[column], row[f"{column}_low"], row[f"{column}_high"]
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{common.fmt(value)} [{common.fmt(low)}, {common.fmt(high)}]"


def correlations(frame: Any, *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Any:
    """Per measure: overall Kendall tau with gap_error, psi per varied hyperparameter, Psi, and intervals.

    Only models with status ok that reached the target are used; a hyperparameter with one value is not
    varied and gets no column. psi_h is NaN when no group has two distinct values of the measure and gap.
    The columns measure, kind, tau, the psi_h, Psi and models come first; then the percentile bootstrap
    intervals (``level``, ``resamples`` draws of one generator seeded by ``seed``, see the module):
    tau_low, tau_high, h_low, h_high per varied h, Psi_low, Psi_high.
    """
    import numpy
    import pandas
    from scipy.stats import kendalltau

    ok = (
        frame[(frame["status"] == "ok") & frame.get("reached_target", False).astype(bool)]
        if len(frame)
        else frame
    )
    varied = [h for h in HYPERPARAMETERS if len(ok) and ok[h].nunique() > 1]
    generator = child_generators(seed, "bootstrap")["bootstrap"]
    rows = []
    for measure_name in MEASURE_NAMES:
        row: dict[str, Any] = {
            "measure": measure_name,
            "kind": "flatness" if measure_name in FLATNESS else "baseline",
        }
        if len(ok) < 2 or measure_name not in ok:
            row.update(tau=math.nan, **dict.fromkeys(varied, math.nan), Psi=math.nan, models=len(ok))
            rows.append(row)
            continue
        row["tau"] = float(kendalltau(ok[measure_name], ok["gap_error"]).statistic)
        groups: dict[str, list[float]] = {}
        for h in varied:
            others = [o for o in HYPERPARAMETERS if o != h]
            taus = []
            for _, group in ok.groupby(others):
                if len(group) > 1 and group[measure_name].nunique() > 1 and group["gap_error"].nunique() > 1:
                    taus.append(float(kendalltau(group[measure_name], group["gap_error"]).statistic))
            row[h] = float(numpy.mean(taus)) if taus else math.nan
            groups[h] = taus
        # psi_seed (models differing only in the seed) is shown but not averaged into Psi
        psis = [row[h] for h in varied if h != "seed" and not math.isnan(row[h])]
        row["Psi"] = float(numpy.mean(psis)) if psis else math.nan
        row["models"] = len(ok)
        usable = ok[[measure_name, "gap_error"]].dropna()
        row["tau_low"], row["tau_high"] = kendall_bootstrap(
            usable[measure_name], usable["gap_error"], generator, resamples=resamples, level=level
        )
        for h in varied:
            row[f"{h}_low"], row[f"{h}_high"] = mean_bootstrap(
                groups[h], generator, resamples=resamples, level=level
            )
        row["Psi_low"], row["Psi_high"] = _psi_interval(
            [groups[h] for h in varied if h != "seed" and groups[h]], generator, resamples, level
        )
        rows.append(row)
    return pandas.DataFrame(rows)


def _psi_interval(
    groups: list[list[float]], generator: torch.Generator, resamples: int, level: float
) -> tuple[float, float]:
    """Percentile interval of Psi: the groups of each h resampled independently, psi_h averaged over h."""
    import numpy

    if not groups:
        return math.nan, math.nan
    means = []
    for taus in groups:
        values = numpy.asarray(taus, dtype=float)
        index = torch.randint(len(values), (resamples, len(values)), generator=generator).numpy()
        means.append(values[index].mean(1))
    psi = numpy.mean(means, axis=0)
    low, high = numpy.percentile(psi, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _draw(taus: Any, frame: Any, config: FantasticConfig, path: Path) -> Path:
    import numpy

    from flatminima.landscape.plots import annotate_cells, pyplot

    plt = pyplot()
    varied = [h for h in HYPERPARAMETERS if h in taus.columns]
    fig, axes = plt.subplots(1, 2, figsize=(14, 8), gridspec_kw={"width_ratios": [1.2, 1]})
    rows = len(taus)
    y = numpy.arange(rows)
    ax = axes[0]
    level = f"{100 * config.confidence:g}% bootstrap CI"
    for offset, column, label in ((-0.2, "tau", "overall tau"), (0.2, "Psi", "granulated Psi")):
        values = taus[column].to_numpy(dtype=float)
        low = taus.get(f"{column}_low", taus[column]).to_numpy(dtype=float)
        high = taus.get(f"{column}_high", taus[column]).to_numpy(dtype=float)
        error = numpy.nan_to_num(numpy.vstack([values - low, high - values]).clip(min=0))
        ax.barh(y + offset, values, height=0.4, label=f"{label} ({level})", xerr=error, capsize=2)
    ax.set_yticks(y)
    ax.set_yticklabels(taus["measure"], fontsize=8)
    ax.set_ylim(rows - 0.5, -0.5)  # the rows of the heat map, top to bottom
    ax.set_xlim(-1.05, 1.05)
    ax.axvline(0.0, color="k", linewidth=0.5)
    ax.grid(axis="x", linewidth=0.3)
    flat = int(taus["kind"].eq("flatness").sum()) if "kind" in taus else rows
    if 0 < flat < rows:
        for a in axes:
            a.axhline(flat - 0.5, color="k", linewidth=1.0, linestyle="--")
        ax.text(-1.0, flat - 0.4, "norm, capacity and speed baselines", va="top", fontsize=8, style="italic")
        ax.text(-1.0, -0.4, "flatness measures", va="top", fontsize=8, style="italic")
    ax.set_xlabel("Kendall tau with the generalization gap (test - train error), dimensionless")
    ax.set_ylabel("measure (oriented as a complexity)")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax = axes[1]
    matrix = taus[varied].to_numpy(dtype=float) if varied else numpy.full((rows, 1), numpy.nan)
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    annotate_cells(ax, image, matrix, fontsize=8)
    ax.set_xticks(range(len(varied)))
    ax.set_xticklabels(varied, fontsize=9)
    ax.set_yticks(y)
    ax.tick_params(axis="y", labelleft=False)  # the measure names are those of the bars, same rows
    ax.set_xlabel("hyperparameter h (psi_h: models that differ only in h)")
    ax.set_title("granulated tau psi_h per hyperparameter (- : no group varies both)", fontsize=10)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("psi_h (mean Kendall tau within the groups)")
    used = int(taus["models"].iloc[0]) if len(taus) else 0
    fig.suptitle("Fantastic measures in miniature (Jiang et al. 2020): digits MLPs")
    text = common.caption(config, _finding(taus, frame, used, config))
    return common.finish_captioned(fig, text, path, top=0.97)


def _finding(taus: Any, frame: Any, used: int, config: FantasticConfig) -> str:
    """The caption's statement of what the intervals show (computed, whatever it is)."""
    known = taus.dropna(subset=["tau"])
    level = f"{100 * config.confidence:g}%"
    if known.empty:
        return f"{len(frame)} models, {used} reached the target loss: too few for any correlation."
    excludes = known[(known["tau_low"] > 0) | (known["tau_high"] < 0)]
    best = known.loc[known["tau"].abs().idxmax()]
    named = ", ".join(f"{r.measure} ({r.tau:+.2f})" for r in excludes.itertuples()) or "none"
    return (
        f"{len(frame)} models, {used} reached the target loss and enter the correlations. Measures are "
        "complexities (PAC-Bayes: 1/sigma^2 and the bounds; sigma for a 0.1 increase of training "
        f"cross-entropy; expected sharpness at sigma={EXPECTED_SHARPNESS_SIGMA:g}; flat box: description "
        "length in bits). Gap = test error - train error. Error bars: "
        f"{level} percentile bootstrap intervals ({config.bootstrap_resamples} resamples; tau over models, "
        f"Psi over groups). Largest |tau|: {best.measure} ({best.tau:+.2f}, "
        f"[{best.tau_low:+.2f}, {best.tau_high:+.2f}]). Intervals of tau excluding 0: {named}."
    )
