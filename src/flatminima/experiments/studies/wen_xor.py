"""Do the flattest zero-loss minimizers generalize? Two-layer ReLU MLPs on XOR (Wen, Li & Ma 2023).

Question: among networks that fit the same training set (square loss <= ``target_loss``, every training
point on the right side), reached from many initializations by gradient descent (GD) or by
sharpness-aware minimization (SAM), do the flattest ones (smallest trace or top eigenvalue of the
training-loss Hessian) have the smallest test error, with and without bias terms?

Method: one noise-free XOR training set x ~ U[-1, 1]^2, y = sign(x_1 x_2) (``flatminima.networks.
xor_split``, labels mapped to +-1) of ``num_train`` points and ``num_test`` test points, every input
projected on the unit circle (x / ||x|| keeps the label; Wen et al.'s Boolean inputs all have one norm,
and a network without bias is positively homogeneous, f(t x) = t f(x), so it could not fit +-1 at
different radii). The square loss <= ``target_loss`` stands for "zero training loss". Networks
f(x) = sum_j a_j relu(w_j . x + b_j) + c of width ``width`` (with bias) or f(x) = sum_j a_j relu(w_j . x)
(without), initialized as ``nn.Linear`` (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) times an init scale, are
trained full-batch on L(theta) = (1/n) sum_i (f(x_i) - y_i)^2 by GD, or by SAM (Foret et al.: the step
uses grad L(theta + rho g / ||g||), g = grad L(theta), the same map as ``flatminima.optim.
sam_perturbation``), until L <= ``target_loss`` (each network stops at its own first crossing; those
that never reach it are reported and left out). Every seed trains ``models_per_seed`` networks at once
from its init stream; GD and SAM start from the same initializations. At each solution we compute the
dense Hessian of L (``HessianOperator.from_model``, float64), its trace and top eigenvalue, and the
test error (sign of f). Per bias setting we report Spearman's rho of test error with trace and with
lambda_max (percentile bootstrap 95 % intervals over networks), and where flatness is not sufficient
(test error of the flattest decile against the median) and not necessary (the best-generalizing decile
that is sharper than the median). The numbers are whatever they turn out to be; nothing is tuned.

References:
    K. Wen, Z. Li, T. Ma. Sharpness minimization algorithms do not only minimize sharpness to achieve
    better generalization. NeurIPS 2023.
    P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur. Sharpness-aware minimization for efficiently
    improving generalization. ICLR 2021.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_int_in_range, check_real
from flatminima.curvature import HessianOperator
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies import _study_tools as tools
from flatminima.experiments.studies import _two_layer as two_layer
from flatminima.experiments.studies._stored_trials import Group, make_trial, records_rows, run_groups
from flatminima.experiments.study import StudyOutput
from flatminima.networks import Dataset, xor_split

ALGORITHMS = ("gd", "sam")


@dataclasses.dataclass(frozen=True)
class WenXorConfig:
    """Hyperparameters of the study (see the module)."""

    seeds: tuple[int, ...] = (0, 1, 2, 3)
    models_per_seed: int = 16
    biases: tuple[bool, ...] = (True, False)
    algorithms: tuple[str, ...] = ALGORITHMS
    init_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    width: int = 64
    num_train: int = 24
    num_test: int = 4000
    data_seed: int = 0
    learning_rate: float = 0.02
    rho: float = 0.05
    target_loss: float = 0.01
    max_steps: int = 40000
    sam_steps: int = 20000
    num_resamples: int = 1000

    def __post_init__(self) -> None:
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        if not self.biases or any(not isinstance(b, bool) for b in self.biases):
            raise ConfigurationError(f"biases must hold True and/or False; got biases={self.biases}.")
        if not self.algorithms or any(a not in ALGORITHMS for a in self.algorithms):
            raise ConfigurationError(
                f"algorithms must name some of {', '.join(ALGORITHMS)}; got algorithms={self.algorithms}."
            )
        common.check_grid("init_scales", self.init_scales, check_real, low=0.0, low_open=True)
        check_int_in_range("models_per_seed", self.models_per_seed, low=1)
        check_int_in_range("width", self.width, low=1)
        check_int_in_range("num_train", self.num_train, low=2)
        check_int_in_range("num_test", self.num_test, low=1)
        check_int_in_range("data_seed", self.data_seed, low=0)
        check_real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_real("rho", self.rho, low=0.0)
        check_real("target_loss", self.target_loss, low=0.0, low_open=True)
        check_int_in_range("max_steps", self.max_steps, low=1)
        check_int_in_range("sam_steps", self.sam_steps, low=0, high=self.max_steps, high_name="max_steps")
        check_int_in_range("num_resamples", self.num_resamples, low=10)


QUICK = WenXorConfig(
    seeds=(0,),
    models_per_seed=16,
    init_scales=(1.0, 2.0),
    max_steps=20000,
    sam_steps=10000,
    num_resamples=500,
)
FULL = WenXorConfig(seeds=(0, 1), models_per_seed=32)


def xor_data(config: WenXorConfig) -> tuple[Dataset, torch.Tensor, torch.Tensor]:
    """The XOR split of ``data_seed``, inputs projected on the unit circle, and its +-1 targets."""
    data = xor_split(config.num_train, config.num_test, generator=common.streams(config.data_seed)["split"])
    unit = Dataset(
        nn.functional.normalize(data.x_train, dim=1),
        data.y_train,
        nn.functional.normalize(data.x_test, dim=1),
        data.y_test,
    )
    return unit, 2.0 * data.y_train.double() - 1.0, 2.0 * data.y_test.double() - 1.0


def train_and_measure(
    config: WenXorConfig, bias: bool, algorithm: str, scale: float, seed: int
) -> list[dict[str, Any]]:
    """Train the ``models_per_seed`` networks of one (bias, algorithm, init scale, seed); measure each."""
    data, y_train, y_test = xor_data(config)
    generator = common.streams(seed)["init"]
    start = two_layer.initial_parameters(config.models_per_seed, config.width, bias, scale, generator)
    params, loss, steps = two_layer.train(
        start,
        data.x_train,
        y_train,
        algorithm=algorithm,
        learning_rate=config.learning_rate,
        rho=config.rho,
        target_loss=config.target_loss,
        max_steps=config.max_steps,
        sam_steps=config.sam_steps,
    )
    rows = []
    for index in range(config.models_per_seed):
        model = two_layer.network(params, index)
        with torch.no_grad():
            train_out = model(data.x_train).squeeze(-1)
            test_out = model(data.x_test).squeeze(-1)
        row: dict[str, Any] = {"steps": int(steps[index]), "train_loss": float(loss[index])}
        row["reached_target"] = bool(loss[index] <= config.target_loss)
        row["train_error"] = float((torch.sign(train_out) != y_train).double().mean())
        row["test_error"] = float((torch.sign(test_out) != y_test).double().mean())
        row["test_loss"] = float((test_out - y_test).square().mean())
        row["parameter_norm"] = float(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).norm())
        if row["reached_target"]:
            hessian = HessianOperator.from_model(
                model, two_layer.square_loss, [(data.x_train, y_train)], mode="eval"
            )
            eigenvalues = torch.linalg.eigvalsh(hessian.dense())
            row.update(trace=float(eigenvalues.sum()), top_eigenvalue=float(eigenvalues[-1]))
        else:
            row.update(trace=math.nan, top_eigenvalue=math.nan)
        rows.append(row)
    return rows


def _groups(config: WenXorConfig, sweep: str) -> list[Group]:
    settings = {
        k: getattr(config, k)
        for k in ("width", "num_train", "num_test", "data_seed", "learning_rate", "rho", "target_loss")
    }
    settings.update(
        max_steps=config.max_steps, sam_steps=config.sam_steps, models_per_seed=config.models_per_seed
    )
    groups: list[Group] = []
    for bias in config.biases:
        for scale in config.init_scales:
            for algorithm in config.algorithms:
                for seed in config.seeds:
                    params = {"bias": bias, "init_scale": scale, "algorithm": algorithm}
                    trials = [
                        make_trial(
                            sweep, "xor", params, method=algorithm, seed=seed, options=settings, draw=index
                        )
                        for index in range(config.models_per_seed)
                    ]
                    compute = functools.partial(train_and_measure, config, bias, algorithm, scale, seed)
                    groups.append((trials, compute))
    return groups


def run(
    config: WenXorConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train (resuming from the store), measure, correlate, draw; see the module."""
    import pandas

    records, result = run_groups(
        _groups(config, sweep), sweep=sweep, name=name, config=config, store=store, progress=progress
    )
    frame = pandas.DataFrame(records_rows(records))
    summary = summarize(frame, config)
    summary.to_csv(out_dir / f"{name}_summary.csv", index=False)
    figure = _draw(frame, summary, config, out_dir / f"{name}.png")
    headers = ["bias", "algorithm", "models (used/all)", "rho(trace, test err) [95% CI]"]
    headers += ["rho(lambda_max, test err) [95% CI]", "trace", "test error (%)", "flattest 10%: test err (%)"]
    headers += ["flattest 10% worse than median", "best 10% sharper than median"]
    rows = [
        [
            "yes" if r["bias"] else "no",
            r["algorithm"],
            f"{r['used']}/{r['models']}",
            tools.interval_text(r["rho_trace"], (r["rho_trace_low"], r["rho_trace_high"])),
            tools.interval_text(r["rho_lmax"], (r["rho_lmax_low"], r["rho_lmax_high"])),
            f"{r['trace_mean']:.4g} ± {r['trace_std']:.2g}",
            f"{100 * r['test_error_mean']:.3g} ± {100 * r['test_error_std']:.2g}",
            common.fmt(100 * r["flattest_test_error"]),
            common.fmt(r["flattest_worse_than_median"]),
            common.fmt(r["best_sharper_than_median"]),
        ]
        for _, r in summary.iterrows()
    ]
    return StudyOutput(frame, figure, (headers, rows), (result,))


