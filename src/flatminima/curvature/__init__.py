"""Curvature of any PyTorch loss: Hessian operators and flatness measures with error bars."""

from flatminima.curvature._model import CurvatureWarning
from flatminima.curvature.estimate import Estimate, VectorEstimate
from flatminima.curvature.hessian import HessianOperator
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
    "LinearOperator",
    "MatrixOperator",
    "ScaledOperator",
    "VectorEstimate",
    "exact_scaled_trace",
    "exact_trace",
    "hutchinson_scaled_trace",
    "hutchinson_trace",
    "hutchpp_trace",
]
