"""Loss landscapes of any PyTorch model or parameter dict: directions, 1-D and 2-D slices, plots.

Directions are drawn from an explicit generator and filter-normalized as in Li et al. (2018) by default.
"""

from flatminima.landscape.directions import (
    NORMALIZATIONS,
    as_params,
    direction_norm,
    hessian_directions,
    random_direction,
)
from flatminima.landscape.plots import plot_contour, plot_curve, plot_surface
from flatminima.landscape.slices import (
    Curve,
    Surface,
    basin_width,
    directional_width,
    interpolate,
    model_functions,
    slice_1d,
    slice_2d,
)

__all__ = [
    "NORMALIZATIONS",
    "Curve",
    "Surface",
    "as_params",
    "basin_width",
    "direction_norm",
    "directional_width",
    "hessian_directions",
    "interpolate",
    "model_functions",
    "plot_contour",
    "plot_curve",
    "plot_surface",
    "random_direction",
    "slice_1d",
    "slice_2d",
]
