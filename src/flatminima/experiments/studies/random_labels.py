"""Random labels (Zhang et al. 2017; Neyshabur et al. 2017): fitting noise, and what flatness says about it.

Question: a network that fits random labels generalizes no better than chance, yet reaches the same zero
training error as one trained on true labels; do flatness measures, and the trade-off between expected
sharpness and the KL term of the PAC-Bayes bound, tell the two apart, and do they follow the test error
as the share of random labels grows?

Method: one digits MLP (``hidden`` widths) is trained by SGD until the training cross-entropy is <=
``target_loss`` (training error ~0) on training sets of each size in ``train_sizes`` in which a fraction
f in ``label_fractions`` of the examples, chosen at random, get a label drawn uniformly from the 10
classes (Zhang et al.'s protocol: about 1/10 of them keep their true label); the test labels are the true
ones. Every random choice (split, labels, initialization, batches, measures) comes from named streams
of the seed. At each solution we measure, with :func:`flatminima.curvature.measure`, the Hessian trace
(Hutchinson) and top eigenvalue (Lanczos), the PAC-Bayes sigma (the largest sigma whose expected
increase of training cross-entropy is <= 0.1) with the expected sharpness and the KL term at it
(``expected_sharpness_kl``), Hochreiter and Schmidhuber's flat-box description length (``hochreiter_box``,
one half-width per tensor) and the path norm; and, for Neyshabur et al.'s figure, the expected sharpness

    E_u[L(w + u)] - L(w), u ~ N(0, sigma^2 I),
    against  KL(N(w, sigma^2 I) || N(0, sigma^2 I)) = ||w||^2 / (2 sigma^2)

on the grid ``sigmas`` (zero-centred prior, as in their bound; L the training cross-entropy on the labels
the model was trained on). A model lower-left on that plane has a smaller PAC-Bayes bound. Models that
miss the target are kept in the CSV and left out of the figure and summaries. Nothing is tuned: the
caption reports whatever ordering the numbers show.

Each model is one trial of the SQLite store (keyed by its settings and the measures), so an interrupted
run resumes.

References:
    C. Zhang, S. Bengio, M. Hardt, B. Recht, O. Vinyals. Understanding deep learning requires rethinking
    generalization. ICLR 2017.
    B. Neyshabur, S. Bhojanapalli, D. McAllester, N. Srebro. Exploring generalization in deep learning.
    NeurIPS 2017 (Section 3 and Figure 3: expected sharpness against KL, true and random labels).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from pathlib import Path
from typing import Any

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.curvature import expected_sharpness_kl, measure
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies._stored_trials import make_trial, records_frame, run_units
from flatminima.experiments.study import StudyOutput
from flatminima.networks import Dataset, evaluate
from flatminima.networks.data import NUM_DIGITS
from flatminima.random import child_generators

#: measures of every model (through :func:`flatminima.curvature.measure`, in this order).
MEASURES = (
    "hutchinson_trace",
    "lanczos_top_eigenvalue",
    "pac_bayes_sigma",
    "expected_sharpness_kl",
    "hochreiter_box",
    "path_norm",
)
MEASURE_OPTIONS: dict[str, dict[str, Any]] = {
    "lanczos_top_eigenvalue": {"tol": 1e-6},
    "hochreiter_box": {"epsilon": 0.01, "granularity": "tensor"},
}
#: the largest training split of the digits (70 % of the images).
MAX_TRAIN = NUM_DIGITS - round(0.3 * NUM_DIGITS)
PARAMS = ("label_fraction", "num_train", "seed")


@dataclasses.dataclass(frozen=True)
class RandomLabelsConfig:
    """The grid (label fractions x training-set sizes x seeds) and the training settings (see the module)."""

    label_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    train_sizes: tuple[int, ...] = (200, 500, 1000)
    seeds: tuple[int, ...] = (0, 1, 2)
    hidden: tuple[int, ...] = (64,)
    learning_rate: float = 0.1
    batch_size: int = 32
    target_loss: float = 0.01
    max_epochs: int = 3000
    sigmas: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
    sharpness_samples: int = 50

    def __post_init__(self) -> None:
        common.check_grid("label_fractions", self.label_fractions, check_real, low=0.0, high=1.0)
        common.check_grid("train_sizes", self.train_sizes, check_int_in_range, low=2, high=MAX_TRAIN)
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        common.check_grid("hidden", self.hidden, check_int_in_range, low=1)
        check_real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_int_in_range("batch_size", self.batch_size, low=1)
        if self.batch_size > min(self.train_sizes):
            raise ConfigurationError(
                f"batch_size must be <= the smallest training set {min(self.train_sizes)}; "
                f"got batch_size={self.batch_size}."
            )
        check_real("target_loss", self.target_loss, low=0.0, low_open=True)
        check_int_in_range("max_epochs", self.max_epochs, low=1)
        common.check_grid("sigmas", self.sigmas, check_real, low=0.0, low_open=True)
        check_int_in_range("sharpness_samples", self.sharpness_samples, low=2)


QUICK = RandomLabelsConfig(
    train_sizes=(100, 300), seeds=(0, 1), sigmas=(0.01, 0.03, 0.1), sharpness_samples=20
)
FULL = RandomLabelsConfig()


def randomize_labels(data: Dataset, fraction: float, generator: torch.Generator) -> Dataset:
    """``data`` with round(fraction n) training examples, chosen at random, relabelled uniformly at random.

    The chosen examples come from ``torch.randperm`` and their new labels from ``torch.randint`` over
    the classes, both drawn from ``generator``; the test set is untouched.
    """
    n = data.num_train
    count = round(check_real("fraction", fraction, low=0.0, high=1.0) * n)
    chosen = torch.randperm(n, generator=generator)[:count]
    labels = data.y_train.clone()
    labels[chosen] = torch.randint(data.num_classes, (count,), generator=generator)
    return Dataset(data.x_train, labels, data.x_test, data.y_test)


def train_and_measure(
    config: RandomLabelsConfig, fraction: float, num_train: int, seed: int
) -> dict[str, Any]:
    """Train one model of the grid and compute its measures and its sharpness-KL curve."""
    clean = common.digits(seed, num_train)
    data = randomize_labels(clean, fraction, child_generators(seed, "labels")["labels"])
    _, result = common.train_digits(
        data,
        seed,
        hidden=config.hidden,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        target_loss=config.target_loss,
        max_epochs=config.max_epochs,
    )
    metrics: dict[str, Any] = {"reached_target": result.reached_target, "diverged": result.diverged}
    metrics.update(epochs=result.epochs, steps=result.steps)
    metrics["changed_labels"] = float((data.y_train != clean.y_train).double().mean())
    if result.diverged:
        return metrics
    metrics.update(evaluate(result.model, data))
    op = common.hessian(result.model, data)
    generator = common.streams(seed)["measure"]
    table = measure(op, MEASURES, generator=generator, options=MEASURE_OPTIONS)
    metrics.update({record.name: record.value for record in table})
    sharp = next(record for record in table if record.name == "expected_sharpness_kl")
    metrics["kl_at_pac_bayes_sigma"] = sharp.diagnostic_value
    metrics["parameter_norm"] = float(op.point.square().sum())
    curve = [
        expected_sharpness_kl(op, sigma, num_samples=config.sharpness_samples, generator=generator)
        for sigma in config.sigmas
    ]
    metrics.update(
        curve_kl=[c.kl for c in curve],
        curve_sharpness=[c.value for c in curve],
        curve_stderr=[c.stderr for c in curve],
    )
    return metrics


def _trial(config: RandomLabelsConfig, sweep: str, fraction: float, num_train: int, seed: int) -> Any:
    params = {
        "label_fraction": fraction,
        "num_train": num_train,
        "seed": seed,
        **{
            f: getattr(config, f)
            for f in ("hidden", "learning_rate", "batch_size", "target_loss", "max_epochs")
        },
    }
    options = {
        "measures": list(MEASURES),
        **MEASURE_OPTIONS,
        "sigmas": list(config.sigmas),
        "sharpness_samples": config.sharpness_samples,
    }
    cell = {"label_fraction": fraction, "num_train": num_train}
    return make_trial(sweep, "digits", params, method="sgd", seed=seed, cell=cell, options=options)


def run(
    config: RandomLabelsConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train the grid (resuming from the store), measure, draw; see the module."""
    import pandas

    grid = list(itertools.product(config.seeds, config.train_sizes, config.label_fractions))
    trials = [
        (_trial(config, sweep, f, n, s), functools.partial(train_and_measure, config, f, n, s))
        for s, n, f in grid
    ]
    records, result = run_units(trials, name=name, sweep=sweep, config=config, store=store, progress=progress)
    frame = records_frame(records, PARAMS, key=True)
    curves = []
    for row in frame.itertuples():
        for k, sigma in enumerate(config.sigmas if isinstance(getattr(row, "curve_kl", None), list) else ()):
            curves.append(
                {
                    "key": row.key,
                    **{p: getattr(row, p) for p in PARAMS},
                    "reached_target": row.reached_target,
                    "sigma": sigma,
                    "kl": row.curve_kl[k],
                    "expected_sharpness": row.curve_sharpness[k],
                    "stderr": row.curve_stderr[k],
                }
            )
    curve = pandas.DataFrame(curves)
    curve.to_csv(out_dir / f"{name}_curves.csv", index=False)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("curve_")])
    ok = common.usable(frame)
    figure = _draw(
        ok,
        curve[curve["key"].isin(set(ok["key"]))] if len(curve) else curve,
        frame,
        config,
        out_dir / f"{name}.png",
    )
    summary = ok.assign(
        setting=[
            f"{100 * f:g}% random, n={n}" for f, n in zip(ok["label_fraction"], ok["num_train"], strict=True)
        ]
    )
    columns = {
        "train_error": "train error",
        "test_error": "test error",
        "kl_at_pac_bayes_sigma": "KL at PB sigma",
        "pac_bayes_sigma": "PB sigma",
        "hutchinson_trace": "trace",
        "lanczos_top_eigenvalue": "lambda_max",
        "hochreiter_box": "flat box (bits)",
    }
    table = common.table_from(summary, "setting", columns) if len(summary) else (["setting"], [])
    return StudyOutput(frame, figure, table, (result,))


