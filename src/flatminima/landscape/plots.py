"""Matplotlib (Agg) drawings of landscapes: 1-D curves, contour maps, 3-D surfaces and annotated heat maps.

Each helper draws into a given axes and returns it, so studies compose them into one figure; matplotlib
is imported only here and lazily. Every helper labels what it draws: the slice coordinates (by default
alpha and beta, the coefficients of the two directions: the point w + alpha d_1 + beta d_2), the value
(log10 when ``log``) on a colour bar or the z axis, and no text is smaller than :data:`MIN_FONT_SIZE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flatminima.errors import InputDataError
from flatminima.landscape.slices import Curve, Surface

#: the smallest font size (points) the helpers and the study figures use.
MIN_FONT_SIZE = 7.0
#: default axis labels of a 2-D slice f(w + alpha d_1 + beta d_2).
ALPHA = "alpha (along d1)"
BETA = "beta (along d2)"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _values(data: Curve | Surface, name: str) -> Any:
    if name not in data.values:
        raise InputDataError(f"name must be one of {sorted(data.values)}; got name={name!r}.")
    return data.values[name].numpy()


def value_label(name: str, log: bool) -> str:
    """The label of a plotted value: ``log10 NAME`` when ``log``."""
    return f"log10 {name}" if log else name


def plot_curve(
    ax: Any,
    curve: Curve,
    names: list[str],
    *,
    log: bool = False,
    xlabel: str = "t",
    ylabel: str | None = None,
    **kwargs: Any,
) -> Any:
    """Draw the named values of a curve against t (one line each, with a legend and axis labels).

    ``ylabel`` defaults to the names joined by " / ".
    """
    from matplotlib.ticker import MaxNLocator

    for name in names:
        ax.plot(curve.ts.numpy(), _values(curve, name), label=name, **kwargs)
    if log:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel if ylabel is not None else " / ".join(names))
    ax.legend(fontsize=8)
    return ax


def grid_values(surface: Surface, name: str, *, log: bool = False) -> Any:
    """The named values of a slice as a NumPy grid, ``log10`` (of values clipped at 1e-12) when ``log``.

    These are the values :func:`plot_contour` and :func:`plot_surface` draw, e.g. to share contour
    levels between panels.
    """
    import numpy

    z = _values(surface, name)
    return numpy.log10(numpy.clip(z, 1e-12, None)) if log else z


def plot_contour(
    ax: Any,
    surface: Surface,
    name: str,
    *,
    levels: int | Sequence[float] = 20,
    log: bool = False,
    xlabel: str = ALPHA,
    ylabel: str = BETA,
    colorbar: bool | Any = True,
) -> Any:
    """Filled contour map of one value over the slice (log10 when ``log``), with a labelled colour bar.

    The axes are labelled ``xlabel`` / ``ylabel`` (the direction coefficients); the centre (the
    solution) is marked with a red cross. ``levels``: their number, or the levels themselves (panels
    given the same levels share one colour scale). ``colorbar``: True draws the colour bar beside
    ``ax``, False none, an axes draws it there (one bar for a row of panels that share levels).
    """
    from matplotlib.ticker import MaxNLocator

    z = grid_values(surface, name, log=log)
    mesh = ax.contourf(surface.xs.numpy(), surface.ys.numpy(), z, levels=levels, cmap="viridis")
    ax.contour(surface.xs.numpy(), surface.ys.numpy(), z, levels=levels, colors="k", linewidths=0.3)
    ax.plot([0.0], [0.0], "r+", markersize=8)
    for axis in (ax.xaxis, ax.yaxis):  # a few ticks keep the labels of a small panel apart
        axis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if colorbar is True:
        ax.figure.colorbar(mesh, ax=ax, shrink=0.85).set_label(value_label(name, log))
    elif colorbar is not False and colorbar is not None:
        ax.figure.colorbar(mesh, cax=colorbar).set_label(value_label(name, log))
    return ax


def plot_surface(
    ax: Any,
    surface: Surface,
    name: str,
    *,
    log: bool = False,
    xlabel: str = "alpha",
    ylabel: str = "beta",
    ticks: int = 5,
    zoom: float = 1.0,
) -> Any:
    """3-D surface of one value over the slice (``ax`` must be a 3-D axes), all three axes labelled.

    At most ``ticks`` ticks per axis keep the tick labels of a small panel apart; the z axis carries
    the value (``log10 NAME`` when ``log``); ``zoom`` > 1 enlarges the box in its panel (matplotlib
    leaves a wide margin around 3-D axes).
    """
    import numpy
    from matplotlib.ticker import MaxNLocator

    z = grid_values(surface, name, log=log)
    X, Y = numpy.meshgrid(surface.xs.numpy(), surface.ys.numpy())
    ax.plot_surface(X, Y, z, cmap="viridis", linewidth=0, antialiased=True)
    for axis, label in ((ax.xaxis, xlabel), (ax.yaxis, ylabel), (ax.zaxis, value_label(name, log))):
        axis.set_major_locator(MaxNLocator(ticks))
        axis.set_label_text(label, fontsize=8)
        axis.labelpad = 2
    ax.tick_params(labelsize=7, pad=0)
    ax.set_box_aspect(None, zoom=zoom)
    return ax


def contrast_color(rgba: Sequence[float]) -> str:
    """``"black"`` or ``"white"``, whichever contrasts more with the colour ``rgba`` (WCAG luminance).

    The relative luminance L of sRGB (IEC 61966-2-1) decides: black on L > 0.179, white otherwise,
    which gives a contrast ratio of at least 4.58 (WCAG asks 4.5 for small text).
    """

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in rgba[:3])
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.179 else "white"


def annotate_cells(
    ax: Any, image: Any, matrix: Any, *, fmt: str = "{:.2f}", fontsize: float = 8.0, missing: str = "-"
) -> Any:
    """Write every value of ``matrix`` in its cell of ``image`` (an ``imshow``), readable on any cell.

    The text is black or white by the luminance of the cell's colour (:func:`contrast_color`); NaN
    cells (drawn as the background, white) show ``missing`` in black.
    """
    import numpy

    for (i, j), value in numpy.ndenumerate(numpy.asarray(matrix, dtype=float)):
        nan = bool(numpy.isnan(value))
        color = "black" if nan else contrast_color(image.cmap(image.norm(value)))
        text = missing if nan else fmt.format(value)
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)
    return ax
