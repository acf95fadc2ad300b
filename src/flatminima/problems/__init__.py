"""Statistical models of low-rank recovery: ``Problem.sample(generator=g) -> Instance``."""

from flatminima.problems.base import Instance, Problem
from flatminima.problems.nonuniform import power_law_mask, power_law_probabilities
from flatminima.problems.quadratic import QuadraticNetwork
from flatminima.problems.robust_pca import RobustPCA
from flatminima.problems.sensing import BilinearSensing, MatrixCompletion, MatrixSensing
from flatminima.problems.sparse import SparseRecovery

#: registry: name -> problem class (used by sweeps and the CLI).
PROBLEMS: dict[str, type[Problem]] = {
    cls.name: cls
    for cls in (
        MatrixSensing,
        BilinearSensing,
        MatrixCompletion,
        RobustPCA,
        QuadraticNetwork,
        SparseRecovery,
    )
}

__all__ = [
    "PROBLEMS",
    "BilinearSensing",
    "Instance",
    "MatrixCompletion",
    "MatrixSensing",
    "Problem",
    "QuadraticNetwork",
    "RobustPCA",
    "SparseRecovery",
    "power_law_mask",
    "power_law_probabilities",
]
