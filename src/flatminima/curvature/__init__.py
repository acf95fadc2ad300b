"""Curvature of any PyTorch loss: Hessian operators and flatness measures with error bars.

Operators: :class:`HessianOperator` (from a loss closure, a model and its data in an explicit train or
eval mode, or an objective), :class:`MatrixOperator`, :class:`ScaledOperator`. Estimators are free
functions named ``<method>_<quantity>``; stochastic ones take a required ``generator`` and return an
:class:`Estimate` (value, standard error, number of Hessian-vector products).
"""

from flatminima.curvature._model import CurvatureWarning
from flatminima.curvature.density import SpectralDensity, lanczos_spectral_density
from flatminima.curvature.diagonal import exact_hessian_diagonal, hutchinson_hessian_diagonal
from flatminima.curvature.estimate import Estimate, VectorEstimate
from flatminima.curvature.frobenius import (
    exact_squared_frobenius_norm,
    hutchinson_squared_frobenius_norm,
)
from flatminima.curvature.hessian import HessianOperator
from flatminima.curvature.lanczos import LanczosResult, lanczos_eigenvalues
from flatminima.curvature.linear_operator import LinearOperator, MatrixOperator, ScaledOperator
from flatminima.curvature.trace import (
    exact_scaled_trace,
    exact_trace,
    hutchinson_scaled_trace,
    hutchinson_trace,
    hutchpp_trace,
)

__all__ = [
    "CurvatureWarning",
    "Estimate",
    "HessianOperator",
    "LanczosResult",
    "LinearOperator",
    "MatrixOperator",
    "ScaledOperator",
    "SpectralDensity",
    "VectorEstimate",
    "exact_hessian_diagonal",
    "exact_scaled_trace",
    "exact_squared_frobenius_norm",
    "exact_trace",
    "hutchinson_hessian_diagonal",
    "hutchinson_scaled_trace",
    "hutchinson_squared_frobenius_norm",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos_eigenvalues",
    "lanczos_spectral_density",
]
