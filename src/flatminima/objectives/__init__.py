"""Factorized training losses with closed-form gradient, HVP and exact Hessian (scaled) trace.

Every objective maps a parameter tuple to a loss and provides ``value``, ``grad``, ``hvp``,
``hessian_trace``, ``scaled_trace`` (and ``block_traces``); :class:`AutogradObjective` derives the same
quantities by ``torch.func`` and is the reference the closed forms are tested against.

Example:
    >>> import torch
    >>> from flatminima.problems import MatrixSensing
    >>> g = torch.Generator().manual_seed(0)
    >>> inst = MatrixSensing(shape=(6, 6), rank=2, num_measurements=50).sample(generator=g)
    >>> obj = BilinearFactorization(inst, width=3)
    >>> params = obj.random_params(generator=g)
    >>> ref = AutogradObjective.from_objective(obj)
    >>> bool(torch.isclose(obj.hessian_trace(params), ref.hessian_trace(params)))
    True

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024. arXiv:2203.03756.
"""

from flatminima.objectives.autograd import AutogradObjective
from flatminima.objectives.base import Objective, Params, check_params
from flatminima.objectives.bilinear import BilinearFactorization
from flatminima.objectives.deep import DeepFactorization, deep_flat_factors, deep_trace_lower_bound
from flatminima.objectives.diagnostics import (
    balancedness,
    kappa,
    norm_gap,
    recovery_error,
    regularity_bounds,
)
from flatminima.objectives.hadamard import (
    HadamardFactorization,
    balanced_hadamard_factors,
    hadamard_flat_penalty,
)
from flatminima.objectives.robust_pca import RobustPCALoss, project_l1_ball
from flatminima.objectives.symmetric import SymmetricFactorization

__all__ = [
    "AutogradObjective",
    "BilinearFactorization",
    "DeepFactorization",
    "HadamardFactorization",
    "Objective",
    "Params",
    "RobustPCALoss",
    "SymmetricFactorization",
    "balanced_hadamard_factors",
    "balancedness",
    "check_params",
    "deep_flat_factors",
    "deep_trace_lower_bound",
    "hadamard_flat_penalty",
    "kappa",
    "norm_gap",
    "project_l1_ball",
    "recovery_error",
    "regularity_bounds",
]
