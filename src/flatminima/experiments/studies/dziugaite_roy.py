"""How tight is a nonvacuous PAC-Bayes bound for a small network? (Dziugaite & Roy 2017) on binary digits.

**Question.** Dziugaite and Roy (2017) showed that optimizing a Gaussian posterior Q = N(w, diag(s))
around an SGD solution against the PAC-Bayes-kl bound gives a *nonvacuous* bound on the error of the
stochastic network; the posterior variances are large in flat directions, so the bound is a flatness
measure with a guarantee. How close is it to the held-out error, which term dominates, and how does it
move with the training-set size m?

**Method.** For every seed: the binary digits task (label 1[digit >= 5],
:func:`~flatminima.generalization.binary_digits_split`, m = 1,438 training and 359 held-out images; the
first m of a training permutation for smaller m), a ReLU MLP 64 -> ``hidden`` -> 2 initialized at w0
(the prior mean, drawn independently of the sample) and trained by plain SGD on the cross-entropy, then
:func:`~flatminima.generalization.dziugaite_roy_bound` with every term: the Monte Carlo error ê of Q, its
upper confidence bound (the sample convergence bound), KL(Q || P), the union-bound price of the prior
variance and the confidence term, and the final bound on e(Q), with probability >= 1 - delta - delta'.
The split, the initialization, the SGD batch order and the bound's draws come from independent streams
of the seed (:func:`~flatminima.experiments.studies._common.streams`). Each (seed, m) is one stored trial.
(As in :func:`~flatminima.generalization.digits_nonvacuous_bound`, the inputs are standardized with
training-split statistics, unlabeled data the bound treats as fixed.)

References:
    G. K. Dziugaite, D. M. Roy. Computing nonvacuous generalization bounds for deep (stochastic) neural
    networks with many more parameters than training data. UAI 2017.
    J. Langford, R. Caruana. (Not) bounding the true error. NIPS 2001.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import ConfigurationError
from flatminima.experiments.studies import _common as common
from flatminima.experiments.studies._stored_trials import make_trial, records_frame, run_units
from flatminima.experiments.study import StudyOutput
from flatminima.random import child_generators

#: the bound's terms drawn as the three stacked segments of the decomposition.
SEGMENTS = (
    ("mc_error", "Monte Carlo train error of Q"),
    ("mc_correction", "sample-convergence correction"),
    ("pac_bayes_gap", "PAC-Bayes complexity gap"),
)


@dataclasses.dataclass(frozen=True)
class DziugaiteRoyConfig:
    """Settings of the study (see the module): SGD, the bound's optimization and the sizes m."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    train_sizes: tuple[int, ...] = (180, 360, 720)
    size_seeds: tuple[int, ...] = (0, 1, 2)
    hidden: tuple[int, ...] = (100,)
    sgd_learning_rate: float = 0.1
    sgd_batch_size: int = 32
    sgd_epochs: int = 40
    bound_steps: int = 2000
    bound_learning_rate: float = 0.01
    mc_samples: int = 10000
    delta: float = 0.025
    delta_prime: float = 0.01

    def __post_init__(self) -> None:
        common.check_grid("seeds", self.seeds, check_int_in_range, low=0)
        for m in self.train_sizes:
            check_int_in_range("train_sizes[i]", m, low=max(8, self.sgd_batch_size))
        if self.train_sizes:
            common.check_grid("size_seeds", self.size_seeds, check_int_in_range, low=0)
        common.check_grid("hidden", self.hidden, check_int_in_range, low=1)
        check_real("sgd_learning_rate", self.sgd_learning_rate, low=0.0, low_open=True)
        check_int_in_range("sgd_batch_size", self.sgd_batch_size, low=1)
        check_int_in_range("sgd_epochs", self.sgd_epochs, low=1)
        check_int_in_range("bound_steps", self.bound_steps, low=0)
        check_real("bound_learning_rate", self.bound_learning_rate, low=0.0, low_open=True)
        check_int_in_range("mc_samples", self.mc_samples, low=1)
        check_real("delta", self.delta, low=0.0, high=1.0, low_open=True, high_open=True)
        check_real("delta_prime", self.delta_prime, low=0.0, high=1.0, low_open=True, high_open=True)
        if self.delta + self.delta_prime >= 1.0:
            raise ConfigurationError(
                f"delta + delta_prime must be < 1; got delta + delta_prime = {self.delta + self.delta_prime}."
            )


QUICK = DziugaiteRoyConfig(
    seeds=(0, 1), train_sizes=(360,), size_seeds=(0,), hidden=(50,), bound_steps=300, mc_samples=1000
)
FULL = DziugaiteRoyConfig()


