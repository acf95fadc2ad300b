"""Public entry points: :func:`solve_flat` (P_flat, the flat solutions) and :func:`solve_nuclear_norm` (NNM).

Both take a problem :class:`~flatminima.problems.Instance` and dispatch on its kind (dense/bilinear
sensing, completion, quadratic networks, robust PCA, sparse recovery with depth) and on the backend:
``"torch"`` (first-order, device-agnostic, certified) or ``"cvxpy"`` (CVXPY + Clarabel reference).

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024.
"""

from __future__ import annotations

import time

import torch

from flatminima._checks import check_int_in_range, check_real
from flatminima.errors import ConfigurationError, InputTypeError
from flatminima.problems import Instance
from flatminima.solvers._deadline import Deadline
from flatminima.solvers.convex.factor_search import FactorSearchSettings, solve_factor_search
from flatminima.solvers.convex.first_order import solve_first_order
from flatminima.solvers.convex.formulation import (
    VECTOR_KIND,
    Formulation,
    check_instance,
    formulate,
)
from flatminima.solvers.convex.lp_depth import LpResult, solve_lp
from flatminima.solvers.result import ConvexResult

BACKENDS = ("torch", "cvxpy")
METHODS = ("auto", "admm", "interior_point", "factor_search")

#: "auto" switches to the factor-space search above this many matrix entries d1 * d2 ...
AUTO_MAX_ENTRIES = 300 * 300
#: ... or above this many measurements when B B^* is a dense m x m matrix.
AUTO_MAX_DENSE_GRAM = 6000


def default_tolerance(dtype: torch.dtype, backend: str) -> float:
    """The default relative KKT tolerance: 1e-9 in float64 (1e-7 for the interior-point reference)."""
    if dtype == torch.float64:
        return 1e-9 if backend == "torch" else 1e-7
    return 1e-5


def _check_options(
    *,
    backend: object,
    method: object,
    eps: object,
    tolerance: object,
    max_iterations: object,
    time_limit: object,
    width: object,
    generator: object,
) -> None:
    if backend not in BACKENDS:
        raise ConfigurationError(
            f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}; got backend={backend!r}."
        )
    if method not in METHODS:
        raise ConfigurationError(
            f"method must be one of {', '.join(repr(m) for m in METHODS)}; got method={method!r}."
        )
    if backend == "cvxpy" and method != "auto":
        raise ConfigurationError(
            f"method={method!r} applies to the 'torch' backend only; use method='auto' with backend='cvxpy'."
        )
    if eps is not None:
        check_real("eps", eps, low=0.0)
    if tolerance is not None:
        check_real("tolerance", tolerance, low=0.0, low_open=True)
    if max_iterations is not None:
        check_int_in_range("max_iterations", max_iterations, low=1)
    if time_limit is not None:
        check_real("time_limit", time_limit, low=0.0, low_open=True)
    if width is not None:
        check_int_in_range("width", width, low=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}.")


def _solve(
    instance: Instance,
    relaxation: str,
    *,
    backend: str,
    method: str,
    eps: float | None,
    depth: int | None,
    tolerance: float | None,
    max_iterations: int | None,
    time_limit: float | None,
    width: int | None,
    generator: torch.Generator | None,
) -> ConvexResult | LpResult:
    start = time.perf_counter()
    _check_options(
        backend=backend,
        method=method,
        eps=eps,
        tolerance=tolerance,
        max_iterations=max_iterations,
        time_limit=time_limit,
        width=width,
        generator=generator,
    )
    instance = check_instance(instance)
    deadline = Deadline(None if time_limit is None else float(time_limit), start=start)
    tol = float(tolerance) if tolerance is not None else default_tolerance(instance.dtype, backend)
    if instance.kind == VECTOR_KIND:
        if depth is None:
            depth = 2
        check_int_in_range("depth", depth, low=2)
        if eps is not None:
            raise ConfigurationError(
                "eps applies to the matrix relaxations; the l_p depth problem is equality-constrained; "
                f"got eps={eps}."
            )
        return solve_lp(
            instance,
            depth=depth,
            weighted=relaxation == "flat",
            backend=backend,
            tolerance=tol,
            max_iterations=max_iterations,
            time_limit=time_limit,
            start_time=start,
        )
    if depth is not None:
        raise ConfigurationError(
            f"depth applies to sparse_recovery instances (the Hadamard l_p problem); got depth={depth} "
            f"for kind={instance.kind!r}."
        )
    formulation = formulate(instance, relaxation, eps=None if eps is None else float(eps))
    if backend == "cvxpy":
        from flatminima.solvers.convex.cvxpy_backend import solve_cvxpy

        return solve_cvxpy(
            formulation,
            tolerance=tol,
            time_limit=time_limit,
            max_iterations=max_iterations,
            deadline=deadline,
        )
    chosen = _choose_method(formulation, method)
    if chosen == "factor_search":
        settings = FactorSearchSettings(
            tolerance=tol,
            max_iterations=max_iterations if max_iterations is not None else 5000,
            time_limit=time_limit,
            width=width,
        )
        return solve_factor_search(
            formulation, settings=settings, generator=generator, start_time=start, deadline=deadline
        )
    return solve_first_order(
        formulation,
        tolerance=tol,
        max_iterations=max_iterations if max_iterations is not None else 10_000,
        time_limit=time_limit,
        start_time=start,
        method=chosen,
        deadline=deadline,
    )


