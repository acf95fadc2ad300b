"""Every study figure and plot helper labels its axes, keeps text >= 7 pt, inside the figure and apart,
and writes heat-map numbers in a colour that contrasts with their cell (synthetic data: no training)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy
import pandas
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text

from flatminima.experiments.studies import (
    _common,
    dinh,
    fantastic,
    keskar,
    landscapes,
    noise_scale,
    sensing_landscape,
)
from flatminima.landscape import Curve, Surface
from flatminima.landscape.plots import (
    MIN_FONT_SIZE,
    annotate_cells,
    contrast_color,
    plot_contour,
    plot_curve,
    plot_surface,
    pyplot,
)

RNG = numpy.random.default_rng(0)


def _luminance(color: Any) -> float:
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in to_rgba(color)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Any, b: Any) -> float:
    """WCAG 2 contrast ratio of two colours (1 to 21)."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _shown(text: Text) -> bool:
    return text.get_visible() and bool(text.get_text().strip())


def _axes_of(ax: Axes) -> list[Any]:
    axes = [ax.xaxis, ax.yaxis]
    return [*axes, ax.zaxis] if hasattr(ax, "zaxis") else axes


def problems(fig: Figure) -> list[str]:
    """What a reviewer would reject in a saved figure (empty list: nothing).

    Unlabelled axes (any axis with tick labels), text under MIN_FONT_SIZE or outside the figure,
    overlapping or crowded tick labels of one axis, overlapping titles / axis labels / captions.
    """
    fig.set_dpi(60)  # drawn again (a closed figure lost its canvas) at a low dpi: text scales with it
    canvas = FigureCanvasAgg(fig)
    shown: dict[Any, list[Text]] = {}  # per (ax, axis): the tick labels the draw will show
    hidden: set[int] = set()
    for ax in fig.axes:
        for axis in _axes_of(ax):
            every = [lab for tick in axis.majorTicks + axis.minorTicks for lab in (tick.label1, tick.label2)]
            ticks = axis._update_ticks() if axis.get_visible() and ax.get_visible() else []
            labels = [label for tick in ticks for label in (tick.label1, tick.label2) if _shown(label)]
            hidden |= {id(t) for t in every} - {id(t) for t in labels}
            shown[(ax, axis)] = labels
    canvas.draw()  # places the labels (3-D ones too)
    renderer = canvas.get_renderer()
    found = []
    major: dict[int, Text] = {id(t): t for t in fig.texts if _shown(t)}  # suptitle, caption
    for (ax, axis), ticks in shown.items():
        major.update({id(t): t for t in (ax.title, ax._left_title, ax._right_title) if _shown(t)})
        if not ticks:
            continue
        if not axis.get_label_text().strip():
            found.append(f"axes {ax.get_title()!r}: unlabeled {axis.axis_name} axis")
        else:
            major[id(axis.label)] = axis.label
        # crowded too: less than half an em between two labels
        boxes = [t.get_window_extent(renderer).padded(0.25 * t.get_fontsize() * fig.dpi / 72) for t in ticks]
        for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
            if a.overlaps(b):
                found.append(f"tick labels {ticks[i].get_text()!r} and {ticks[j].get_text()!r} overlap")
    frame = fig.bbox.padded(1)
    for text in fig.findobj(Text):
        if not _shown(text) or id(text) in hidden:
            continue
        if text.get_fontsize() < MIN_FONT_SIZE:
            found.append(f"text {text.get_text()!r} at {text.get_fontsize()} pt")
        box = text.get_window_extent(renderer)
        if not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1):
            found.append(f"text {text.get_text()!r} leaves the figure")
    texts = list(major.values())
    boxes = [t.get_window_extent(renderer) for t in texts]
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        if a.overlaps(b):
            found.append(f"{texts[i].get_text()!r} overlaps {texts[j].get_text()!r}")
    return found