def used_models(frame: Any) -> Any:
    """The networks that trained without failure and reached the target loss."""
    if not len(frame) or "reached_target" not in frame:
        return frame.iloc[0:0]
    return frame[(frame["status"] == "ok") & frame["reached_target"].fillna(False).astype(bool)]


def summarize(frame: Any, config: WenXorConfig) -> Any:
    """Per bias setting and algorithm ("all": both): rank correlations with CIs and the decile checks.

    ``flattest_worse_than_median``: the share of the flattest decile (by trace) whose test error is above
    the group's median (sharpness not sufficient); ``best_sharper_than_median``: the share of the decile
    with the lowest test error whose trace is above the median (sharpness not necessary).
    """
    import numpy
    import pandas

    used = used_models(frame)
    generator = common.streams(config.data_seed)["measure"]
    rows = []
    for bias in config.biases:
        for algorithm in ("all", *config.algorithms):
            everything = frame[frame["bias"] == bias] if len(frame) else frame
            group = used[used["bias"] == bias]
            if algorithm != "all":
                everything = everything[everything["algorithm"] == algorithm]
                group = group[group["algorithm"] == algorithm]
            row: dict[str, Any] = {"bias": bias, "algorithm": algorithm, "models": len(everything)}
            row["used"] = len(group)
            trace, lmax, error = (group[c].to_numpy(float) for c in ("trace", "top_eigenvalue", "test_error"))
            for label, values in (("trace", trace), ("lmax", lmax)):
                row[f"rho_{label}"] = tools.spearman(values, error)
                low, high = tools.bootstrap_interval(
                    tools.spearman, [values, error], generator=generator, num_resamples=config.num_resamples
                )
                row.update({f"rho_{label}_low": low, f"rho_{label}_high": high})
            row.update(trace_mean=_mean(trace), trace_std=_std(trace), lmax_mean=_mean(lmax))
            row.update(test_error_mean=_mean(error), test_error_std=_std(error))
            decile = max(1, math.ceil(len(group) / 10))
            if len(group):
                median_error, median_trace = float(numpy.median(error)), float(numpy.median(trace))
                flattest = numpy.argsort(trace, kind="stable")[:decile]
                best = numpy.argsort(error, kind="stable")[:decile]
                row["flattest_test_error"] = float(error[flattest].mean())
                row["median_test_error"] = median_error
                row["best_test_error"] = float(error.min())
                row["flattest_worse_than_median"] = float((error[flattest] > median_error).mean())
                row["best_sharper_than_median"] = float((trace[best] > median_trace).mean())
            rows.append(row)
    return pandas.DataFrame(rows)