def _choose_method(formulation: Formulation, method: str) -> str:
    """Resolve ``method="auto"``: Z-space ADMM (+ interior point) for moderate sizes, factor search above."""
    if method == "factor_search":
        if formulation.bmap is None or formulation.eps is not None or formulation.symmetric:
            raise ConfigurationError(
                "method='factor_search' supports equality-constrained non-symmetric kinds "
                "(matrix_sensing, bilinear_sensing, matrix_completion); got kind="
                f"{formulation.kind!r}{' with eps' if formulation.eps is not None else ''}."
            )
        return method
    if method in ("admm", "interior_point"):
        return method
    if formulation.bmap is None or formulation.eps is not None or formulation.symmetric:
        return "auto"
    d1, d2 = formulation.shape
    diagonal_gram = formulation.bmap.operator.diagonal_rescaling
    too_big = d1 * d2 > AUTO_MAX_ENTRIES or (
        not diagonal_gram and formulation.bmap.num_measurements > AUTO_MAX_DENSE_GRAM
    )
    return "factor_search" if too_big else "auto"


def solve_flat(
    instance: Instance,
    *,
    backend: str = "torch",
    method: str = "auto",
    eps: float | None = None,
    depth: int | None = None,
    tolerance: float | None = None,
    max_iterations: int | None = None,
    time_limit: float | None = None,
    width: int | None = None,
    generator: torch.Generator | None = None,
) -> ConvexResult | LpResult:
    """Solve the flat relaxation P_flat of an instance and certify the answer.

    P_flat: min ||Z||_* s.t. A(D1^{-1} Z D2^{-1}) = b, recovered matrix X = D1^{-1} Z D2^{-1}, with D1, D2
    the rescaling matrices of the operator (Ding et al. 2024, eq. (19)); by Theorem 3.2 its factors
    (``result.factors(k)``) are the flat solutions: the zero-loss factorizations L R^T with the smallest
    scaled Hessian trace 2(||D1 L||^2 + ||D2 R||^2). Per kind:

    * quadratic_network: min ||D X D||_* over symmetric X s.t. x_i^T X x_i = y_i;
    * robust_pca: min ||X||_* s.t. ||Y - X||_{1,1} <= ||S_true||_{1,1} (flat = norm-minimal there);
    * matrix_completion: the weighted trace norm with the empirical row/column marginals;
    * sparse_recovery: min sum_j D_jj^2 |x_j|^p s.t. A x = b with p = 2 - 2/depth (Section 9);
    * ``eps``: the noisy version min ||Z||_* s.t. ||A(D1^{-1} Z D2^{-1}) - b||_2 <= eps.

    Args:
        instance: a problem instance (its dtype/device are kept by the result); its ground truth may
            be None (an instance built from data): only recovery metrics need it.
        backend: ``"torch"`` (first-order ADMM / factor search, certified) or ``"cvxpy"`` (Clarabel).
        method: ``"auto"`` (ADMM, handing over to the interior-point method where ADMM stagnates, or the
            factor search for large instances), ``"admm"`` (d1 x d2 iterates), ``"interior_point"`` (the
            SDP path-following method, equality constraints, m <= 4000) or ``"factor_search"`` (width-k
            factors, for large structured instances).
        eps: noise level of the ball constraint (None: equality).
        depth: Hadamard depth k >= 2 for sparse_recovery (default 2, weighted l1).
        tolerance: relative KKT tolerance, finite and > 0 (default 1e-9 in float64; 1e-7 for the cvxpy
            backend).
        max_iterations: iteration limit >= 1 (ADMM iterations; L-BFGS steps for the factor search).
        time_limit: seconds > 0 for the whole solve; the status becomes ``TIME_LIMIT`` when exceeded.
            Every stage checks the clock (ADMM and interior-point iterations, the setup of the
            interior-point method, the polish's Gauss-Newton / conjugate-gradient / Newton-KKT steps,
            L-BFGS), so the solve returns within about one iteration's cost of the limit. The cvxpy
            backend passes the remaining time to Clarabel; CVXPY's model compilation before it is not
            interruptible.
        width: initial factor width of the factor search (default min(d1, d2, 10); grown if needed).
        generator: random stream of the factor search's start vectors (default: a fixed seed).

    Returns:
        A :class:`ConvexResult` (``.matrix``, ``.factors(k)``, ``.certificate``, ``.status``) or, for
        sparse_recovery, an :class:`LpResult`.

    Raises:
        ConfigurationError: unknown backend or method, or an option the kind does not take.
        InputDataError: a bad instance (non-finite observations, observations of the wrong length, a
            ground truth of the wrong shape, ... see :meth:`~flatminima.problems.Instance.validate`), a
            negative or non-finite eps, a non-positive or non-finite tolerance or time_limit,
            max_iterations or width < 1, ...
        InputTypeError: an option of the wrong type (e.g. max_iterations=2.5) or not an Instance.
        SingularRescalingError: D1 or D2 singular (e.g. completion with an empty row or column).
        SolverError: ``backend="cvxpy"`` without the ``reference`` extra.

    Example:
        >>> from flatminima.problems import MatrixSensing
        >>> inst = MatrixSensing(shape=(8, 8), rank=1, num_measurements=48).sample(
        ...     generator=torch.Generator().manual_seed(0))
        >>> res = solve_flat(inst)
        >>> res.status.value, res.recovery_error(inst.ground_truth) < 1e-6
        ('converged', True)

    References:
        Ding, Drusvyatskiy, Fazel, Harchaoui (2024), Theorems 3.2 and 3.3.
    """
    return _solve(
        instance,
        "flat",
        backend=backend,
        method=method,
        eps=eps,
        depth=depth,
        tolerance=tolerance,
        max_iterations=max_iterations,
        time_limit=time_limit,
        width=width,
        generator=generator,
    )


