"""Matplotlib (Agg) drawings of landscapes: 1-D curves, contour maps and 3-D surfaces.

Each helper draws into a given axes and returns it, so studies compose them into one figure; matplotlib
is imported only here and lazily.
"""

from __future__ import annotations

from typing import Any

from flatminima.errors import InputDataError
from flatminima.landscape.slices import Curve, Surface


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


def plot_curve(ax: Any, curve: Curve, names: list[str], *, log: bool = False, **kwargs: Any) -> Any:
    """Draw the named values of a curve against t (one line each)."""
    for name in names:
        ax.plot(curve.ts.numpy(), _values(curve, name), label=name, **kwargs)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    return ax


def plot_contour(ax: Any, surface: Surface, name: str, *, levels: int = 20, log: bool = False) -> Any:
    """Filled contour map of one value over the slice (log10 when ``log``), with a colour bar."""
    import numpy

    z = _values(surface, name)
    if log:
        z = numpy.log10(numpy.clip(z, 1e-12, None))
    mesh = ax.contourf(surface.xs.numpy(), surface.ys.numpy(), z, levels=levels, cmap="viridis")
    ax.contour(surface.xs.numpy(), surface.ys.numpy(), z, levels=levels, colors="k", linewidths=0.3)
    ax.plot([0.0], [0.0], "r+", markersize=8)
    ax.figure.colorbar(mesh, ax=ax, shrink=0.8, label=f"log10 {name}" if log else name)
    return ax


def plot_surface(ax: Any, surface: Surface, name: str, *, log: bool = False) -> Any:
    """3-D surface of one value over the slice (``ax`` must be a 3-D axes)."""
    import numpy

    z = _values(surface, name)
    if log:
        z = numpy.log10(numpy.clip(z, 1e-12, None))
    X, Y = numpy.meshgrid(surface.xs.numpy(), surface.ys.numpy())
    ax.plot_surface(X, Y, z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_zlabel(f"log10 {name}" if log else name, fontsize=7)
    return ax
