"""Shared pieces of the network studies: seeds, digits training, flatness measures, tables, figures."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flatminima._checks import check_int_in_range, check_real
from flatminima.curvature import (
    HessianOperator,
    epsilon_sharpness,
    hutchinson_trace,
    lanczos_eigenvalues,
)
from flatminima.errors import ConfigurationError
from flatminima.networks import Dataset, TrainingResult, load_digits_split, mlp, train_classifier
from flatminima.random import child_generators


def streams(seed: int) -> dict[str, torch.Generator]:
    """Independent generators (split, init, batches, measure) of one seed."""
    return child_generators(seed, "split", "init", "batches", "measure")


def digits(seed: int, num_train: int | None = None) -> Dataset:
    """The digits split of ``seed`` (the split stream of :func:`streams`)."""
    return load_digits_split(generator=streams(seed)["split"], num_train=num_train)


def train_digits(
    data: Dataset,
    seed: int,
    *,
    hidden: Sequence[int],
    learning_rate: float,
    batch_size: int,
    target_loss: float | None,
    max_epochs: int,
    weight_decay: float = 0.0,
) -> tuple[nn.Module, TrainingResult]:
    """(initial model, training result) of an MLP on ``data``; init and batch order from ``seed``."""
    gens = streams(seed)
    model = mlp(data.num_features, list(hidden), data.num_classes, generator=gens["init"])
    result = train_classifier(
        model,
        data,
        learning_rate=learning_rate,
        batch_size=batch_size,
        generator=gens["batches"],
        weight_decay=weight_decay,
        target_loss=target_loss,
        max_epochs=max_epochs,
    )
    return model, result


def check_grid(name: str, values: Sequence[Any], check: Callable[..., object], **bounds: Any) -> None:
    """Check that grid axis ``name`` is non-empty and each value passes ``check("name[i]", value, **bounds)``.

    Raises:
        ConfigurationError: if ``values`` is empty.
        InputDataError / InputTypeError: from ``check`` (e.g. :func:`flatminima._checks.check_real`).
    """
    if not values:
        raise ConfigurationError(f"{name} must hold at least one value; got {name}=().")
    for value in values:
        check(f"{name}[i]", value, **bounds)


@dataclasses.dataclass(frozen=True)
class BatchRegimes:
    """Small- against large-batch SGD on digits, the settings shared by the batch-size studies.

    Both regimes train the same MLP (``hidden`` widths) with the same learning rate until the training
    loss reaches ``target_loss`` or ``max_epochs`` pass; only the batch size differs (Keskar et al.,
    On large-batch training for deep learning: generalization gap and sharp minima, ICLR 2017).
    ``num_train`` subsamples the training split (None: all of it).
    """

    hidden: tuple[int, ...] = (32,)
    small_batch: int = 16
    large_batch: int = 629
    learning_rate: float = 0.1
    target_loss: float = 0.01
    max_epochs: int = 4000
    num_train: int | None = None

    def __post_init__(self) -> None:
        check_int_in_range("small_batch", self.small_batch, low=1)
        check_int_in_range("large_batch", self.large_batch, low=self.small_batch + 1)
        check_real("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_real("target_loss", self.target_loss, low=0.0, low_open=True)
        check_int_in_range("max_epochs", self.max_epochs, low=1)

    def regimes(self, data: Dataset) -> tuple[tuple[str, int], ...]:
        """(("small", small_batch), ("large", large_batch)) after checking that both fit ``data``.

        Raises:
            ConfigurationError: if ``large_batch`` exceeds the training set.
        """
        if self.large_batch > data.num_train:
            raise ConfigurationError(
                f"large_batch must be <= the training set size {data.num_train}; "
                f"got large_batch={self.large_batch}."
            )
        return (("small", self.small_batch), ("large", self.large_batch))

    def train(self, data: Dataset, seed: int, batch_size: int) -> TrainingResult:
        """Train the MLP of ``seed`` on ``data`` with one regime's batch size (see :func:`train_digits`)."""
        return train_digits(
            data,
            seed,
            hidden=self.hidden,
            learning_rate=self.learning_rate,
            batch_size=batch_size,
            target_loss=self.target_loss,
            max_epochs=self.max_epochs,
        )[1]


def hessian(model: nn.Module, data: Dataset) -> HessianOperator:
    """The Hessian of the full training cross-entropy at the model's parameters (eval mode)."""
    return HessianOperator.from_model(
        model, nn.functional.cross_entropy, [(data.x_train, data.y_train)], mode="eval"
    )


