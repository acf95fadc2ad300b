"""Extreme eigenvalues of a Hessian by the Lanczos method with full reorthogonalization.

From a random unit vector q_1, Lanczos builds an orthonormal basis Q_j of the Krylov space
span{q_1, H q_1, ..., H^{j-1} q_1} and the tridiagonal T_j = Q_j^T H Q_j. The eigenpairs (theta_i, s_i)
of T_j give Ritz pairs (theta_i, Q_j s_i) with residual r_i = ||H Q_j s_i - theta_i Q_j s_i||, and some
eigenvalue of H lies within r_i of theta_i (Weyl), and within r_i^2 / gap when gap separates theta_i from
the rest of the spectrum (Kato-Temple; Parlett 1998, Theorem 11.7.1). Lanczos stops when
min(r, r^2 / gap) <= tol * max|theta|, with gap estimated by the distance to the nearest other Ritz
value: the refined estimate tracks the true eigenvalue error closely, while the residual alone would ask
for about twice as many steps. Extreme eigenvalues converge at a rate governed by the square root of the
relative gap, against the gap itself for power iteration.

The recurrence, its full reorthogonalization (twice), its breakdown guard and the Ritz bounds floored at
``ROUND_OFF_FACTOR * eps * max|theta|`` (eps the dtype's unit round-off: no Ritz value is more accurate
than about eps ||H||) are the package's one Lanczos kernel, :mod:`flatminima.numerics.lanczos`, which
also serves the convex solvers' certificates; this module adds the operator interface, the random start
and the argument checks.

References:
    C. Lanczos. An iteration method for the solution of the eigenvalue problem of linear differential
    and integral operators. J. Res. Nat. Bur. Standards 45, 1950.
    G. H. Golub, C. F. Van Loan. Matrix Computations, 4th ed., Sections 10.1-10.3. 2013.
    B. N. Parlett. The Symmetric Eigenvalue Problem. SIAM, 1998, Chapter 11.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.curvature.estimate import draw_probes
from flatminima.curvature.linear_operator import LinearOperator
from flatminima.errors import ConfigurationError
from flatminima.numerics.lanczos import (
    ROUND_OFF_FACTOR,
    WHICH,
    LanczosState,
    block_lanczos,
    extreme_eigenpairs,
)

#: the state of :func:`lanczos_tridiagonal` (``alphas``, ``betas``, ``basis``, ``next_beta``,
#: ``num_matvecs``, ``matrix()``): the kernel's :class:`~flatminima.numerics.LanczosState` at block size 1
Tridiagonal = LanczosState


@dataclasses.dataclass(frozen=True)
class LanczosResult:
    """Ritz pairs from :func:`lanczos_eigenvalues`.

    Attributes:
        eigenvalues: (k,) largest first for which="largest", smallest first for which="smallest".
        eigenvectors: (n, k) orthonormal Ritz vectors, column i for eigenvalue i (flat parameter
            vectors; use ``HessianOperator.unflatten`` for per-parameter shapes).
        residuals: (k,) residual norms r_i = ||H v_i - theta_i v_i|| (rigorous eigenvalue error bounds).
        error_bounds: (k,) max(min(r_i, r_i^2 / gap_i), 10 eps max|theta|), gap_i the distance from
            theta_i to the nearest other Ritz value and eps the dtype's unit round-off: the error estimate
            the stopping rule uses (see the module).
        num_matvecs: the number of Hessian-vector products spent.
        converged: whether every error estimate reached ``max(tol, 10 eps) * max|theta|``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    error_bounds: torch.Tensor
    num_matvecs: int
    converged: bool


def lanczos_tridiagonal(
    operator: LinearOperator,
    start: torch.Tensor,
    num_iterations: int,
    *,
    stop: Callable[[Tridiagonal], bool] | None = None,
) -> Tridiagonal:
    """Run up to ``num_iterations`` Lanczos steps from ``start`` with full reorthogonalization.

    Stops early at an invariant subspace (beta below a round-off threshold) or when ``stop`` returns
    True; ``next_beta`` is the norm of the residual after the last step (0 at an invariant subspace).
    """
    return block_lanczos(operator.matmat, start, num_iterations, stop=stop)


def lanczos_eigenvalues(
    operator: LinearOperator,
    num_eigenvalues: int = 1,
    *,
    which: str = "largest",
    tol: float = 1e-10,
    max_iterations: int | None = None,
    generator: torch.Generator | None = None,
) -> LanczosResult:
    """The ``num_eigenvalues`` largest (or smallest) eigenvalues of H with their eigenvectors.

    Runs Lanczos with full reorthogonalization from a Gaussian start vector until every wanted Ritz
    pair has error estimate min(r, r^2 / gap) <= ``tol * max_i |theta_i|`` (see the module), or
    ``max_iterations`` steps (``converged=False``), or the Krylov space is exhausted (exact). The
    rigorous residual bounds are returned as ``residuals``. Memory: ``max_iterations`` vectors of size n.

    Args:
        operator: the symmetric operator H.
        num_eigenvalues: k >= 1.
        which: "largest" (top-k, algebraic) or "smallest" (bottom-k, algebraic: the most negative).
        tol: relative tolerance on the eigenvalue error estimate (> 0); values below 10 times the
            unit round-off of the operator's dtype (1.2e-6 for float32, 2.2e-15 for float64) are read
            as that floor.
        max_iterations: Lanczos steps at most (default min(n, max(200, 4k))).
        generator: the random stream of the start vector (required).

    Returns:
        LanczosResult(eigenvalues, eigenvectors, residuals, error_bounds, num_matvecs, converged).

    Raises:
        InputDataError: if ``num_eigenvalues`` is not in 1..n or ``tol`` <= 0.
        ConfigurationError: if ``which`` is not "largest" or "smallest".
        InputTypeError: if ``generator`` is missing.

    Example:
        >>> from flatminima.curvature import MatrixOperator
        >>> H = MatrixOperator(torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64)))
        >>> result = lanczos_eigenvalues(H, 2, generator=torch.Generator().manual_seed(0))
        >>> [round(float(x), 10) for x in result.eigenvalues]
        [5.0, 4.0]

    References:
        Lanczos (1950); Golub and Van Loan, Matrix Computations, Chapter 10.
    """
    generator = check_generator("generator", generator)
    n = operator.size
    k = check_int_in_range("num_eigenvalues", num_eigenvalues, low=1, high=n, high_name="n")
    check_real("tol", tol, low=0.0, low_open=True)
    if which not in WHICH:
        raise ConfigurationError(f"which must be 'largest' or 'smallest'; got which={which!r}.")
    limit = min(n, max(200, 4 * k)) if max_iterations is None else max_iterations
    limit = check_int_in_range("max_iterations", limit, low=k)
    start = draw_probes(
        n, 1, distribution="gaussian", generator=generator, dtype=operator.dtype, device=operator.device
    )[:, 0]

    state, pairs = extreme_eigenpairs(operator.matmat, start, k, which=which, tol=tol, max_blocks=limit)
    dtype, device = operator.dtype, operator.device
    floor = ROUND_OFF_FACTOR * torch.finfo(dtype).eps
    return LanczosResult(
        eigenvalues=pairs.values.to(dtype=dtype, device=device),
        eigenvectors=pairs.vectors(state),
        residuals=pairs.residuals.to(dtype=dtype, device=device),
        error_bounds=pairs.error_bounds.to(dtype=dtype, device=device),
        num_matvecs=state.num_matvecs,
        converged=len(pairs.values) == k and pairs.converged(max(tol, floor)),
    )