def _mean(values: Any) -> float:
    return float(values.mean()) if len(values) else math.nan


def _std(values: Any) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def _draw(frame: Any, summary: Any, config: WenXorConfig, path: Path) -> Path:
    import numpy

    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    used = used_models(frame)
    fig, axes = plt.subplots(2, 2, figsize=(14, 10.5))
    markers = dict(zip(config.init_scales, "os^Dvp<>", strict=False))
    for ax, bias in zip(axes[0], (True, False), strict=True):
        group = used[used["bias"] == bias] if bias in config.biases else used.iloc[0:0]
        for k, algorithm in enumerate(config.algorithms):
            for scale in config.init_scales:
                part = group[(group["algorithm"] == algorithm) & (group["init_scale"] == scale)]
                ax.scatter(
                    part["trace"],
                    100 * part["test_error"],
                    s=22,
                    color=f"C{k}",
                    marker=markers.get(scale, "o"),
                    alpha=0.7,
                    label=f"{algorithm.upper()}, init scale {scale:g}",
                )
        if len(group):
            decile = max(1, math.ceil(len(group) / 10))
            cut = numpy.sort(group["trace"].to_numpy(float))[decile - 1]
            ax.axvline(cut, color="k", linestyle="--", linewidth=0.8, label="flattest 10% (left of line)")
            ax.axhline(
                100 * float(group["test_error"].median()),
                color="grey",
                linestyle=":",
                label="median test error",
            )
        row = summary[(summary["bias"] == bias) & (summary["algorithm"] == "all")]
        rho = (
            "-"
            if not len(row)
            else tools.interval_text(
                row["rho_trace"].iloc[0], (row["rho_trace_low"].iloc[0], row["rho_trace_high"].iloc[0])
            )
        )
        ax.set_title(
            f"{'with' if bias else 'without'} bias: Spearman rho(trace, test error) = {rho}", fontsize=10
        )
        ax.set_xlabel("trace of the training-loss Hessian (sum of its eigenvalues)")
        ax.set_ylabel("test error (%)")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.4 * (high - low))  # headroom: the legend sits above the points
        tools.legend(ax, fontsize=7, loc="upper center", ncol=3)
    ax = axes[1][0]
    for k, bias in enumerate(config.biases):
        for j, algorithm in enumerate(config.algorithms):
            part = used[(used["bias"] == bias) & (used["algorithm"] == algorithm)]
            ax.scatter(
                part["top_eigenvalue"],
                100 * part["test_error"],
                s=18,
                color=f"C{2 + k}",
                marker="o^"[j % 2],
                alpha=0.6,
                label=f"{'bias' if bias else 'no bias'}, {algorithm.upper()}",
            )
    ax.set_xlabel("lambda_max of the training-loss Hessian")
    ax.set_ylabel("test error (%)")
    ax.set_title("top eigenvalue against test error, every network", fontsize=10)
    tools.legend(ax, fontsize=7)
    ax = axes[1][1]
    labels = []
    for i, (_, row) in enumerate(summary.iterrows()):
        labels.append(f"{'bias' if row['bias'] else 'no bias'}, {row['algorithm']} (n={row['used']})")
        for k, measure in enumerate(("trace", "lmax")):
            value, low, high = row[f"rho_{measure}"], row[f"rho_{measure}_low"], row[f"rho_{measure}_high"]
            if math.isnan(value):
                continue
            y = i + (k - 0.5) * 0.3
            ax.errorbar(
                value,
                y,
                xerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]],  # percentile CIs may miss rho
                fmt="os"[k],
                color=f"C{k}",
                capsize=3,
                label=("trace" if k == 0 else "lambda_max") if i == 0 else None,
            )
    ax.axvline(0.0, color="k", linewidth=0.6)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Spearman rho with test error (95% bootstrap CI over networks)")
    ax.set_ylabel("bias setting, algorithm (networks used)")
    ax.set_title("does flatter mean better? (rho > 0: flatter networks generalize better)", fontsize=10)
    tools.legend(ax, fontsize=8, title="sharpness measure", title_fontsize=8)
    fig.suptitle("Zero-loss minimizers of two-layer ReLU MLPs on XOR (Wen, Li & Ma 2023)")
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    return common.finish(fig, common.caption(config, _finding(frame, summary)), path)


