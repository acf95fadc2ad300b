"""Curvature of any PyTorch loss: Hessian operators and flatness measures with error bars.

Operators: :class:`HessianOperator` (from a loss closure, a model and its data in an explicit train or
eval mode, or an objective), the curvature matrices of a model beyond the Hessian
(:class:`GeneralizedGaussNewtonOperator`, :class:`FisherOperator`, :class:`EmpiricalFisherOperator`,
chosen by name with :func:`curvature_operator`), :class:`MatrixOperator`, :class:`ScaledOperator`.
Estimators are free functions named ``<method>_<quantity>``; stochastic ones take a required
``generator`` and return an :class:`Estimate` (value, standard error, number of Hessian-vector products).
Measures of the loss and of the architecture beyond curvature: Hochreiter and Schmidhuber's flat box
(:func:`flat_box`), expected sharpness with its PAC-Bayes KL term (:func:`expected_sharpness_kl`) and
VC-dimension bounds from a network's counts (:func:`network_counts`, :func:`bartlett2019_vc_bound`,
:func:`harvey2017_vc_bound`).
"""

from flatminima.curvature._model import CurvatureWarning
from flatminima.curvature.capacity import (
    NetworkCounts,
    bartlett2019_vc_bound,
    harvey2017_vc_bound,
    network_counts,
)
from flatminima.curvature.curvature_matrices import (
    CURVATURES,
    EmpiricalFisherOperator,
    FisherOperator,
    GeneralizedGaussNewtonOperator,
    OutputCurvatureOperator,
    curvature_operator,
)
from flatminima.curvature.density import SpectralDensity, lanczos_spectral_density
from flatminima.curvature.diagonal import exact_hessian_diagonal, hutchinson_hessian_diagonal
from flatminima.curvature.epsilon import EpsilonSharpness, EpsilonSharpnessObjective, epsilon_sharpness
from flatminima.curvature.estimate import Estimate, VectorEstimate
from flatminima.curvature.expected_sharpness import ExpectedSharpness, expected_sharpness_kl
from flatminima.curvature.flat_box import FlatBox, flat_box
from flatminima.curvature.frobenius import (
    exact_squared_frobenius_norm,
    hutchinson_squared_frobenius_norm,
)
from flatminima.curvature.ggn_control_trace import GGNControlTrace, ggn_control_trace
from flatminima.curvature.gradients import gradient_variance, path_norm
from flatminima.curvature.hessian import HessianOperator
from flatminima.curvature.lanczos import LanczosResult, lanczos_eigenvalues
from flatminima.curvature.linear_operator import LinearOperator, MatrixOperator, ScaledOperator
from flatminima.curvature.measure import (
    MEASURES,
    MeasureFailureWarning,
    MeasureRecord,
    MeasureTable,
    MeasureValue,
    measure,
)
from flatminima.curvature.pac_bayes import PacBayesSigma, jiang_pac_bayes_bounds, pac_bayes_sigma
from flatminima.curvature.trace import (
    exact_scaled_trace,
    exact_trace,
    hutchinson_scaled_trace,
    hutchinson_trace,
    hutchpp_trace,
)
from flatminima.curvature.worst_case import WorstCaseSharpness, worst_case_sharpness

__all__ = [
    "CURVATURES",
    "MEASURES",
    "CurvatureWarning",
    "EmpiricalFisherOperator",
    "EpsilonSharpness",
    "EpsilonSharpnessObjective",
    "Estimate",
    "ExpectedSharpness",
    "FisherOperator",
    "FlatBox",
    "GGNControlTrace",
    "GeneralizedGaussNewtonOperator",
    "HessianOperator",
    "LanczosResult",
    "LinearOperator",
    "MatrixOperator",
    "MeasureFailureWarning",
    "MeasureRecord",
    "MeasureTable",
    "MeasureValue",
    "NetworkCounts",
    "OutputCurvatureOperator",
    "PacBayesSigma",
    "ScaledOperator",
    "SpectralDensity",
    "VectorEstimate",
    "WorstCaseSharpness",
    "bartlett2019_vc_bound",
    "curvature_operator",
    "epsilon_sharpness",
    "exact_hessian_diagonal",
    "exact_scaled_trace",
    "exact_squared_frobenius_norm",
    "exact_trace",
    "expected_sharpness_kl",
    "flat_box",
    "ggn_control_trace",
    "gradient_variance",
    "harvey2017_vc_bound",
    "hutchinson_hessian_diagonal",
    "hutchinson_scaled_trace",
    "hutchinson_squared_frobenius_norm",
    "hutchinson_trace",
    "hutchpp_trace",
    "jiang_pac_bayes_bounds",
    "lanczos_eigenvalues",
    "lanczos_spectral_density",
    "measure",
    "network_counts",
    "pac_bayes_sigma",
    "path_norm",
    "worst_case_sharpness",
]
