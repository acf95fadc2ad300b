"""Spread of the minima reached from random initializations against network size (Choromanska et al. 2015).

Question: for one-hidden-layer networks of growing width, do the test losses of the minima that SGD
reaches from independent random initializations concentrate (a narrower band: smaller standard deviation
and interquartile range), and do they approach the lowest loss found, as Choromanska et al. observed on
MNIST (their Figs. 2-3) in support of the spin-glass picture of the loss surface?

Method: one digits split (``data_seed``; ``num_train`` training images) and, for every width and seed, a
ReLU MLP 64 -> width -> 10 initialized from the seed's init stream and trained by minibatch SGD (constant
learning rate, batch order from the seed's batch stream) on the cross-entropy for a fixed number of
epochs, the same for every width (as in the paper, where every network is trained the same way). For
each network we record the final training and test cross-entropy and 0-1 error. Per width we report the
mean, standard deviation and interquartile range of the test (and training) loss over seeds, with
percentile bootstrap 95 % intervals over seeds, and the gap between the mean and the lowest loss found
at that width ("distance to the best minimum found", a proxy for the global minimum, which is unknown).
Each network is one trial of the SQLite store, so an interrupted run resumes. Whatever the spreads turn
out to be is what the figure and the caption report.

References:
    A. Choromanska, M. Henaff, M. Mathieu, G. Ben Arous, Y. LeCun. The loss surfaces of multilayer
    networks. AISTATS 2015.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies import _study_tools as tools
from flatminima.experiments.studies._stored_trials import Group, make_trial, records_rows, run_groups, single
from flatminima.experiments.study import StudyOutput
from flatminima.networks import Dataset, evaluate


@dataclasses.dataclass(frozen=True)
class ChoromanskaConfig:
    """Hyperparameters of the study (see the module)."""

    widths: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    seeds: tuple[int, ...] = tuple(range(40))
    data_seed: int = 0
    num_train: int | None = None
    learning_rate: float = 0.1
    batch_size: int = 64
    epochs: int = 100
    num_resamples: int = 1000

    def __post_init__(self) -> None:
        common.check_grid("widths", self.widths, check_int_in_range, low=1)
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        if len(self.seeds) < 2:
            raise ConfigurationError(
                f"seeds must name at least two seeds (a spread needs two minima); got seeds={self.seeds}."
            )
        check_int_in_range("data_seed", self.data_seed, low=0)
        if self.num_train is not None:
            check_int_in_range("num_train", self.num_train, low=1)
        check_real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_int_in_range("batch_size", self.batch_size, low=1)
        check_int_in_range("epochs", self.epochs, low=1)
        check_int_in_range("num_resamples", self.num_resamples, low=10)


QUICK = ChoromanskaConfig(widths=(4, 16, 64), seeds=tuple(range(10)), epochs=40, num_resamples=500)
FULL = ChoromanskaConfig()


def digits_split(config: ChoromanskaConfig) -> Dataset:
    """The study's digits split, after checking that ``batch_size`` fits it.

    Raises:
        ConfigurationError: if ``batch_size`` exceeds the training set.
    """
    data = common.digits(config.data_seed, config.num_train)
    if config.batch_size > data.num_train:
        raise ConfigurationError(
            f"batch_size must be <= the training set size {data.num_train}; "
            f"got batch_size={config.batch_size}."
        )
    return data


def train_and_evaluate(config: ChoromanskaConfig, width: int, seed: int) -> dict[str, Any]:
    """Train the network of (width, seed) on the study's split and return its losses and errors."""
    data = digits_split(config)
    _, result = common.train_digits(
        data,
        seed,
        hidden=(width,),
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        target_loss=None,
        max_epochs=config.epochs,
    )
    out: dict[str, Any] = {"epochs": result.epochs, "steps": result.steps, "diverged": result.diverged}
    out.update(evaluate(result.model, data))
    return out


def _groups(config: ChoromanskaConfig, sweep: str) -> list[Group]:
    settings = {
        k: getattr(config, k) for k in ("data_seed", "num_train", "learning_rate", "batch_size", "epochs")
    }
    groups: list[Group] = []
    for width in config.widths:
        for seed in config.seeds:
            trial = make_trial(sweep, "digits", {"width": width}, method="study", seed=seed, options=settings)
            groups.append(([trial], single(train_and_evaluate, config, width, seed)))
    return groups


