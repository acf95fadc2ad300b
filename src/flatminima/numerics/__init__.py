"""Numerical kernels shared by the curvature estimators and the solvers, each implemented once.

A leaf layer: it depends on torch and :mod:`flatminima.errors` only, so that both
:mod:`flatminima.curvature` and :mod:`flatminima.solvers` (which must not import each other, nor may
curvature import the problems) can use it, and on flat tensors or block products only, never on a
problem, an operator class or a model.

* :func:`block_lanczos`, :func:`ritz_pairs`, :func:`extreme_eigenpairs`: block Lanczos (a single
  vector is a block of one) with full reorthogonalization, deflation at breakdown, and Ritz error
  bounds min(r, r^2 / gap) floored at round-off. Used by ``curvature.lanczos_eigenvalues``, the spectral
  density and ``measure()``, and by the convex solvers' operator-norm certificates.
* :func:`minimize_lbfgs`, :func:`strong_wolfe`: L-BFGS with a strong-Wolfe line search, curvature-pair
  guards and a deadline. Used by the convex factor search and the deep-factorization search.
  (SciPy's L-BFGS-B in :mod:`flatminima.curvature.epsilon` is a different, box-constrained method.)
"""

from flatminima.numerics.lanczos import (
    ROUND_OFF_FACTOR,
    LanczosState,
    RitzPairs,
    block_lanczos,
    extreme_eigenpairs,
    ritz_pairs,
)
from flatminima.numerics.lbfgs import LbfgsOutcome, LineSearchResult, minimize_lbfgs, strong_wolfe

__all__ = [
    "ROUND_OFF_FACTOR",
    "LanczosState",
    "LbfgsOutcome",
    "LineSearchResult",
    "RitzPairs",
    "block_lanczos",
    "extreme_eigenpairs",
    "minimize_lbfgs",
    "ritz_pairs",
    "strong_wolfe",
]