def curvature(op: HessianOperator, generator: torch.Generator, *, num_probes: int = 100) -> dict[str, float]:
    """Top Hessian eigenvalue (Lanczos) and trace (Hutchinson, with its standard error)."""
    top = lanczos_eigenvalues(op, 1, generator=generator, tol=1e-6)
    trace = hutchinson_trace(op, num_probes, generator=generator)
    return {
        "top_eigenvalue": float(top.eigenvalues[0]),
        "trace": float(trace.value),
        "trace_stderr": float(trace.stderr),
    }


def keskar_sharpness(
    op: HessianOperator, generator: torch.Generator, epsilons: Sequence[float] = (1e-3, 5e-4)
) -> dict[str, float]:
    """Keskar's phi(eps, A) in percent, full space and a random 100-dim subspace, per eps."""
    out = {}
    for eps in epsilons:
        out[f"eps_sharpness_full_{eps:g}"] = epsilon_sharpness(op, eps, generator=generator).value
        dim = min(100, op.size)
        out[f"eps_sharpness_sub{dim}_{eps:g}"] = epsilon_sharpness(
            op, eps, subspace_dim=dim, generator=generator
        ).value
    return out


def mean_std(values: Any) -> str:
    """``mean ± std`` (sample std over seeds; one value shows as itself)."""
    import numpy

    array = numpy.asarray(list(values), dtype=float)
    if array.size == 0:
        return "-"
    if array.size == 1:
        return f"{array[0]:.4g}"
    return f"{array.mean():.4g} ± {array.std(ddof=1):.2g}"


def fmt(value: float) -> str:
    """A number for a summary table."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def caption(config: Any, extra: str = "") -> str:
    """A caption stating the configuration (and anything else a reader needs)."""
    import dataclasses

    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    text = "config: " + ", ".join(f"{k}={v}" for k, v in fields.items())
    return f"{text}. {extra}".strip()


def finish(fig: Any, text: str, path: Any) -> Any:
    """Add a wrapped caption under the axes, save at 120 dpi and close."""
    import textwrap

    from flatminima.landscape.plots import pyplot

    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(text, 150)), ha="left", va="bottom", fontsize=7)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def usable(frame: Any) -> Any:
    """The models that ran and reached the target loss (no rows if none has)."""
    if not len(frame) or "reached_target" not in frame:
        return frame.iloc[0:0]
    return frame[(frame["status"] == "ok") & frame["reached_target"].astype(bool)]


def table_from(frame: Any, by: str, columns: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    """Per value of ``by``: mean ± std over rows of every column (headers from ``columns``' values)."""
    headers = [by, "n", *columns.values()]
    rows = []
    for key, group in frame.groupby(by, sort=False):
        rows.append([str(key), str(len(group)), *[mean_std(group[c]) for c in columns]])
    return headers, rows


# ---- statistics and figures over seeds -------------------------------------------------------------


def seed_summary(frame: Any, by: Sequence[str], column: str) -> Any:
    """Per value of ``by``: mean, sample std (0 for one seed) and count of ``column`` (NaNs dropped)."""
    grouped = frame.groupby(list(by), sort=True)[column]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def errorbar_lines(
    ax: Any, frame: Any, x: str, column: str, hue: str | None = None, *, label: str = "", **style: Any
) -> None:
    """Draw mean ± std over the rows (seeds) of ``column`` against ``x``, one line per value of ``hue``."""
    groups = [(None, frame)] if hue is None else list(frame.groupby(hue, sort=True))
    for k, (value, group) in enumerate(groups):
        stats = seed_summary(group, [x], column)
        text = label if hue is None else f"{label}{value}"
        ax.errorbar(
            stats[x],
            stats["mean"],
            yerr=stats["std"],
            marker="o",
            markersize=4,
            capsize=3,
            label=text or None,
            **({"color": f"C{k}"} | style),
        )


def finish_captioned(fig: Any, text: str, path: Any, *, top: float = 0.95) -> Any:
    """Like :func:`finish`, but wrap to the figure's width and lay the axes out above the caption's lines."""
    import textwrap

    from flatminima.landscape.plots import pyplot

    width, height = fig.get_size_inches()
    lines = textwrap.wrap(text, max(60, int(width * 17)))
    bottom = min(0.5, (0.13 * len(lines) + 0.45) / height)
    fig.tight_layout(rect=(0, bottom, 1, top))
    fig.text(0.01, 0.005, "\n".join(lines), ha="left", va="bottom", fontsize=7)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path