def _iqr(values: Any) -> float:
    import numpy

    q75, q25 = numpy.percentile(values, [75, 25])
    return float(q75 - q25)


def _std(values: Any) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def _gap(values: Any) -> float:
    return float(values.mean() - values.min())


STATISTICS = {"std": _std, "iqr": _iqr, "gap": _gap}


def spreads(frame: Any, config: ChoromanskaConfig) -> Any:
    """Per width and split (test, train): mean, min, std, IQR and mean - min with bootstrap intervals."""
    import numpy
    import pandas

    generator = common.streams(config.data_seed)["measure"]
    ok = (
        frame[(frame["status"] == "ok") & ~frame["diverged"].fillna(True).astype(bool)]
        if len(frame)
        else frame
    )
    rows = []
    for width in config.widths:
        group = ok[ok["width"] == width] if len(ok) else ok
        for split in ("test", "train"):
            values = group[f"{split}_loss"].to_numpy(float) if len(group) else numpy.zeros(0)
            row: dict[str, Any] = {"width": width, "split": split, "runs": len(values)}
            row["mean"] = float(values.mean()) if len(values) else float("nan")
            row["min"] = float(values.min()) if len(values) else float("nan")
            row["mean_error"] = float(group[f"{split}_error"].mean()) if len(values) else float("nan")
            for name, statistic in STATISTICS.items():
                row[name] = statistic(values) if len(values) > 1 else float("nan")
                low, high = tools.bootstrap_interval(
                    statistic, [values], generator=generator, num_resamples=config.num_resamples
                )
                row.update({f"{name}_low": low, f"{name}_high": high})
            rows.append(row)
    return pandas.DataFrame(rows)