def split(seed: int, num_train: int | None) -> Any:
    """The binary digits split of ``seed``, its training set cut to the first ``num_train`` examples."""
    from flatminima.generalization import binary_digits_split
    from flatminima.networks import Dataset

    data = binary_digits_split(generator=common.streams(seed)["split"])
    if num_train is None:
        return data
    if num_train > data.num_train:
        raise ConfigurationError(
            f"train_sizes must be <= the training split size {data.num_train}; got {num_train}."
        )
    return Dataset(data.x_train[:num_train], data.y_train[:num_train], data.x_test, data.y_test)


def bound_terms(config: DziugaiteRoyConfig, seed: int, num_train: int | None) -> dict[str, Any]:
    """Train the MLP of ``seed`` on m examples and compute every term of its bound."""
    from flatminima.generalization import dziugaite_roy_bound
    from flatminima.networks import mlp, train_classifier

    data = split(seed, num_train)
    gens = common.streams(seed)
    initial = mlp(data.num_features, list(config.hidden), 2, generator=gens["init"])
    trained = train_classifier(
        initial,
        data,
        learning_rate=config.sgd_learning_rate,
        batch_size=config.sgd_batch_size,
        generator=gens["batches"],
        max_epochs=config.sgd_epochs,
    )
    bound = dziugaite_roy_bound(
        trained.model,
        data,
        initial_model=initial,
        generator=child_generators(seed, "bound")["bound"],
        delta=config.delta,
        delta_prime=config.delta_prime,
        num_steps=config.bound_steps,
        learning_rate=config.bound_learning_rate,
        num_mc_samples=config.mc_samples,
    )
    terms = bound.terms()
    terms.update(sgd_train_loss=trained.train_loss, sgd_epochs=trained.epochs, diverged=trained.diverged)
    terms.update(final_objective=bound.objective_history[-1] if bound.objective_history else float("nan"))
    return terms


def run(
    config: DziugaiteRoyConfig, out_dir: Path, name: str, *, sweep: str, store: Any, progress: bool
) -> StudyOutput:
    """Compute the bound per (seed, m) (resuming from the store), decompose it, draw; see the module."""
    full = split(config.seeds[0], None).num_train
    for m in config.train_sizes:
        split(config.seeds[0], m)  # a size beyond the split is a configuration error, before any work
    cells: list[tuple[int, int | None]] = [(seed, None) for seed in config.seeds]
    cells += [(seed, m) for m in config.train_sizes for seed in config.size_seeds if m != full]
    shared = {
        k: v for k, v in dataclasses.asdict(config).items() if k not in ("seeds", "train_sizes", "size_seeds")
    }
    units = []
    for seed, size in cells:
        params = {"seed": seed, "train_size": size if size is not None else full, "config": shared}
        trial = make_trial(sweep, "binary_digits", params, method="dziugaite_roy", seed=seed)
        units.append((trial, functools.partial(bound_terms, config, seed, size)))
    records, result = run_units(units, name=name, sweep=sweep, config=config, store=store, progress=progress)
    frame = records_frame(records).drop(columns=["config"])
    ok = frame["status"] == "ok"
    frame.loc[ok, "mc_correction"] = frame.loc[ok, "mc_error_bound"] - frame.loc[ok, "mc_error"]
    frame.loc[ok, "pac_bayes_gap"] = frame.loc[ok, "bound"] - frame.loc[ok, "mc_error_bound"]
    for term in ("kl", "union_term", "confidence_term"):
        frame.loc[ok, f"{term}_per_example"] = frame.loc[ok, term] / frame.loc[ok, "num_examples"]
    frame.loc[ok, "bound_over_held_out"] = frame.loc[ok, "bound"] / frame.loc[ok, "held_out_error_stochastic"]
    figure = _draw(frame[ok], full, config, out_dir / f"{name}.png")
    return StudyOutput(frame, figure, _table(frame[ok]), (result,))


def _table(frame: Any) -> tuple[list[str], list[list[str]]]:
    columns = {
        "bound": "bound on e(Q)",
        "held_out_error_stochastic": "held-out error of Q",
        "sgd_held_out_error": "held-out error (SGD net)",
        "mc_error": "MC train error of Q",
        "kl": "KL(Q||P)",
        "kl_budget": "(KL + union + conf.) / m",
        "mean_posterior_std": "mean posterior std",
    }
    return common.table_from(frame.sort_values("train_size", ascending=False), "train_size", columns)