def cell_contrasts(fig: Figure) -> list[float]:
    """The contrast ratio of every number written on an image cell with that cell's colour."""
    ratios = []
    for ax in fig.axes:
        for image in ax.get_images():
            assert isinstance(image, AxesImage)
            data = numpy.ma.masked_invalid(image.get_array())
            background = ax.get_facecolor()
            for text in ax.texts:
                x, y = text.get_position()
                value = data[round(y), round(x)]
                cell = background if numpy.ma.is_masked(value) else image.cmap(image.norm(value))
                ratios.append(contrast_ratio(text.get_color(), cell))
    return ratios


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the studies save (``_common.finish`` / ``finish_captioned`` still save and close them)."""
    figures: list[Figure] = []
    for name in ("finish", "finish_captioned"):
        original = getattr(_common, name)

        def spy(fig: Figure, text: str, path: Any, *args: Any, _saver: Any = original, **kw: Any) -> Any:
            figures.append(fig)
            return _saver(fig, text, path, *args, **kw)

        monkeypatch.setattr(_common, name, spy)
    return figures


def _bowl(xs: torch.Tensor, name: str, scale: float = 1.0) -> Surface:
    X, Y = torch.meshgrid(xs, xs, indexing="xy")
    return Surface(xs, xs, {name: 1e-3 + scale * (X**2 + 2 * Y**2 + 0.3 * X * Y)})


def _widths(n: int = 4) -> str:
    return " ".join(f"{w:.4g}" for w in RNG.uniform(0.8, 1.3, n))


def _landscapes(tmp: Path) -> Path:
    xs = torch.linspace(-1, 1, 9, dtype=torch.float64)
    surfaces = {(r, k): _bowl(xs, "train_loss") for r in ("small", "large") for k in ("random", "hessian")}
    ts = torch.linspace(-1, 2, 7, dtype=torch.float64)
    line = Curve(ts, {"train_loss": 0.03 + 0.01 * ts**2, "test_loss": 0.18 + 0.01 * ts**2})
    frame = pandas.DataFrame(
        [
            {"solution": s, "widths": _widths(), "width_random_mean": 1.1, "width_random_std": 0.1}
            for s in ("small", "large")
        ]
    )
    return landscapes._draw(surfaces, line, frame, landscapes.QUICK, tmp / "l.png")


def _sensing(tmp: Path) -> Path:
    solutions, kinds = sensing_landscape.SOLUTIONS, sensing_landscape.KINDS
    extent = {"scaled": 0.4, "filter": 1.0, "hessian": 0.4}  # as in the study
    surfaces = {
        (s, k): _bowl(torch.linspace(-extent[k], extent[k], 7, dtype=torch.float64), "loss", 10.0)
        for s in solutions
        for k in kinds
    }
    ts = torch.linspace(-0.5, 1.5, 9, dtype=torch.float64)
    lines = {s: Curve(ts, {"loss": 1e-6 + (ts * (1 - ts)) ** 2}) for s in solutions[1:]}
    rows = []
    for k, s in enumerate(solutions):
        row = {"solution": s, "scaled_trace": 4.5 + 20 * k}
        for kind in ("scaled", "filter"):
            row.update({f"widths_{kind}": _widths(8), f"width_{kind}_mean": 1.0, f"width_{kind}_std": 0.1})
        rows.append(row)
    config = sensing_landscape.QUICK
    return sensing_landscape._draw(pandas.DataFrame(rows), surfaces, lines, config, tmp / "s.png")


def _taus() -> pandas.DataFrame:
    rows = []
    for hp in fantastic.QUICK.grid():
        row = {**hp, "status": "ok", "reached_target": True, "gap_error": RNG.uniform(0, 0.1)}
        row.update({m: RNG.uniform(1, 2) for m in fantastic.MEASURE_NAMES})
        rows.append(row)
    taus = fantastic.correlations(pandas.DataFrame(rows))
    taus.loc[0, "width"] = math.nan  # a cell with no group: drawn as the background
    varied = [h for h in fantastic.HYPERPARAMETERS if h in taus.columns]
    taus.loc[1, varied], taus.loc[2, varied] = 1.0, -1.0  # the darkest cells of the map
    return taus


def _fantastic(tmp: Path) -> Path:
    return fantastic._draw(_taus(), pandas.DataFrame({"key": range(16)}), fantastic.QUICK, tmp / "f.png")


def _keskar(tmp: Path) -> Path:
    rows = []
    for seed, regime in itertools.product((0, 1, 2), ("small", "large")):
        row: dict[str, Any] = {"seed": seed, "regime": regime}
        for space, eps in itertools.product(("full", "sub100"), ("0.001", "0.0005")):
            row[f"eps_sharpness_{space}_{eps}"] = RNG.uniform(0.05, 0.3)
        row.update(
            top_eigenvalue=RNG.uniform(0.4, 0.6),
            trace=RNG.uniform(5, 8),
            gap_error=RNG.uniform(0.03, 0.06),
            gap_loss=RNG.uniform(0.1, 0.2),
        )
        rows.append(row)
    t = numpy.linspace(-1, 2, 7)
    line = pandas.DataFrame(
        {
            "t": t,
            "train_loss": 0.03 + 0 * t,
            "test_loss": 0.18 + 0 * t,
            "train_error": 0 * t,
            "test_error": 0.05 + 0 * t,
        }
    )
    return keskar._draw(pandas.DataFrame(rows), line, keskar.QUICK, tmp / "k.png")


def _dinh(tmp: Path) -> Path:
    alphas = numpy.array(dinh.QUICK.alphas)
    frame = pandas.DataFrame({"alpha": alphas, "max_output_difference": 1e-14})
    frame["ratio_low"] = numpy.minimum(alphas**2, alphas**-2.0)
    frame["ratio_high"] = numpy.maximum(alphas**2, alphas**-2.0)
    frame["top_eigenvalue_ratio"] = frame["trace_ratio"] = numpy.sqrt(frame["ratio_high"])
    frame["trace"] = frame["predicted_trace"] = 5 * frame["trace_ratio"]
    for column in dinh.INVARIANT:
        frame[f"{column}_ratio"] = 1.0
    for column in dinh.VARIANT:
        frame[f"{column}_ratio"] = frame["ratio_high"]
    frame.loc[0, "pac_bayes_sigma_ratio"] = 0.0  # sigma below the bisection resolution
    return dinh._draw(frame, dinh.QUICK, tmp / "d.png")


def _noise_scale(tmp: Path) -> Path:
    rows = []
    for lr, batch in itertools.product((0.02, 0.2), (16, 128)):
        row = {
            "learning_rate": lr,
            "batch_size": batch,
            "ratio": lr / batch,
            "diverged": lr == 0.2 and batch == 16,
        }
        row.update(
            top_eigenvalue=RNG.uniform(0.3, 1), trace=RNG.uniform(4, 20), test_accuracy=RNG.uniform(0.6, 0.95)
        )
        rows.append(row)
    return noise_scale._draw(pandas.DataFrame(rows), noise_scale.QUICK, tmp / "n.png")


STUDIES: dict[str, Callable[[Path], Path]] = {
    "landscape-digits": _landscapes,
    "landscape-sensing": _sensing,
    "fantastic-measures": _fantastic,
    "keskar-batch": _keskar,
    "dinh-reparam": _dinh,
    "noise-scale": _noise_scale,
}


@pytest.mark.parametrize("name", list(STUDIES))
def test_study_figure_is_labelled_legible_and_uncluttered(
    name: str, tmp_path: Path, drawn: list[Figure]
) -> None:
    path = STUDIES[name](tmp_path)
    assert path.is_file() and len(drawn) == 1
    assert problems(drawn[0]) == []


def test_landscape_figures_label_slices_surfaces_and_colour_bars(tmp_path: Path, drawn: list[Figure]) -> None:
    _landscapes(tmp_path)
    (fig,) = drawn
    surfaces = [ax for ax in fig.axes if hasattr(ax, "zaxis")]
    assert len(surfaces) == 2
    for ax in surfaces:
        assert ax.get_xlabel().startswith("alpha") and ax.get_ylabel().startswith("beta")
        assert ax.get_zlabel() == "log10 train_loss"
    contours = [ax for ax in fig.axes if ax.collections and ax.get_xlabel().startswith("alpha")]
    assert len(contours) == 6  # 4 slices and the 2 surfaces
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 4 and all(ax.get_ylabel() == "log10 train_loss" for ax in colorbars)


def test_fantastic_numbers_contrast_with_their_cells(tmp_path: Path, drawn: list[Figure]) -> None:
    _fantastic(tmp_path)
    ratios = cell_contrasts(drawn[0])
    assert len(ratios) == len(fantastic.MEASURE_NAMES) * 4  # 4 varied hyperparameters in QUICK
    assert min(ratios) >= 4.5  # WCAG AA for small text
    texts = [t for ax in drawn[0].axes for t in ax.texts if t.get_text() == "-"]
    assert texts and all(t.get_color() == "black" for t in texts)  # the NaN cell


def test_contrast_color_picks_the_readable_one() -> None:
    for color in (
        "black",
        "navy",
        "darkred",
        "#67001f",
        "#053061",
        "white",
        "yellow",
        "#f7f7f7",
        "0.45",
        "0.55",
    ):
        best = contrast_color(to_rgba(color))
        other = "white" if best == "black" else "black"
        assert contrast_ratio(best, color) >= contrast_ratio(other, color) - 1e-9
        assert contrast_ratio(best, color) >= 4.5
    assert contrast_color((0.0, 0.0, 0.0, 1.0)) == "white" and contrast_color((1.0, 1.0, 0.0)) == "black"


def test_plot_helpers_label_every_axis(tmp_path: Path) -> None:
    plt = pyplot()
    fig = plt.figure(figsize=(18, 4.5))
    xs = torch.linspace(-1, 1, 5, dtype=torch.float64)
    contour = plot_contour(fig.add_subplot(1, 4, 1), _bowl(xs, "loss"), "loss", log=True)
    surface = plot_surface(fig.add_subplot(1, 4, 2, projection="3d"), _bowl(xs, "loss"), "loss")
    curve = plot_curve(fig.add_subplot(1, 4, 3), Curve(xs, {"a": xs**2, "b": xs**2 + 1}), ["a", "b"])
    ax = fig.add_subplot(1, 4, 4)
    matrix = numpy.array([[-1.0, 0.0], [1.0, math.nan]])
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    annotate_cells(ax, image, matrix)
    ax.set_xticks([0, 1])
    ax.set_yticks([0, 1])
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    fig.tight_layout()
    fig.savefig(tmp_path / "helpers.png", dpi=80)
    plt.close(fig)
    assert problems(fig) == []
    assert (contour.get_xlabel(), contour.get_ylabel()) == ("alpha (along d1)", "beta (along d2)")
    assert surface.get_zlabel() == "loss" and curve.get_ylabel() == "a / b"
    assert [t.get_text() for t in ax.texts] == ["-1.00", "0.00", "1.00", "-"]
    assert [t.get_color() for t in ax.texts] == ["white", "black", "white", "black"]
    assert min(cell_contrasts(fig)) >= 4.5