def solve_nuclear_norm(
    instance: Instance,
    *,
    backend: str = "torch",
    method: str = "auto",
    eps: float | None = None,
    tolerance: float | None = None,
    max_iterations: int | None = None,
    time_limit: float | None = None,
    width: int | None = None,
    generator: torch.Generator | None = None,
) -> ConvexResult | LpResult:
    """Solve plain nuclear-norm minimization (the norm-minimal solutions): min ||X||_* s.t. A(X) = b.

    The same kinds and options as :func:`solve_flat` with D1 = D2 = I (symmetric X for quadratic networks;
    unweighted l1 minimization for sparse_recovery). Its factors (``result.factors(k)``) are the
    balanced, norm-minimal factorizations (Srebro-Rennie-Jaakkola).

    Example:
        >>> from flatminima.problems import MatrixSensing
        >>> inst = MatrixSensing(shape=(8, 8), rank=1, num_measurements=48).sample(
        ...     generator=torch.Generator().manual_seed(0))
        >>> solve_nuclear_norm(inst).converged
        True

    References:
        Recht, Fazel, Parrilo (SIAM Review 2010); Ding et al. (2024), Section 1.
    """
    return _solve(
        instance,
        "nuclear_norm",
        backend=backend,
        method=method,
        eps=eps,
        depth=None,
        tolerance=tolerance,
        max_iterations=max_iterations,
        time_limit=time_limit,
        width=width,
        generator=generator,
    )
