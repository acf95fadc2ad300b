"""Reparameterization (Dinh et al. 2017): rescaling ReLU layers moves the Hessian, not the function.

One MLP is trained on digits (float64); for every alpha in a log grid, layer 1 is scaled by alpha and
layer 2 by 1/alpha (``rescale_layers``). The function is unchanged (max |output difference| is reported),
while the Hessian becomes T^{-1} H T^{-1}, T = diag(alpha I_1, alpha^{-1} I_2, I):

* trace: tr H' = tr H_11 / alpha^2 + alpha^2 tr H_22 + tr H_rest exactly (reported with the measured
  exact trace of H');
* top eigenvalue: lambda_max(H') / lambda_max(H) in [min(alpha^2, alpha^-2), max(alpha^2, alpha^-2)]
  (Ostrowski's theorem);
* magnitude-aware measures are invariant: adaptive worst-case sharpness (ASAM's ball, eta = 0), the
  magnitude-aware PAC-Bayes sigma (epsilon = 0) and the path norm; plain worst-case sharpness, the plain
  PAC-Bayes sigma and Keskar's epsilon-sharpness (box |y_i| <= eps(|x_i| + 1)) are not.

Every measure uses the same generator seed at every alpha, so differences come from the rescaling alone.

References:
    L. Dinh, R. Pascanu, S. Bengio, Y. Bengio. Sharp minima can generalize for deep nets. ICML 2017.
    J. Kwon et al. ASAM: adaptive sharpness-aware minimization. ICML 2021.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.curvature import exact_trace, lanczos_eigenvalues, measure
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.study import StudyOutput, progress_bar
from flatminima.networks import evaluate, rescale_layers
from flatminima.random import make_generator

INVARIANT = ("adaptive_worst_case_sharpness", "magnitude_pac_bayes_sigma", "path_norm")
VARIANT = ("worst_case_sharpness", "pac_bayes_sigma", "epsilon_sharpness")


@dataclasses.dataclass(frozen=True)
class DinhConfig:
    """Hyperparameters of the study (see the module)."""

    seed: int = 0
    hidden: tuple[int, ...] = (16,)
    alphas: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    learning_rate: float = 0.1
    batch_size: int = 32
    target_loss: float = 0.02
    max_epochs: int = 2000
    num_train: int | None = None

    def __post_init__(self) -> None:
        check_int_in_range("seed", self.seed, low=0)
        if 1.0 not in self.alphas:
            raise ConfigurationError(f"alphas must contain 1.0 (the reference); got alphas={self.alphas}.")
        for alpha in self.alphas:
            check_real("alphas[i]", alpha, low=0.0, low_open=True)
        if len(self.hidden) < 1:
            raise ConfigurationError("hidden must have at least one layer to rescale; got hidden=().")


QUICK = DinhConfig(alphas=(0.01, 0.1, 1.0, 10.0, 100.0), num_train=500, target_loss=0.05)
FULL = DinhConfig()


def run(
    config: DinhConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train once, rescale for every alpha, measure, draw; see the module."""
    import pandas

    data = common.digits(config.seed, config.num_train)
    _, result = common.train_digits(
        data,
        config.seed,
        hidden=config.hidden,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        target_loss=config.target_loss,
        max_epochs=config.max_epochs,
    )
    model = result.model
    reference = common.hessian(model, data)
    blocks = {
        "first": float(exact_trace(reference.select("0.weight", "0.bias"))),
        "second": float(exact_trace(reference.select("2.weight"))),
    }
    blocks["rest"] = float(exact_trace(reference)) - blocks["first"] - blocks["second"]
    options: dict[str, dict[str, Any]] = {
        "adaptive_worst_case_sharpness": {"radius": 0.05, "eta": 0.0},
        "magnitude_pac_bayes_sigma": {"epsilon": 0.0, "num_bisections": 10},
        "worst_case_sharpness": {"radius": 0.05},
        "pac_bayes_sigma": {"num_bisections": 10},
        "epsilon_sharpness": {"epsilon": 1e-3},
    }
    rows = []
    with progress_bar(sweep, len(config.alphas), progress) as bar:
        for alpha in config.alphas:
            scaled = rescale_layers(model, 0, alpha)
            op = common.hessian(scaled, data)
            with torch.no_grad():
                difference = float((scaled(data.x_train) - model(data.x_train)).abs().max())
            top = lanczos_eigenvalues(op, 1, generator=make_generator(config.seed), tol=1e-10)
            table = measure(
                op, [*INVARIANT, *VARIANT], generator=make_generator(config.seed), options=options
            )
            row: dict[str, Any] = {"alpha": alpha, "max_output_difference": difference}
            row.update(evaluate(scaled, data))
            row["top_eigenvalue"] = float(top.eigenvalues[0])
            row["trace"] = float(exact_trace(op))
            row["predicted_trace"] = blocks["first"] / alpha**2 + blocks["second"] * alpha**2 + blocks["rest"]
            row.update({record.name: record.value for record in table})
            rows.append(row)
            bar.advance(failed=False)
    frame = pandas.DataFrame(rows)
    base = frame[frame["alpha"] == 1.0].iloc[0]
    frame["top_eigenvalue_ratio"] = frame["top_eigenvalue"] / base["top_eigenvalue"]
    frame["ratio_low"] = [min(a**2, a**-2) for a in frame["alpha"]]
    frame["ratio_high"] = [max(a**2, a**-2) for a in frame["alpha"]]
    for column in (*INVARIANT, *VARIANT, "trace"):
        frame[f"{column}_ratio"] = frame[column] / base[column]
    figure = _draw(frame, config, out_dir / f"{name}.png")
    headers = ["alpha", "max |f' - f|", "lambda_max ratio", "allowed range", "trace", "predicted trace"]
    headers += [f"{c} ratio" for c in (*INVARIANT, *VARIANT)]
    rows_out = [
        [
            f"{r.alpha:g}",
            f"{r.max_output_difference:.1e}",
            f"{r.top_eigenvalue_ratio:.4g}",
            f"[{r.ratio_low:.3g}, {r.ratio_high:.3g}]",
            f"{r.trace:.6g}",
            f"{r.predicted_trace:.6g}",
            *[f"{getattr(r, c + '_ratio'):.6g}" for c in (*INVARIANT, *VARIANT)],
        ]
        for r in frame.itertuples()
    ]
    return StudyOutput(frame, figure, (headers, rows_out))


