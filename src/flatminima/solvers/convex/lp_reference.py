"""CVXPY + Clarabel reference for the l_p depth problem min sum_j w_j |x_j|^p s.t. A x = b.

References:
    Diamond and Boyd, CVXPY (JMLR 2016); Ding et al. (2024), Section 9.
"""

from __future__ import annotations

import fractions
import warnings

import numpy as np
import torch

from flatminima.solvers.convex.cvxpy_backend import CLARABEL_SETTINGS, import_cvxpy


def solve_lp_cvxpy(
    A: torch.Tensor, b: torch.Tensor, w: torch.Tensor, depth: int, *, time_limit: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, str, int]:
    """Return (x, lambda, CVXPY status, iterations); lambda follows min f - <lambda, A x - b>.

    ``time_limit``: seconds for Clarabel (None: none).
    """
    cp = import_cvxpy()
    A_np = A.detach().cpu().double().numpy()
    b_np = b.detach().cpu().double().numpy()
    w_np = w.detach().cpu().double().numpy()
    p = fractions.Fraction(2) - fractions.Fraction(2, depth)
    x = cp.Variable(A_np.shape[1])
    if p == 1:
        objective = cp.sum(cp.multiply(w_np, cp.abs(x)))
    else:
        objective = cp.sum(cp.multiply(w_np, cp.power(cp.abs(x), p)))
    constraint = A_np @ x == b_np
    problem = cp.Problem(cp.Minimize(objective), [constraint])
    try:
        with warnings.catch_warnings():  # the status carries "inaccurate"; it is mapped by the caller
            warnings.simplefilter("ignore", UserWarning)
            settings = dict(CLARABEL_SETTINGS)
            if time_limit is not None:
                settings["time_limit"] = float(time_limit)
            problem.solve(solver=cp.CLARABEL, **settings)
        status = str(problem.status)
    except cp.error.SolverError:
        status = "solver_error"
    iterations = int(getattr(problem.solver_stats, "num_iters", 0) or 0) if status != "solver_error" else 0
    if x.value is None:
        return torch.zeros_like(w), None, status, iterations
    x_t = torch.as_tensor(np.asarray(x.value), dtype=w.dtype, device=w.device)
    lam = None
    if constraint.dual_value is not None:
        lam = -torch.as_tensor(np.asarray(constraint.dual_value), dtype=w.dtype, device=w.device)
    return x_t, lam, status, iterations