def finding(ok: Any, frame: Any) -> str:
    """The caption's statement of the numbers (whatever they are)."""
    from scipy.stats import kendalltau

    if ok.empty:
        return f"None of the {len(frame)} models reached the target loss; nothing to compare."
    n_max = ok["num_train"].max()
    largest = ok[ok["num_train"] == n_max].groupby("label_fraction")
    test = "; ".join(f"{100 * f:g}%: {common.mean_std(100 * g['test_error'])}" for f, g in largest)
    kl = "; ".join(f"{100 * f:g}%: {common.mean_std(g['kl_at_pac_bayes_sigma'])}" for f, g in largest)
    means = ok.groupby(["label_fraction", "num_train"])["kl_at_pac_bayes_sigma"].mean()
    growth = "; ".join(
        f"{100 * f:g}%: x{means[f].iloc[-1] / means[f].iloc[0]:.3g}"
        for f in sorted(ok["label_fraction"].unique())
    )
    taus = []
    for column, label in (
        ("kl_at_pac_bayes_sigma", "KL"),
        ("hutchinson_trace", "trace"),
        ("lanczos_top_eigenvalue", "lambda_max"),
        ("hochreiter_box", "flat-box bits"),
    ):
        tau = kendalltau(ok[column], ok["test_error"]).statistic if len(ok) > 1 else math.nan
        taus.append(f"{label} {tau:+.2f}")
    return (
        f"{len(ok)} of {len(frame)} models reached the target (max training error "
        f"{100 * ok['train_error'].max():.2g}%). Test error (%) at n={n_max} by share of random labels: "
        f"{test}. KL at the PAC-Bayes sigma (nats) at n={n_max}: {kl}; its growth from the smallest to the "
        f"largest n (mean over seeds): {growth}. Kendall tau with the test error "
        f"over the {len(ok)} models: {', '.join(taus)}."
    )


