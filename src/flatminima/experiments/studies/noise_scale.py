"""Noise scale (Jastrzebski et al. 2018): final sharpness and test accuracy against learning rate / batch.

SGD's gradient noise has covariance ~ (eta / B) C at step size eta and batch size B, so Jastrzebski et
al. predict that the ratio eta / B, not eta and B separately, sets the width of the minima SGD ends in:
larger ratios give flatter minima (smaller top Hessian eigenvalue) and, in their experiments, better
test accuracy. Here one MLP per (eta, B, seed) is trained on digits for a fixed number of epochs (the
same budget in epochs for every setting, as in the paper), and at the final point we report the top
Hessian eigenvalue (Lanczos), the Hessian trace (Hutchinson), train/test accuracy and loss; the summary
gives Kendall's tau of each against log(eta / B) (scipy), over all runs. No setting is tuned.

References:
    S. Jastrzebski, Z. Kenton, D. Arpit, N. Ballas, A. Fischer, Y. Bengio, A. Storkey. Three factors
    influencing minima in SGD. ICANN 2018 (arXiv:1711.04623).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.study import StudyOutput, progress_bar
from flatminima.networks import evaluate


@dataclasses.dataclass(frozen=True)
class NoiseScaleConfig:
    """Hyperparameters of the study (see the module)."""

    learning_rates: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    seeds: tuple[int, ...] = (0, 1, 2)
    hidden: tuple[int, ...] = (32,)
    epochs: int = 60
    num_train: int | None = None

    def __post_init__(self) -> None:
        common.check_grid("learning_rates", self.learning_rates, check_real, low=0.0, low_open=True)
        common.check_grid("batch_sizes", self.batch_sizes, check_int_in_range, low=1)
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        check_int_in_range("epochs", self.epochs, low=1)


QUICK = NoiseScaleConfig(
    learning_rates=(0.02, 0.2), batch_sizes=(16, 128), seeds=(0,), epochs=15, num_train=600
)
FULL = NoiseScaleConfig()


def run(
    config: NoiseScaleConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train every (eta, B, seed) for a fixed epoch budget, measure, draw; see the module."""
    import pandas
    from scipy.stats import kendalltau

    settings = list(itertools.product(config.seeds, config.learning_rates, config.batch_sizes))
    rows = []
    with progress_bar(sweep, len(settings), progress) as bar:
        for seed, lr, batch in settings:
            data = common.digits(seed, config.num_train)
            if batch > data.num_train:
                raise ConfigurationError(
                    f"batch_sizes must be <= the training set size {data.num_train}; got {batch}."
                )
            _, result = common.train_digits(
                data,
                seed,
                hidden=config.hidden,
                learning_rate=lr,
                batch_size=batch,
                target_loss=None,
                max_epochs=config.epochs,
            )
            row: dict[str, Any] = {"seed": seed, "learning_rate": lr, "batch_size": batch}
            row.update(ratio=lr / batch, steps=result.steps, diverged=result.diverged)
            if not result.diverged:
                row.update(evaluate(result.model, data))
                op = common.hessian(result.model, data)
                row.update(common.curvature(op, common.streams(seed)["measure"]))
            rows.append(row)
            bar.advance(failed=result.diverged)
    frame = pandas.DataFrame(rows)
    frame["test_accuracy"] = 1.0 - frame.get("test_error", math.nan)
    ok = frame[~frame["diverged"]]
    headers = ["quantity", "Kendall tau with log(eta/B)", "p-value", "runs"]
    table_rows = []
    for column in ("top_eigenvalue", "trace", "test_accuracy", "train_loss", "gap_error"):
        tau = kendalltau(ok["ratio"], ok[column]) if len(ok) > 1 else None
        table_rows.append(
            [
                column,
                common.fmt(float(tau.statistic)) if tau else "-",
                common.fmt(float(tau.pvalue)) if tau else "-",
                str(len(ok)),
            ]
        )
    figure = _draw(frame, config, out_dir / f"{name}.png")
    return StudyOutput(frame, figure, (headers, table_rows))


def _draw(frame: Any, config: NoiseScaleConfig, path: Path) -> Path:
    import numpy
    from matplotlib.ticker import NullFormatter

    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ok = frame[~frame["diverged"]]
    for k, batch in enumerate(config.batch_sizes):
        group = ok[ok["batch_size"] == batch]
        for ax, column in zip(axes, ("top_eigenvalue", "trace", "test_accuracy"), strict=True):
            ax.scatter(group["ratio"], group[column], color=f"C{k}", label=f"B = {batch}", s=18)
    labels = {
        "top_eigenvalue": ("top Hessian eigenvalue (Lanczos)", "lambda_max (log scale)"),
        "trace": ("Hessian trace (Hutchinson)", "trace (log scale)"),
        "test_accuracy": ("test accuracy", "test accuracy"),
    }
    ratios = numpy.log10(frame["ratio"].to_numpy(dtype=float))
    decades = (10.0 ** numpy.floor(ratios.min() - 1e-9), 10.0 ** numpy.ceil(ratios.max() + 1e-9))
    for ax, column in zip(axes, labels, strict=True):
        ax.set_xscale("log")
        ax.set_xlim(*decades)  # whole decades: labelled major ticks, no crowded minor labels
        ax.xaxis.set_minor_formatter(NullFormatter())
        if column != "test_accuracy":
            ax.set_yscale("log")
        ax.set_xlabel("learning rate / batch size (eta / B)")
        ax.set_ylabel(labels[column][1])
        ax.set_title(labels[column][0], fontsize=10)
        ax.legend(fontsize=8)
    diverged = int(frame["diverged"].sum())
    fig.suptitle("Noise scale (Jastrzebski et al. 2018): final sharpness and test accuracy vs eta / B")
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    text = (
        f"Plain SGD for {config.epochs} epochs at every setting; {diverged} diverged run(s) omitted. "
        "lambda_max by Lanczos, trace by Hutchinson (100 probes), at the final point, training loss."
    )
    return common.finish(fig, common.caption(config, text), path)
