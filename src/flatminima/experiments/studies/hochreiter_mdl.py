"""Description length of small- and large-batch minima (Hochreiter and Schmidhuber 1997) on digits.

Question: Hochreiter and Schmidhuber argue that a flat minimum, around which a large box of weights keeps
the training loss within a tolerance, is a simple network, because each weight need only be given to
within its box: fewer bits, better generalization (minimum description length). Do the minima reached
by small-batch SGD have a shorter description than those of large-batch SGD (Keskar et al.'s sharp
minima), and does the description length follow the test error?

Method: for every seed, the same MLP (same initialization) is trained by SGD with a small and a large
batch at one learning rate until the training cross-entropy is <= ``target_loss`` (the same loss for
both; the settings of :class:`~flatminima.experiments.studies._common.BatchRegimes`). At each solution
:func:`flatminima.curvature.flat_box` finds the largest axis-aligned box of half-widths dw_i with
training cross-entropy <= L(w) + ``epsilon`` (bracketing and bisection along each axis, a joint
shrinking checked on random corners and interior points, then a verification on fresh points whose
violating fraction is reported with its standard error), and reports

    description length = -sum_i log2 dw_i  bits   (H&S's B(w) without its constant; precision 1),

for each granularity in ``granularities``: "tensor" (one half-width per parameter tensor, cheap) and
"coordinate" (one per weight, as in the paper; about 2 n (log2 steps + bisections) loss evaluations).
The bits are also split per tensor. Hessian trace and top eigenvalue are measured for comparison, with
the test error. Nothing is tuned; the caption reports the paired differences whatever their sign.

Each (seed, regime) is one trial of the SQLite store, so an interrupted run resumes.

References:
    S. Hochreiter, J. Schmidhuber. Flat minima. Neural Computation 9(1), 1-42, 1997.
    N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang. On large-batch training for
    deep learning: generalization gap and sharp minima. ICLR 2017.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.curvature import flat_box
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies._stored_trials import make_trial, records_frame, run_units
from flatminima.experiments.study import StudyOutput
from flatminima.networks import evaluate, parameter_count

GRANULARITIES = ("tensor", "coordinate")


@dataclasses.dataclass(frozen=True)
class HochreiterConfig(common.BatchRegimes):
    """The seeds, the flat-box settings and the training settings of ``BatchRegimes`` (see the module)."""

    hidden: tuple[int, ...] = (16,)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epsilon: float = 0.01
    granularities: tuple[str, ...] = ("tensor", "coordinate")
    num_bisections: int = 10
    num_directions: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        common.check_grid("hidden", self.hidden, check_int_in_range, low=1)
        check_real("epsilon", self.epsilon, low=0.0, low_open=True)
        if not self.granularities or any(g not in GRANULARITIES for g in self.granularities):
            raise ConfigurationError(
                f"granularities must be a non-empty subset of {GRANULARITIES}; got granularities="
                f"{self.granularities!r}."
            )
        check_int_in_range("num_bisections", self.num_bisections, low=1)
        check_int_in_range("num_directions", self.num_directions, low=1)


QUICK = HochreiterConfig(
    seeds=(0, 1, 2, 3, 4), target_loss=0.03, num_train=600, large_batch=300, granularities=("tensor",)
)
FULL = HochreiterConfig()


def train_and_measure(config: HochreiterConfig, seed: int, batch_size: int) -> dict[str, Any]:
    """Train one (seed, regime) and measure its flat boxes, curvature and errors."""
    data = common.digits(seed, config.num_train)
    config.regimes(data)  # raises if the large batch exceeds the training set
    result = config.train(data, seed, batch_size)
    metrics: dict[str, Any] = {"reached_target": result.reached_target, "diverged": result.diverged}
    metrics.update(epochs=result.epochs, steps=result.steps, num_parameters=parameter_count(result.model))
    if result.diverged:
        return metrics
    metrics.update(evaluate(result.model, data))
    op = common.hessian(result.model, data)
    generator = common.streams(seed)["measure"]
    metrics.update(common.curvature(op, generator))
    for granularity in config.granularities:
        box = flat_box(
            op,
            config.epsilon,
            granularity=granularity,
            num_bisections=config.num_bisections,
            num_directions=config.num_directions,
            generator=generator,
        )
        per_tensor = op.unflatten(-torch.log2(box.half_widths.to(torch.float64)))
        metrics.update(
            {
                f"bits_{granularity}": box.description_length_bits,
                f"log_volume_{granularity}": box.log_volume,
                f"scale_{granularity}": box.scale,
                f"saturated_{granularity}": box.num_saturated,
                f"violation_{granularity}": box.violation_fraction,
                f"violation_stderr_{granularity}": box.violation_stderr,
                f"evaluations_{granularity}": box.num_loss_evaluations,
                f"tensor_bits_{granularity}": {k: float(v.sum()) for k, v in per_tensor.items()},
            }
        )
    return metrics


def run(
    config: HochreiterConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train both regimes per seed (resuming from the store), measure the boxes, draw; see the module."""
    import pandas

    sizes = {
        regime: batch for regime, batch in config.regimes(common.digits(config.seeds[0], config.num_train))
    }
    training = {
        f: getattr(config, f) for f in ("hidden", "learning_rate", "target_loss", "max_epochs", "num_train")
    }
    box = {f: getattr(config, f) for f in ("epsilon", "num_bisections", "num_directions")}
    trials = []
    for seed in config.seeds:
        for regime, batch in sizes.items():
            params = {"seed": seed, "regime": regime, "batch_size": batch, **training}
            options = {**box, "granularities": list(config.granularities)}
            cell = {"regime": regime}
            trial = make_trial(sweep, "digits", params, method="sgd", seed=seed, cell=cell, options=options)
            trials.append((trial, functools.partial(train_and_measure, config, seed, batch)))
    records, result = run_units(trials, name=name, sweep=sweep, config=config, store=store, progress=progress)
    frame = records_frame(records, ("seed", "regime", "batch_size"), key=True)
    layers = []
    for row in frame.to_dict("records"):
        for granularity in config.granularities:
            bits = row.get(f"tensor_bits_{granularity}")
            if isinstance(bits, dict):
                for tensor, value in bits.items():
                    layers.append(
                        {
                            "seed": row["seed"],
                            "regime": row["regime"],
                            "granularity": granularity,
                            "tensor": tensor,
                            "bits": value,
                        }
                    )
    layer_frame = pandas.DataFrame(layers)
    layer_frame.to_csv(out_dir / f"{name}_tensors.csv", index=False)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("tensor_bits_")])
    ok = (
        frame[(frame["status"] == "ok") & frame.get("reached_target", False).astype(bool)]
        if len(frame)
        else frame
    )
    figure = _draw(ok, layer_frame, frame, config, out_dir / f"{name}.png")
    columns = {"test_error": "test error", "gap_error": "gap (0-1)"}
    for granularity in config.granularities:
        columns[f"bits_{granularity}"] = f"bits ({granularity})"
        columns[f"violation_{granularity}"] = f"violations ({granularity})"
    columns.update(top_eigenvalue="lambda_max", trace="trace")
    table = common.table_from(ok, "regime", columns) if len(ok) else (["regime"], [])
    return StudyOutput(frame, figure, table, (result,))


