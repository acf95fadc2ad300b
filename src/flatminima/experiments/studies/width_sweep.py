"""Width sweep (Neyshabur, Tomioka and Srebro 2015): test error and flatness against hidden width.

Question: once a network fits its training set, does making it wider hurt (as parameter counting would
say), and which flatness or capacity measures move the way the test error does?

Method: one-hidden-layer ReLU MLPs of each width in ``widths`` are trained on digits by SGD (no explicit
regularization, as in the paper) until the training cross-entropy is <= ``target_loss`` (training
error ~0) or ``max_epochs`` pass, for every seed. At each solution we measure, with
:func:`flatminima.curvature.measure`, the Hessian trace (Hutchinson) and top eigenvalue (Lanczos), the
PAC-Bayes flatness 1/sigma^2 (sigma for a 0.1 increase of training cross-entropy), the expected sharpness
E[L(w + u)] - L(w), u ~ N(0, sigma^2 I) at the fixed ``sharpness_sigma``, Hochreiter and Schmidhuber's
flat-box description length (one half-width per tensor; also per parameter), the path norm and the two
VC-dimension bounds (Bartlett et al. 2019; Harvey et al. 2017), with ||w||^2 and ||w - w0||^2. The
figure shows every quantity against width as mean ± std over seeds; models that miss the target are
drawn in the error panel only and left out of the measures and of the Kendall taus (each measure
against the test error, and against width) that the caption reports. Nothing is tuned.

Each model is one trial of the SQLite store, so an interrupted run resumes.

References:
    B. Neyshabur, R. Tomioka, N. Srebro. In search of the real inductive bias: on the role of implicit
    regularization in deep learning. ICLR 2015 workshop (arXiv:1412.6614), Figure 1.
    S. Hochreiter, J. Schmidhuber. Flat minima. Neural Computation 9(1), 1997.
    P. L. Bartlett, N. Harvey, C. Liaw, A. Mehrabian. Nearly-tight VC-dimension and pseudodimension
    bounds for piecewise linear neural networks. JMLR 20(63), 2019.
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
from flatminima.curvature import measure
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies._stored_trials import make_trial, records_frame, run_units
from flatminima.experiments.study import StudyOutput
from flatminima.networks import evaluate, parameter_count

MEASURES = (
    "hutchinson_trace",
    "lanczos_top_eigenvalue",
    "pac_bayes_flatness",
    "expected_sharpness_kl",
    "hochreiter_box",
    "path_norm",
    "vc_bartlett2019",
    "vc_harvey2017",
)
#: the flat box: tolerance 0.01 nats, one half-width per tensor, 8 bisections (2^-8 relative precision).
BOX_OPTIONS: dict[str, Any] = {"epsilon": 0.01, "granularity": "tensor", "num_bisections": 8}
#: (column, axis label, log scale) of every measure panel, in figure order.
PANELS = (
    ("hutchinson_trace", "Hessian trace (Hutchinson)", True),
    ("lanczos_top_eigenvalue", "Hessian lambda_max (Lanczos)", True),
    ("pac_bayes_flatness", "PAC-Bayes flatness 1/sigma^2", True),
    ("expected_sharpness_kl", "expected sharpness at fixed sigma (nats)", True),
    ("box_bits_per_parameter", "flat-box description length (bits / parameter)", False),
    ("path_norm", "path norm", True),
    ("parameter_norm", "||w||^2", True),
    ("vc_bartlett2019", "VC bound, Bartlett et al. 2019", True),
)


@dataclasses.dataclass(frozen=True)
class WidthSweepConfig:
    """The widths, seeds and training settings (see the module)."""

    widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
    seeds: tuple[int, ...] = (0, 1, 2)
    learning_rate: float = 0.1
    batch_size: int = 32
    target_loss: float = 0.01
    max_epochs: int = 1500
    num_train: int | None = None
    sharpness_sigma: float = 0.05

    def __post_init__(self) -> None:
        common.check_grid("widths", self.widths, check_int_in_range, low=1)
        if len(set(self.widths)) != len(self.widths):
            raise ConfigurationError(f"widths must be distinct; got widths={self.widths}.")
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        check_real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_int_in_range("batch_size", self.batch_size, low=1)
        check_real("target_loss", self.target_loss, low=0.0, low_open=True)
        check_int_in_range("max_epochs", self.max_epochs, low=1)
        if self.num_train is not None:
            check_int_in_range("num_train", self.num_train, low=self.batch_size)
        check_real("sharpness_sigma", self.sharpness_sigma, low=0.0, low_open=True)


QUICK = WidthSweepConfig(widths=(8, 32, 128, 256), seeds=(0, 1), num_train=500)
FULL = WidthSweepConfig()


def train_and_measure(config: WidthSweepConfig, width: int, seed: int) -> dict[str, Any]:
    """Train the MLP of one (width, seed) and compute every measure."""
    data = common.digits(seed, config.num_train)
    if config.batch_size > data.num_train:
        raise ConfigurationError(
            f"batch_size must be <= the training set size {data.num_train}; "
            f"got batch_size={config.batch_size}."
        )
    initial, result = common.train_digits(
        data,
        seed,
        hidden=(width,),
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        target_loss=config.target_loss,
        max_epochs=config.max_epochs,
    )
    metrics: dict[str, Any] = {"reached_target": result.reached_target, "diverged": result.diverged}
    metrics.update(epochs=result.epochs, steps=result.steps, num_parameters=parameter_count(result.model))
    if result.diverged:
        return metrics
    metrics.update(evaluate(result.model, data))
    op = common.hessian(result.model, data)
    options: dict[str, dict[str, Any]] = {
        "lanczos_top_eigenvalue": {"tol": 1e-6},
        "expected_sharpness_kl": {"sigma": config.sharpness_sigma},
        "hochreiter_box": BOX_OPTIONS,
    }
    table = measure(op, MEASURES, generator=common.streams(seed)["measure"], options=options)
    metrics.update({record.name: record.value for record in table})
    metrics["box_bits_per_parameter"] = metrics["hochreiter_box"] / metrics["num_parameters"]
    w = op.point
    w0 = torch.cat([p.detach().reshape(-1) for p in initial.parameters()]).to(w)
    metrics.update(parameter_norm=float(w.square().sum()), distance_from_init=float((w - w0).square().sum()))
    return metrics


def run(
    config: WidthSweepConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train every (width, seed) (resuming from the store), measure, draw; see the module."""
    settings = {
        f: getattr(config, f)
        for f in ("learning_rate", "batch_size", "target_loss", "max_epochs", "num_train")
    }
    options = {"measures": list(MEASURES), "sharpness_sigma": config.sharpness_sigma, "box": BOX_OPTIONS}
    trials = [
        (
            make_trial(
                sweep,
                "digits",
                {"width": w, "seed": s, **settings},
                method="sgd",
                seed=s,
                cell={"width": w},
                options=options,
            ),
            functools.partial(train_and_measure, config, w, s),
        )
        for s, w in itertools.product(config.seeds, config.widths)
    ]
    records, result = run_units(trials, name=name, sweep=sweep, config=config, store=store, progress=progress)
    frame = records_frame(records, ("width", "seed"), key=True)
    ok = common.usable(frame)
    figure = _draw(ok, frame, config, out_dir / f"{name}.png")
    columns = {
        "epochs": "epochs",
        "train_error": "train error",
        "test_error": "test error",
        "hutchinson_trace": "trace",
        "lanczos_top_eigenvalue": "lambda_max",
        "pac_bayes_flatness": "1/sigma^2",
        "box_bits_per_parameter": "box bits/param",
        "path_norm": "path norm",
    }
    table = common.table_from(ok, "width", columns) if len(ok) else (["width"], [])
    return StudyOutput(frame, figure, table, (result,))


