"""Convex relaxations of flat and norm-minimal solutions: ADMM + polish, factor search, CVXPY reference."""

from flatminima.solvers.convex.lp_depth import LpResult
from flatminima.solvers.convex.solve import solve_flat, solve_nuclear_norm

__all__ = ["LpResult", "solve_flat", "solve_nuclear_norm"]