def paired(ok: Any, column: str) -> tuple[Any, Any]:
    """Per seed with both regimes: large minus small of ``column`` (a Series indexed by seed)."""
    wide = ok.pivot_table(index="seed", columns="regime", values=column)
    wide = wide.dropna(subset=[r for r in ("small", "large") if r in wide])
    if not {"small", "large"} <= set(wide.columns):
        return wide.iloc[0:0], wide
    return wide["large"] - wide["small"], wide


def finding(ok: Any, frame: Any, config: HochreiterConfig) -> str:
    """The caption's statement of the numbers (whatever they are)."""
    from scipy.stats import kendalltau

    if ok.empty:
        return f"None of the {len(frame)} models reached the target loss; nothing to compare."
    parts = [f"{len(ok)} of {len(frame)} models reached the target."]
    error, _ = paired(ok, "test_error")
    if len(error):
        parts.append(
            f"Test error large - small batch: {common.mean_std(100 * error)} points "
            f"(large worse in {int((error > 0).sum())} of {len(error)} seeds)."
        )
    for granularity in config.granularities:
        column = f"bits_{granularity}"
        diff, wide = paired(ok, column)
        tau = kendalltau(ok[column], ok["test_error"]).statistic if len(ok) > 1 else math.nan
        if len(diff):
            parts.append(
                f"{granularity} boxes: small {common.mean_std(wide['small'])} bits, large "
                f"{common.mean_std(wide['large'])} bits; large - small {common.mean_std(diff)} bits, "
                f"longer for large batch in {int((diff > 0).sum())} of {len(diff)} seeds; Kendall tau "
                f"of bits with test error {tau:+.2f}; max violating fraction "
                f"{ok[f'violation_{granularity}'].max():.3g}."
            )
    return " ".join(parts)