def _draw(ok: Any, curve: Any, frame: Any, config: RandomLabelsConfig, path: Path) -> Path:
    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fractions = sorted(config.label_fractions)
    fig, axes = plt.subplots(2, max(4, len(fractions)), figsize=(20, 9.5), squeeze=False)
    sizes = sorted(config.train_sizes)
    for ax, fraction in zip(axes[0], fractions, strict=False):
        for k, n in enumerate(sizes):
            part = (
                curve[(curve["label_fraction"] == fraction) & (curve["num_train"] == n)]
                if len(curve)
                else curve
            )
            if not len(part):
                continue
            kl = common.seed_summary(part, ["sigma"], "kl")
            sharp = common.seed_summary(part, ["sigma"], "expected_sharpness")
            ax.errorbar(
                kl["mean"],
                sharp["mean"],
                xerr=kl["std"],
                yerr=sharp["std"],
                marker="o",
                markersize=3,
                capsize=2,
                color=f"C{k}",
                label=f"n = {n}",
            )
            if k == 0:  # the sigma of each point, once per panel
                for x, y, sigma in zip(kl["mean"], sharp["mean"], kl["sigma"], strict=True):
                    ax.annotate(
                        f"sigma={sigma:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points"
                    )
            pb = ok[(ok["label_fraction"] == fraction) & (ok["num_train"] == n)]
            ax.scatter(
                pb["kl_at_pac_bayes_sigma"],
                pb["expected_sharpness_kl"],
                marker="*",
                s=60,
                color=f"C{k}",
                edgecolor="k",
                linewidth=0.4,
                zorder=3,
            )
        ax.set_xscale("log")
        ax.set_yscale("log", nonpositive="mask")
        ax.set_title(f"{100 * fraction:g}% random labels", fontsize=10)
        ax.set_xlabel("KL = ||w||^2 / (2 sigma^2) (nats)")
        ax.set_ylabel("expected sharpness E[L(w+u)] - L(w) (nats)")
        ax.grid(linewidth=0.3)
        ax.legend(fontsize=7, title="curve: sigma grid; star: PAC-Bayes sigma", title_fontsize=7)
    for ax in axes[0][len(fractions) :]:
        ax.axis("off")
    panels = (
        ("test_error", "test error (%)", 100.0, False),
        ("kl_at_pac_bayes_sigma", "KL at the PAC-Bayes sigma (nats)", 1.0, True),
        ("hutchinson_trace", "Hessian trace (Hutchinson)", 1.0, True),
        ("lanczos_top_eigenvalue", "Hessian lambda_max (Lanczos)", 1.0, True),
    )
    for ax, (column, label, scale, log) in zip(axes[1], panels, strict=False):
        if len(ok):
            common.errorbar_lines(
                ax, ok.assign(value=scale * ok[column]), "label_fraction", "value", "num_train", label="n = "
            )
        if column == "test_error":
            ax.axhline(90.0, color="gray", linestyle=":", linewidth=1, label="chance (90%)")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("share of training labels randomized")
        ax.set_ylabel(label)
        ax.grid(linewidth=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Random labels on digits: MLP {list(config.hidden)} trained to training cross-entropy <= "
        f"{config.target_loss:g} (Zhang et al. 2017; Neyshabur et al. 2017, Fig. 3); mean ± std over seeds"
    )
    text = (
        "Zero-centred prior; L = training cross-entropy on the (partly random) training labels; "
        f"{config.sharpness_samples} Monte Carlo draws per sigma; points with non-positive mean sharpness "
        f"are not drawn on the log axis. {finding(ok, frame)}"
    )
    return common.finish_captioned(fig, common.caption(config, text), path)