def _finding(frame: Any, summary: Any) -> str:
    """The caption's statement of what was measured (computed, never hard-coded)."""
    parts = [f"{len(used_models(frame))} of {len(frame)} networks reached the target loss and are shown."]
    for _, row in summary[summary["algorithm"] == "all"].iterrows():
        if not row["used"]:
            continue
        parts.append(
            f"{'With' if row['bias'] else 'Without'} bias: rho(trace, test error) = "
            f"{tools.interval_text(row['rho_trace'], (row['rho_trace_low'], row['rho_trace_high']))}; "
            f"test error best {100 * row['best_test_error']:.3g}%, mean {100 * row['test_error_mean']:.3g}% "
            f"(sd {100 * row['test_error_std']:.2g}); "
            f"flattest decile {100 * row['flattest_test_error']:.3g}% vs median "
            f"{100 * row['median_test_error']:.3g}%; {100 * row['flattest_worse_than_median']:.0f}% of the "
            f"flattest decile are worse than the median (not sufficient), "
            f"{100 * row['best_sharper_than_median']:.0f}% of the best decile are sharper than the median "
            "(not necessary)."
        )
    by_algorithm = summary[summary["algorithm"] != "all"]
    for bias, group in by_algorithm.groupby("bias", sort=False):
        means = ", ".join(
            f"{r['algorithm'].upper()} trace {r['trace_mean']:.3g}, "
            f"test error {100 * r['test_error_mean']:.3g}%"
            for _, r in group.iterrows()
        )
        parts.append(f"{'Bias' if bias else 'No bias'} means: {means}.")
    parts.append("Inputs on the unit circle; square loss; SAM finished by GD after sam_steps.")
    return " ".join(parts)