def _draw(ok: Any, layers: Any, frame: Any, config: HochreiterConfig, path: Path) -> Path:
    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    grans = list(config.granularities)
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.8))
    markers = {"tensor": "o", "coordinate": "s"}
    for g, granularity in enumerate(grans):
        column = f"bits_{granularity}"
        _, wide = paired(ok, column) if len(ok) else (None, None)
        for k, regime in enumerate(("small", "large") if len(ok) else ()):
            values = ok.loc[ok["regime"] == regime, column]
            x = 2 * g + k
            axes[0].scatter([x] * len(values), values, s=14, color=f"C{k}", alpha=0.6)
            if len(values):
                axes[0].errorbar(
                    x,
                    values.mean(),
                    yerr=values.std(ddof=1) if len(values) > 1 else 0,
                    fmt="_",
                    capsize=5,
                    color=f"C{k}",
                    markersize=14,
                    label=f"{regime} batch" if g == 0 else None,
                )
        if wide is not None and {"small", "large"} <= set(wide.columns):
            for _, pair in wide.iterrows():
                axes[0].plot([2 * g, 2 * g + 1], [pair["small"], pair["large"]], color="gray", linewidth=0.6)
        for k, regime in enumerate(("small", "large")):
            part = ok[ok["regime"] == regime] if len(ok) else ok
            if len(part):
                axes[1].scatter(
                    part[column],
                    100 * part["test_error"],
                    color=f"C{k}",
                    marker=markers[granularity],
                    label=f"{regime} batch, {granularity}",
                )
    axes[0].set_xticks(range(2 * len(grans)))
    axes[0].set_xticklabels([f"{r}\n{g}" for g in grans for r in ("small", "large")], fontsize=8)
    axes[0].set_xlabel("regime / box granularity (lines: same seed)")
    axes[0].set_ylabel("description length -sum log2 dw_i (bits)")
    axes[0].set_title("flat-box description length (every seed, mean ± std)", fontsize=10)
    axes[1].set_xlabel("description length (bits)")
    axes[1].set_ylabel("test error (%)")
    axes[1].set_title("test error against description length", fontsize=10)
    finest = grans[-1]
    part = layers[layers["granularity"] == finest] if len(layers) else layers
    if len(part):
        part = part[part.set_index(["seed", "regime"]).index.isin(ok.set_index(["seed", "regime"]).index)]
        tensors = list(dict.fromkeys(part["tensor"]))
        for k, regime in enumerate(("small", "large")):
            stats = common.seed_summary(part[part["regime"] == regime], ["tensor"], "bits").set_index(
                "tensor"
            )
            stats = stats.reindex(tensors)
            axes[2].bar(
                [i + (k - 0.5) * 0.4 for i in range(len(tensors))],
                stats["mean"],
                width=0.4,
                yerr=stats["std"],
                capsize=3,
                color=f"C{k}",
                label=f"{regime} batch",
            )
        axes[2].set_xticks(range(len(tensors)))
        axes[2].set_xticklabels(tensors, fontsize=8, rotation=20)
    axes[2].set_xlabel(f"parameter tensor ({finest} boxes)")
    axes[2].set_ylabel("bits (-sum log2 dw_i over the tensor)")
    axes[2].set_title("description length per tensor (mean ± std)", fontsize=10)
    for k, regime in enumerate(("small", "large")):
        part = ok[ok["regime"] == regime] if len(ok) else ok
        for i, column in enumerate(("top_eigenvalue", "trace")):
            if len(part):
                axes[3].errorbar(
                    i + (k - 0.5) * 0.3,
                    part[column].mean(),
                    yerr=part[column].std(ddof=1) if len(part) > 1 else 0,
                    fmt="o",
                    capsize=4,
                    color=f"C{k}",
                    label=f"{regime} batch" if i == 0 else None,
                )
                axes[3].scatter(
                    [i + (k - 0.5) * 0.3] * len(part), part[column], s=10, color=f"C{k}", alpha=0.5
                )
    axes[3].set_xticks([0, 1])
    axes[3].set_xticklabels(["lambda_max (Lanczos)", "trace (Hutchinson)"])
    axes[3].set_yscale("log")
    axes[3].set_xlabel("Hessian measure")
    axes[3].set_ylabel("value (log scale)")
    axes[3].set_title("Hessian at the same minima (mean ± std)", fontsize=10)
    for ax in axes:
        ax.grid(linewidth=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "Flat minima as short descriptions (Hochreiter & Schmidhuber 1997): MLP "
        f"{list(config.hidden)} on digits, batch {config.small_batch} vs {config.large_batch}, "
        f"tolerance eps = {config.epsilon:g} nats"
    )
    text = (
        "Box: training cross-entropy <= L(w) + eps on every axis (bisection), the joint scale checked on "
        "random corners and interior points, then verified on fresh points. " + finding(ok, frame, config)
    )
    return common.finish_captioned(fig, common.caption(config, text), path)