def finding(ok: Any, frame: Any) -> str:
    """The caption's statement of the numbers (whatever they are)."""
    from scipy.stats import kendalltau

    if ok.empty:
        return f"None of the {len(frame)} models reached the target loss; nothing to compare."
    by_width = ok.groupby("width")["test_error"]
    first, last = min(by_width.groups), max(by_width.groups)
    mean = 100 * by_width.mean()
    text = (
        f"{len(ok)} of {len(frame)} models reached the target. Test error {mean[first]:.3g}% "
        f"at width {first} and {mean[last]:.3g}% at width {last} (Kendall tau of test "
        f"error with width {_tau(ok['width'], ok['test_error'], kendalltau)})."
    )
    parts = [
        f"{column} {_tau(ok[column], ok['test_error'], kendalltau)} / "
        f"{_tau(ok[column], ok['width'], kendalltau)}"
        for column, _, _ in PANELS
        if column in ok
    ]
    return f"{text} Kendall tau of each measure with test error / with width: {'; '.join(parts)}."


def _tau(x: Any, y: Any, kendalltau: Any) -> str:
    value = float(kendalltau(x, y).statistic) if len(x) > 1 else math.nan
    return f"{value:+.2f}"


def _draw(ok: Any, frame: Any, config: WidthSweepConfig, path: Path) -> Path:
    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, grid = plt.subplots(3, 3, figsize=(16, 13))
    axes = grid.ravel()
    ax = axes[0]
    ran = frame[frame["status"] == "ok"] if len(frame) else frame
    if len(ran) and "test_error" in ran:
        for column, label, color in (
            ("train_error", "train error", "C0"),
            ("test_error", "test error", "C3"),
        ):
            common.errorbar_lines(
                ax, ran.assign(value=100 * ran[column]), "width", "value", label=label, color=color
            )
        missed = ran[~ran["reached_target"].astype(bool)]
        if len(missed):
            ax.scatter(
                missed["width"], 100 * missed["test_error"], marker="x", color="k", label="missed target"
            )
    ax.set_ylabel("error (%)")
    ax.set_title("train and test error (all models)", fontsize=10)
    for ax, (column, label, log) in zip(axes[1:], PANELS, strict=True):
        if len(ok) and column in ok:
            common.errorbar_lines(ax, ok, "width", column, color="C2")
            if column == "vc_bartlett2019":
                common.errorbar_lines(ax, ok, "width", "vc_harvey2017", color="C4")
                ax.legend(["Bartlett et al. 2019", "Harvey et al. 2017 (W U)"], fontsize=8)
                label = "VC-dimension bound"
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("hidden width (units)")
        ax.grid(linewidth=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "Width sweep on digits (Neyshabur, Tomioka & Srebro 2015): one-hidden-layer ReLU MLPs at training "
        f"cross-entropy <= {config.target_loss:g}; mean ± std over seeds {list(config.seeds)}"
    )
    text = (
        f"Expected sharpness at sigma={config.sharpness_sigma:g}; 1/sigma^2 for a 0.1 loss increase; "
        f"flat box with tolerance 0.01, one half-width per tensor. {finding(ok, frame)}"
    )
    return common.finish_captioned(fig, common.caption(config, text), path)