def findings(frame: Any, full: int, config: DziugaiteRoyConfig) -> str:
    """What the bounds show, computed from the rows."""
    main = frame[frame["train_size"] == full]
    if not len(main):
        return "No bound at the full training-set size was computed."
    nonvacuous = int((main["bound"] < 0.5).sum())
    text = (
        f"Findings (m = {full}, seeds {sorted(main['seed'].tolist())}): bound "
        f"{common.mean_std(main['bound'])} against held-out error of Q "
        f"{common.mean_std(main['held_out_error_stochastic'])} and of the SGD net "
        f"{common.mean_std(main['sgd_held_out_error'])}; the bound is "
        f"{common.fmt(main['bound_over_held_out'].mean())} times the held-out error of Q and below chance "
        f"(0.5) for {nonvacuous}/{len(main)} seeds (< 1, nonvacuous, for {int((main['bound'] < 1).sum())}/"
        f"{len(main)}). Of the bound, the PAC-Bayes complexity gap (bound - MC-corrected train error of Q) "
        f"averages {common.fmt(main['pac_bayes_gap'].mean())}, driven by KL/m = "
        f"{common.fmt(main['kl_per_example'].mean())} nats."
    )
    sizes = frame.groupby("train_size")["bound"].mean().sort_index()
    if len(sizes) > 1:
        steps = ", ".join(f"{common.fmt(v)} at m = {m}" for m, v in sizes.items())
        text += f" Mean bound against m: {steps}."
    return text


def _draw(frame: Any, full: int, config: DziugaiteRoyConfig, path: Path) -> Path:
    import numpy
    from matplotlib.ticker import NullFormatter

    from flatminima.landscape.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.8))
    main = frame[frame["train_size"] == full].sort_values("seed")
    x = numpy.arange(len(main))
    ax = axes[0]
    bottom = numpy.zeros(len(main))
    for k, (column, label) in enumerate(SEGMENTS):
        values = main[column].to_numpy(dtype=float)
        ax.bar(x, values, bottom=bottom, width=0.6, color=f"C{k}", alpha=0.8, label=label)
        bottom += values
    markers = (
        ("held_out_error_stochastic", "held-out error of Q", "D", "k"),
        ("held_out_error_mean", "held-out error of the mean net", "o", "C4"),
        ("sgd_held_out_error", "held-out error of the SGD net", "x", "C3"),
    )
    for column, label, marker, colour in markers:
        ax.scatter(x, main[column], marker=marker, color=colour, zorder=3, label=label)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance level 0.5")
    ax.set_xticks(x)
    ax.set_xticklabels([str(s) for s in main["seed"]])
    ax.set_xlabel(f"seed (m = {full} training examples)")
    ax.set_ylabel("0-1 error (stacked: the bound on e(Q))")
    ax.set_title("bound decomposition and held-out errors", fontsize=10)
    ax.set_ylim(0, max(0.6, float(bottom.max()) * 1.35) if len(main) else 1)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax = axes[1]
    bottom = numpy.zeros(len(main))
    for k, (term, label) in enumerate(
        (
            ("kl", "KL(Q || P) / m"),
            ("union_term", "union bound over lambda / m"),
            ("confidence_term", "log(2 sqrt(m) / delta) / m"),
        )
    ):
        values = main[f"{term}_per_example"].to_numpy(dtype=float)
        ax.bar(x, values, bottom=bottom, width=0.6, color=f"C{k + 5}", alpha=0.8, label=label)
        bottom += values
    ax.set_xticks(x)
    ax.set_xticklabels([str(s) for s in main["seed"]])
    ax.set_xlabel("seed")
    ax.set_ylabel("nats per training example")
    ax.set_title("the PAC-Bayes-kl budget (KL + union + confidence) / m", fontsize=10)
    ax.set_ylim(0, float(bottom.max()) * 1.3 if len(main) else 1)
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[2]
    grouped = frame.groupby("train_size")
    for k, (column, label) in enumerate(
        (
            ("bound", "bound on e(Q)"),
            ("held_out_error_stochastic", "held-out error of Q"),
            ("sgd_held_out_error", "held-out error of the SGD net"),
        )
    ):
        mean, std = grouped[column].mean(), grouped[column].std(ddof=1).fillna(0.0)
        ax.errorbar(
            mean.index, mean, yerr=std, marker="o", capsize=3, color=f"C{k}", label=label + " (mean ± std)"
        )
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance level 0.5")
    ax.set_xscale("log")
    ax.set_xticks(sorted(grouped.groups), [str(m) for m in sorted(grouped.groups)], minor=False)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training-set size m (log scale)")
    ax.set_ylabel("0-1 error")
    ax.set_title("against the training-set size", fontsize=10)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.suptitle("Nonvacuous PAC-Bayes bounds on binary digits (Dziugaite & Roy 2017)")
    fig.tight_layout(rect=(0, 0.14, 1, 0.96))
    text = (
        "Bound on the error of Q = N(w, diag(s)) optimized around the SGD solution; holds with probability "
        f">= 1 - delta - delta' = {1 - config.delta - config.delta_prime:g}. " + findings(frame, full, config)
    )
    return common.finish(fig, common.caption(config, text), path)