def _draw(frame: Any, config: DinhConfig, path: Path) -> Path:
    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.2))
    ax = axes[0]
    ax.fill_between(
        frame["alpha"], frame["ratio_low"], frame["ratio_high"], alpha=0.15, label="Ostrowski range"
    )
    ax.plot(frame["alpha"], frame["top_eigenvalue_ratio"], "o-", label="lambda_max ratio")
    ax.plot(frame["alpha"], frame["trace_ratio"], "s-", label="trace ratio (exact)")
    ax.plot(
        frame["alpha"],
        frame["predicted_trace"] / frame["trace"].iloc[list(frame["alpha"]).index(1.0)],
        "k:",
        label="predicted trace ratio",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("alpha (layer 1 x alpha, layer 2 / alpha)")
    ax.set_ylabel("value / value at alpha = 1")
    ax.set_title("Hessian measures change (function identical)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax = axes[1]
    zeros = []
    for k, column in enumerate((*INVARIANT, *VARIANT)):
        ratio = frame[f"{column}_ratio"]
        zeros += list(frame["alpha"][ratio <= 0])
        if column in INVARIANT:  # the invariant ones coincide at 1: shrinking markers keep each visible
            ax.plot(frame["alpha"], ratio.where(ratio > 0), "o-", markersize=9 - 3 * k, label=column)
        else:
            ax.plot(frame["alpha"], ratio.where(ratio > 0), "x--", label=column)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if zeros:  # a ratio of 0 has no place on a log axis: marked at the bottom edge
        ax.plot(
            zeros,
            [0.0] * len(zeros),
            "kv",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label="ratio 0 (sigma below the bisection resolution)",
        )
    ax.set_xlabel("alpha (layer 1 x alpha, layer 2 / alpha)")
    ax.set_ylabel("measure / measure at alpha = 1")
    ax.set_title("flatness measures (solid: magnitude-aware, dashed: not)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Dinh et al. (2017) rescaling of a digits MLP")
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    text = (
        f"max |output difference| over alphas = {frame['max_output_difference'].max():.1e} (float64). "
        "Worst-case sharpness radius 0.05 (10 ascent steps), ASAM eta = 0; PAC-Bayes sigma for a 0.1 "
        "cross-entropy increase, 10 draws, 10 bisections, magnitude-aware epsilon = 0; Keskar eps = 1e-3."
    )
    return common.finish(fig, common.caption(config, text), path)