def run(
    config: ChoromanskaConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Train every (width, seed) (resuming from the store), compute the spreads, draw; see the module."""
    import pandas

    digits_split(config)  # a batch larger than the training set is refused before anything runs
    records, result = run_groups(
        _groups(config, sweep), sweep=sweep, name=name, config=config, store=store, progress=progress
    )
    frame = pandas.DataFrame(records_rows(records))
    if "diverged" not in frame:
        frame["diverged"] = None
    table = spreads(frame, config)
    table.to_csv(out_dir / f"{name}_spread.csv", index=False)
    figure = _draw(frame, table, config, out_dir / f"{name}.png")
    headers = ["width", "runs", "test loss mean", "test loss std [95% CI]", "test loss IQR [95% CI]"]
    headers += ["mean - best [95% CI]", "train loss mean", "train loss std [95% CI]", "test error (%)"]
    rows = []
    for width in config.widths:
        test = table[(table["width"] == width) & (table["split"] == "test")].iloc[0]
        train = table[(table["width"] == width) & (table["split"] == "train")].iloc[0]
        rows.append(
            [
                str(width),
                str(test["runs"]),
                common.fmt(test["mean"]),
                tools.interval_text(test["std"], (test["std_low"], test["std_high"])),
                tools.interval_text(test["iqr"], (test["iqr_low"], test["iqr_high"])),
                tools.interval_text(test["gap"], (test["gap_low"], test["gap_high"])),
                common.fmt(train["mean"]),
                tools.interval_text(train["std"], (train["std_low"], train["std_high"])),
                common.fmt(100 * test["mean_error"]),
            ]
        )
    return StudyOutput(frame, figure, (headers, rows), (result,))


def _draw(frame: Any, table: Any, config: ChoromanskaConfig, path: Path) -> Path:
    import numpy

    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(14, 10.5))
    ok = frame[frame["status"] == "ok"] if len(frame) else frame
    colors = plt.get_cmap("viridis")(numpy.linspace(0, 0.9, len(config.widths)))
    ax = axes[0][0]
    if len(ok):
        bins = numpy.geomspace(ok["test_loss"].min(), ok["test_loss"].max(), 50)
        for color, width in zip(colors, config.widths, strict=True):
            values = ok.loc[ok["width"] == width, "test_loss"]
            ax.hist(values, bins=bins, histtype="stepfilled", alpha=0.45, color=color, label=f"width {width}")
    ax.set_xscale("log")
    tools.plain_log_ticks(ax.xaxis)
    ax.set_xlabel("test cross-entropy of the minimum reached (nats, log scale)")
    ax.set_ylabel("number of initializations")
    ax.set_title("test losses of the minima, per hidden width", fontsize=10)
    tools.legend(ax, fontsize=8)
    ax = axes[0][1]
    for split, style in (("test", "o-"), ("train", "s--")):
        for k, statistic in enumerate(("std", "iqr")):
            part = table[table["split"] == split]
            ax.errorbar(
                part["width"] * (1 + 0.04 * (2 * k - 1)),
                part[statistic],
                yerr=tools.error_bars(part[statistic], part[f"{statistic}_low"], part[f"{statistic}_high"]),
                fmt=style,
                color=f"C{k}",
                alpha=1.0 if split == "test" else 0.6,
                capsize=3,
                label=f"{statistic.upper()} of {split} loss",
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width (units)")
    ax.set_ylabel("spread over initializations (nats, log scale)")
    ax.set_title("spread against size (95% bootstrap CI over seeds)", fontsize=10)
    tools.legend(ax, fontsize=8)
    ax = axes[1][0]
    for color, width in zip(colors, config.widths, strict=True):
        part = ok[ok["width"] == width] if len(ok) else ok
        if len(part):
            ax.scatter(
                part["train_loss"], part["test_loss"], s=14, color=color, alpha=0.7, label=f"width {width}"
            )
    ax.set_xscale("log")
    tools.plain_log_ticks(ax.xaxis)
    ax.set_xlabel("training cross-entropy (nats, log scale)")
    ax.set_ylabel("test cross-entropy (nats)")
    ax.set_title("every minimum: test against training loss", fontsize=10)
    tools.legend(ax, fontsize=8)
    ax = axes[1][1]
    for k, split in enumerate(("test", "train")):
        part = table[table["split"] == split]
        ax.errorbar(
            part["width"],
            part["gap"],
            yerr=tools.error_bars(part["gap"], part["gap_low"], part["gap_high"]),
            fmt="o-",
            color=f"C{k + 2}",
            capsize=3,
            label=f"{split} loss: mean - lowest found",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width (units)")
    ax.set_ylabel("mean - lowest loss over initializations (nats, log scale)")
    ax.set_title("distance of the typical minimum to the best one found", fontsize=10)
    tools.legend(ax, fontsize=8)
    fig.suptitle(
        "Minima from random initializations against network size on digits (Choromanska et al. 2015)"
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    return common.finish(fig, common.caption(config, _finding(ok, table, config)), path)


def _finding(ok: Any, table: Any, config: ChoromanskaConfig) -> str:
    """The caption's statement of what was measured (computed, never hard-coded)."""
    test = table[table["split"] == "test"]
    if not len(ok) or test["std"].isna().all():
        return "No width has two finished runs."
    first, last = test.iloc[0], test.iloc[-1]
    stds = test["std"].to_numpy(float)
    monotone = bool((stds[1:] <= stds[:-1]).all())
    rho = tools.spearman(test["width"], test["std"])
    trend = "decreasing at every step" if monotone else "not monotone in width"
    first_std = tools.interval_text(first["std"], (first["std_low"], first["std_high"]))
    last_std = tools.interval_text(last["std"], (last["std_low"], last["std_high"]))
    train = table[table["split"] == "train"]
    # the narrowest width from which on every std interval overlaps the widest network's: a plateau
    overlaps = (test["std_low"] <= last["std_high"]) & (test["std_high"] >= last["std_low"])
    flat = [int(w) for k, w in enumerate(test["width"]) if overlaps.iloc[k:].all()]
    plateau = (
        f"from width {flat[0]} on every test-loss std interval overlaps that of width {last['width']}"
        if flat and flat[0] != last["width"]
        else f"no narrower width has a test-loss std interval overlapping width {last['width']}'s"
    )
    return (
        f"{len(ok)} networks. Test-loss std {first_std} at width {first['width']} and {last_std} at width "
        f"{last['width']} ({trend}; Spearman rho(width, std) = {rho:.2f}; {plateau}); IQR "
        f"{first['iqr']:.3g} -> {last['iqr']:.3g}; mean test loss {first['mean']:.3g} -> {last['mean']:.3g}; "
        f"mean - lowest {first['gap']:.3g} -> {last['gap']:.3g}. Training loss: mean "
        f"{train['mean'].iloc[0]:.3g} -> {train['mean'].iloc[-1]:.3g}, std {train['std'].iloc[0]:.3g} -> "
        f"{train['std'].iloc[-1]:.3g}. SGD at a constant learning rate for {config.epochs} epochs for every "
        "width; error bars: 95% percentile bootstrap over seeds."
    )
