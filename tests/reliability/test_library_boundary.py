"""The library boundary: bad instances and options get one clear error, time limits are honoured.

* Instances are validated where they enter (construction and every solver entry): non-finite or
  wrong-length observations, a ground truth of the wrong shape, mismatched dtypes, ... raise a
  ``flatminima.errors`` ValueError/TypeError subclass with a one-line message naming the field, the
  requirement and the value (never a raw torch error).
* ``ground_truth=None`` (an instance built from your own data) solves, certifies and factors; only the
  recovery metrics need M and they say so (``MissingGroundTruthError``).
* ``max_iterations``, ``tolerance``, ``time_limit``, ... are checked at every solver entry.
* ``time_limit`` is honoured: the elapsed time stays below the limit plus a generous bound derived from a
  measured single-iteration cost (never a tight timing assertion).

Like the solver tests, these pin torch to one intra-op thread (small LAPACK calls on a shared 2-core
machine slow down by orders of magnitude with oversubscribed OpenMP threads).
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib.util
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from flatminima.errors import FlatminimaError, InputDataError, InputTypeError, MissingGroundTruthError
from flatminima.objectives import BilinearFactorization
from flatminima.operators import DenseOperator, EntryMask, VectorOperator
from flatminima.problems import (
    Instance,
    MatrixCompletion,
    MatrixSensing,
    QuadraticNetwork,
    RobustPCA,
    SparseRecovery,
)
from flatminima.solvers import (
    ConvexResult,
    LpResult,
    Status,
    flat_regularity,
    regularity_report,
    solve_flat,
    solve_nuclear_norm,
)
from flatminima.solvers.nonconvex import NONCONVEX_SOLVERS

F64 = torch.float64
HAS_CVXPY = importlib.util.find_spec("cvxpy") is not None and importlib.util.find_spec("clarabel") is not None
SOLVERS = {"solve_flat": solve_flat, "solve_nuclear_norm": solve_nuclear_norm}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _sensing(seed: int = 0) -> Instance:
    return MatrixSensing(shape=(8, 8), rank=1, num_measurements=48).sample(
        generator=torch.Generator().manual_seed(seed)
    )


def _assert_clear(error: BaseException) -> None:
    """A deliberate flatminima error (ValueError/TypeError subclass) with a one-line message."""
    assert isinstance(error, FlatminimaError), f"raw {type(error).__name__}: {error}"
    assert isinstance(error, ValueError | TypeError)
    assert "\n" not in str(error)


# ---- instances validated where they enter -------------------------------------------------------------
@pytest.mark.parametrize(("bad", "shown"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_non_finite_observations_are_refused_at_construction(bad: float, shown: str) -> None:
    inst = _sensing()
    b = inst.observations.clone()
    b[3] = bad
    b[10] = bad
    with pytest.raises(InputDataError) as caught:
        dataclasses.replace(inst, observations=b)
    _assert_clear(caught.value)
    assert str(caught.value) == (
        f"observations must have finite entries; got observations[3]={shown} (the first of 2 non-finite "
        "entries)."
    )


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_observations_changed_in_place_are_caught_at_solver_entry(name: str) -> None:
    inst = _sensing()
    inst.observations[5] = math.nan  # after construction: only the solver's entry check can see it
    with pytest.raises(
        InputDataError, match=r"observations\[5\]=nan \(the only non-finite entry\)"
    ) as caught:
        SOLVERS[name](inst)
    _assert_clear(caught.value)


def test_non_finite_observations_reach_no_nonconvex_solver() -> None:
    inst = _sensing()
    objective = BilinearFactorization(inst, width=4)
    init = objective.random_params(generator=torch.Generator().manual_seed(1), scale=0.1)
    inst.observations[0] = math.inf
    with pytest.raises(InputDataError, match=r"observations\[0\]=inf"):
        NONCONVEX_SOLVERS["gd"](max_iterations=5).run(objective, init)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("length", [40, 50])
def test_wrong_length_observations(name: str, length: int) -> None:
    inst = _sensing()
    b = torch.zeros(length, dtype=F64)
    wrong = dataclasses.replace(inst, observations=b)  # each field is fine on its own
    message = (
        "observations must have length m = 48 (the operator's number of measurements); got "
        f"observations.shape=({length},)."
    )
    with pytest.raises(InputDataError) as caught:
        SOLVERS[name](wrong)
    _assert_clear(caught.value)
    assert str(caught.value) == message
    with pytest.raises(InputDataError, match=r"observations must have length m = 48"):
        Instance.from_data(inst.operator, b)


def test_wrong_length_observations_reach_no_nonconvex_solver() -> None:
    inst = _sensing()
    objective = BilinearFactorization(
        dataclasses.replace(inst, observations=torch.zeros(40, dtype=F64)), width=4
    )
    init = objective.random_params(generator=torch.Generator().manual_seed(1), scale=0.1)
    with pytest.raises(InputDataError, match=r"observations must have length m = 48"):
        NONCONVEX_SOLVERS["sam"](max_iterations=5).run(objective, init)


@pytest.mark.parametrize("shape", [(8, 7), (64,), (1, 8, 8)])
def test_ground_truth_of_the_wrong_shape(shape: tuple[int, ...]) -> None:
    inst = _sensing()
    if len(shape) != 2:
        with pytest.raises(
            InputDataError, match=r"ground_truth must be None or a matrix of shape \(d1, d2\)"
        ):
            dataclasses.replace(inst, ground_truth=torch.zeros(shape, dtype=F64))
        return
    wrong = dataclasses.replace(inst, ground_truth=torch.zeros(shape, dtype=F64))
    with pytest.raises(InputDataError) as caught:
        solve_flat(wrong)
    _assert_clear(caught.value)
    assert str(caught.value) == (
        "ground_truth must have the operator's input shape (d1, d2) = (8, 8); got ground_truth.shape=(8, 7)."
    )


def test_non_finite_ground_truth_names_the_first_bad_index() -> None:
    inst = _sensing()
    M = inst.require_ground_truth().clone()
    M[2, 5] = math.nan
    with pytest.raises(
        InputDataError, match=r"^ground_truth must have finite entries; got ground_truth\[2, 5\]=nan"
    ):
        dataclasses.replace(inst, ground_truth=M)


def test_mismatched_dtypes_and_types() -> None:
    inst = _sensing()
    with pytest.raises(
        InputDataError, match=r"observations and operator must share one dtype; got observations "
    ):
        solve_flat(dataclasses.replace(inst, observations=inst.observations.float()))
    with pytest.raises(
        InputDataError, match=r"ground_truth must have the dtype and device of the observations"
    ):
        solve_flat(dataclasses.replace(inst, ground_truth=inst.require_ground_truth().float()))
    with pytest.raises(
        InputTypeError, match=r"observations must have a floating dtype; got observations.dtype="
    ):
        dataclasses.replace(inst, observations=torch.zeros(48, dtype=torch.int64))
    with pytest.raises(InputDataError, match=r"observations must be a 1-D tensor of shape \(m,\); got "):
        dataclasses.replace(inst, observations=inst.observations.reshape(6, 8))
    with pytest.raises(InputTypeError, match=r"operator must be a flatminima.operators.MeasurementOperator"):
        Instance(None, "A", inst.observations, "matrix_sensing")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match=r"kind must be a non-empty string"):
        Instance(None, inst.operator, inst.observations, "")


def test_what_the_kind_needs_is_checked() -> None:
    sparse = SparseRecovery(dim=10, sparsity=2, num_measurements=6).sample(
        generator=torch.Generator().manual_seed(0)
    )
    dense = DenseOperator(torch.randn(6, 10, 1, generator=torch.Generator().manual_seed(1), dtype=F64))
    with pytest.raises(InputDataError, match=r"a sparse_recovery instance needs a VectorOperator"):
        solve_flat(dataclasses.replace(sparse, operator=dense))
    rpca = RobustPCA(shape=(6, 6), rank=1, outliers_per_line=1).sample(
        generator=torch.Generator().manual_seed(0)
    )
    with pytest.raises(InputDataError, match=r"metadata\['outlier_l1_norm'\] must be finite"):
        solve_flat(dataclasses.replace(rpca, metadata={**rpca.metadata, "outlier_l1_norm": math.nan}))


def test_entry_mask_indices_changed_in_place_are_caught() -> None:
    inst = MatrixCompletion(shape=(10, 10), rank=1, probability=0.8).sample(
        generator=torch.Generator().manual_seed(0)
    )
    assert isinstance(inst.operator, EntryMask)
    inst.operator.rows[0] = 99
    with pytest.raises(InputDataError) as caught:
        solve_nuclear_norm(inst)
    _assert_clear(caught.value)
    assert (
        str(caught.value) == "operator.rows (entry-mask indices) must lie in [0, 10); got values in [0, 99]."
    )


def test_from_data_infers_the_kind_and_fills_the_mask_metadata() -> None:
    mask = torch.tensor([[True, False, True], [False, False, True]])
    inst = Instance.from_data(EntryMask.from_mask(mask), torch.ones(3, dtype=F64))
    assert (inst.kind, inst.shape, inst.ground_truth, inst.dtype) == ("matrix_completion", (2, 3), None, F64)
    assert inst.metadata["empty_rows"] == [] and inst.metadata["empty_columns"] == [1]
    vector = Instance.from_data(VectorOperator(torch.eye(3, dtype=F64)), torch.ones(3, dtype=F64))
    assert vector.kind == "sparse_recovery"
    assert vector.to(dtype=torch.float32).dtype == torch.float32


# ---- ground_truth=None: solve, certify, factor; only recovery metrics need M ---------------------------
def _without_truth(inst: Instance) -> Instance:
    return dataclasses.replace(inst, ground_truth=None)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("method", ["auto", "interior_point", "factor_search"])
def test_no_ground_truth_solves_certifies_and_factors(name: str, method: str) -> None:
    inst = _sensing()
    with_truth = SOLVERS[name](inst, method=method)
    result = SOLVERS[name](_without_truth(inst), method=method)
    assert isinstance(result, ConvexResult) and isinstance(with_truth, ConvexResult)
    assert result.converged and result.certificate.satisfied
    torch.testing.assert_close(result.matrix, with_truth.matrix)
    L, R = result.factors(8)
    torch.testing.assert_close(L @ R.T, result.matrix)
    # the truth is only needed to measure recovery
    assert result.recovered(inst.ground_truth)


@pytest.mark.parametrize(
    "inst",
    [
        MatrixCompletion(shape=(10, 10), rank=1, probability=0.8).sample(
            generator=torch.Generator().manual_seed(0)
        ),
        QuadraticNetwork(dim=6, num_positive=1, num_measurements=40).sample(
            generator=torch.Generator().manual_seed(0)
        ),
        RobustPCA(shape=(10, 10), rank=1, outliers_per_line=1).sample(
            generator=torch.Generator().manual_seed(0)
        ),
    ],
    ids=lambda inst: inst.kind,
)
def test_no_ground_truth_for_every_matrix_kind(inst: Instance) -> None:
    result = solve_flat(_without_truth(inst))
    assert isinstance(result, ConvexResult) and result.converged
    assert result.recovery_error(inst.ground_truth) < 1e-6


def test_no_ground_truth_sparse_recovery_and_regularity() -> None:
    sparse = SparseRecovery(dim=20, sparsity=2, num_measurements=12).sample(
        generator=torch.Generator().manual_seed(0)
    )
    lp = solve_flat(_without_truth(sparse), depth=2)
    assert isinstance(lp, LpResult) and lp.converged
    assert lp.recovered(sparse.ground_truth)
    with pytest.raises(MissingGroundTruthError):
        lp.recovery_error(None)  # type: ignore[arg-type]
    report = regularity_report(_without_truth(_sensing()))
    assert report.norm_bound_holds and math.isnan(report.theorem_balancedness_bound)


@pytest.mark.skipif(not HAS_CVXPY, reason="needs the 'reference' extra (cvxpy + clarabel)")
@pytest.mark.reference
def test_no_ground_truth_cvxpy_backend() -> None:
    result = solve_flat(_without_truth(_sensing()), backend="cvxpy")
    assert isinstance(result, ConvexResult) and result.converged


def test_no_ground_truth_nonconvex_solver() -> None:
    inst = _without_truth(_sensing())
    objective = BilinearFactorization(inst, width=8)
    init = objective.random_params(generator=torch.Generator().manual_seed(1), scale=0.1)
    result = NONCONVEX_SOLVERS["gd"](step_size=0.1, max_iterations=300).run(objective, init)
    assert result.final("loss") < 1e-3 * result.history[0]["loss"]


def test_recovery_metrics_say_they_need_the_ground_truth() -> None:
    inst = _without_truth(_sensing())
    result = solve_flat(inst)
    assert isinstance(result, ConvexResult)
    for call in (
        lambda: result.recovery_error(inst.ground_truth),
        lambda: result.recovered(inst.ground_truth),
        lambda: inst.recovery_error(result.matrix),
        lambda: inst.require_ground_truth("the study"),
    ):
        with pytest.raises(
            MissingGroundTruthError, match=r"needs the ground truth M; .*ground_truth=None"
        ) as caught:
            call()
        _assert_clear(caught.value)
        assert isinstance(caught.value, ValueError)
    with pytest.raises(
        InputDataError, match=r"ground_truth must have shape \(8, 8\); got ground_truth.shape=\(8, 7\)\."
    ):
        result.recovery_error(torch.zeros(8, 7, dtype=F64))
    with pytest.raises(InputDataError, match=r"tolerance must be finite; got tolerance=nan\."):
        result.recovered(torch.zeros(8, 8, dtype=F64), tolerance=math.nan)


# ---- options validated at every solver entry --------------------------------------------------------
BAD_OPTIONS = [
    ({"max_iterations": -5}, InputDataError, r"^max_iterations must be >= 1; got max_iterations=-5\.$"),
    ({"max_iterations": 0}, InputDataError, r"^max_iterations must be >= 1; got max_iterations=0\.$"),
    (
        {"max_iterations": 2.5},
        InputTypeError,
        r"^max_iterations must be an integer; got 2.5 of type float\.$",
    ),
    ({"tolerance": math.nan}, InputDataError, r"^tolerance must be finite; got tolerance=nan\.$"),
    ({"tolerance": math.inf}, InputDataError, r"^tolerance must be finite; got tolerance=inf\.$"),
    ({"tolerance": 0.0}, InputDataError, r"^tolerance must satisfy 0.0 < tolerance; got tolerance=0.0\.$"),
    (
        {"time_limit": -1},
        InputDataError,
        r"^time_limit must satisfy 0.0 < time_limit; got time_limit=-1.0\.$",
    ),
    ({"time_limit": 0}, InputDataError, r"^time_limit must satisfy 0.0 < time_limit; got time_limit=0.0\.$"),
    ({"time_limit": math.nan}, InputDataError, r"^time_limit must be finite; got time_limit=nan\.$"),
    ({"time_limit": "1"}, InputTypeError, r"^time_limit must be a real number; got '1' of type str\.$"),
    ({"eps": math.inf}, InputDataError, r"^eps must be finite; got eps=inf\.$"),
    ({"width": 0}, InputDataError, r"^width must be >= 1; got width=0\.$"),
]


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize(("options", "error", "message"), BAD_OPTIONS, ids=lambda v: repr(v)[:30])
def test_invalid_convex_options(name: str, options: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        SOLVERS[name](_sensing(), **options)
    _assert_clear(caught.value)


@pytest.mark.parametrize("solver", sorted(NONCONVEX_SOLVERS))
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_iterations": -5}, r"^max_iterations must be >= 1; got max_iterations=-5\.$"),
        ({"time_limit": -1}, r"^time_limit must satisfy 0.0 < time_limit; got time_limit=-1.0\.$"),
        ({"time_limit": math.nan}, r"^time_limit must be finite; got time_limit=nan\.$"),
        ({"record_every": 0}, r"^record_every must be >= 1; got record_every=0\.$"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_invalid_nonconvex_options(solver: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(InputDataError, match=message) as caught:
        NONCONVEX_SOLVERS[solver](**options)
    _assert_clear(caught.value)


@pytest.mark.parametrize("solver", ["gd", "sam", "entropy_sgd", "trace_penalty", "large_step_gd"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_nonconvex_tolerance(solver: str, bad: float) -> None:
    with pytest.raises(InputDataError, match=rf"^tolerance must be finite; got tolerance={bad}\.$"):
        NONCONVEX_SOLVERS[solver](tolerance=bad)


def test_invalid_regularity_options() -> None:
    inst = _sensing()
    flat, nuclear = solve_flat(inst), solve_nuclear_norm(inst)
    assert isinstance(flat, ConvexResult) and isinstance(nuclear, ConvexResult)
    with pytest.raises(InputDataError, match=r"^slack must satisfy 0.0 <= slack; got slack=-1.0\.$"):
        flat_regularity(flat, nuclear, slack=-1.0)
    with pytest.raises(InputDataError, match=r"^ground_truth must have shape \(8, 8\)"):
        flat_regularity(flat, nuclear, ground_truth=torch.zeros(3, 3, dtype=F64))


# ---- time limits honoured ------------------------------------------------------------------------------
LIMITS = (0.01, 0.05, 0.2)


def _elapsed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def _bound(limit: float, one_iteration: float) -> float:
    """A generous bound: the limit plus the larger of 0.5 s and five measured single iterations."""
    return limit + max(0.5, 5.0 * one_iteration)


def _completion() -> Instance:
    return MatrixCompletion(shape=(30, 30), rank=3, probability=0.5).sample(
        generator=torch.Generator().manual_seed(1)
    )


def _gaussian_sensing() -> Instance:
    return MatrixSensing(shape=(15, 14), rank=3, num_measurements=100).sample(
        generator=torch.Generator().manual_seed(1)
    )


@pytest.mark.parametrize(
    ("solver", "options"),
    [
        ("solve_flat", {}),
        ("solve_flat", {"method": "admm"}),
        ("solve_flat", {"method": "interior_point"}),
        ("solve_flat", {"method": "factor_search"}),
        ("solve_nuclear_norm", {}),
    ],
    ids=lambda v: repr(v),
)
@pytest.mark.parametrize("make", [_completion, _gaussian_sensing], ids=["completion30", "sensing15x14"])
def test_convex_time_limits(solver: str, options: dict[str, Any], make: Callable[[], Instance]) -> None:
    inst = make()
    solve = SOLVERS[solver]
    # tolerance 1e-15: the certificate cannot be met, so every run goes to its time limit
    one_iteration, _ = _elapsed(lambda: solve(inst, tolerance=1e-15, max_iterations=1, **options))
    for limit in LIMITS:
        elapsed, result = _elapsed(lambda: solve(inst, tolerance=1e-15, time_limit=limit, **options))  # noqa: B023
        assert elapsed < _bound(limit, one_iteration), (limit, elapsed, one_iteration, result.message)
        assert result.status is not Status.MAX_ITERATIONS, result.message
        assert result.wall_time <= elapsed


def test_interior_point_refinement_stops_at_the_time_limit() -> None:
    """Regression: the refinement's dense Newton-KKT solves ran past the limit.

    Here the interior-point iterates reach the refinement after about 0.3 s; its Newton-KKT systems at
    the larger candidate ranks (about 1800 unknowns) took about 2 s together, so a 1 s limit returned after
    2.2 s. Now no Newton step starts that is predicted to end past the limit.
    """
    inst = _completion()
    options: dict[str, Any] = {"tolerance": 1e-15, "method": "interior_point"}
    one_iteration, _ = _elapsed(lambda: solve_flat(inst, max_iterations=1, **options))
    elapsed, result = _elapsed(lambda: solve_flat(inst, time_limit=1.0, **options))
    assert elapsed < _bound(1.0, one_iteration), (elapsed, one_iteration, result.message)


def test_every_stage_checks_an_expired_deadline() -> None:
    """Deterministic: given a deadline that has already passed, no stage starts its expensive work."""
    from flatminima.solvers._deadline import Deadline
    from flatminima.solvers.convex.constraints import AffineSet
    from flatminima.solvers.convex.interior_point import interior_point
    from flatminima.solvers.convex.lbfgs import lbfgs
    from flatminima.solvers.convex.linear_map import ScaledMap
    from flatminima.solvers.convex.newton import kkt_newton
    from flatminima.solvers.convex.polish import conjugate_gradient, gauss_newton
    from flatminima.solvers.convex.rank_polish import make_polish

    expired = Deadline(1e-9, start=time.perf_counter() - 1.0)
    inst = _sensing()
    bmap = ScaledMap(inst.operator, None, None)
    b = inst.observations
    U, s, Vh = torch.linalg.svd(inst.require_ground_truth())
    U, s, V = U[:, :1], s[:1], Vh[:1].mT
    lam = torch.zeros_like(b)
    assert kkt_newton(bmap, b, U, s, V, lam, deadline=expired) is None
    assert len(gauss_newton(bmap, b, U, s + 0.1, V, symmetric=False, deadline=expired).residuals) == 1
    rhs = torch.ones(5, dtype=F64)
    assert not conjugate_gradient(
        lambda x: x, rhs, tolerance=1e-12, max_iterations=10, deadline=expired
    ).any()
    polish = make_polish(AffineSet(bmap, b), symmetric=False, scale=1.0, tolerance=1e-9, deadline=expired)
    assert polish is not None and polish(U, s, V, torch.zeros(8, 8, dtype=F64)) is None
    outcome = interior_point(bmap, b, certify=lambda Z, y: None, deadline=expired)  # type: ignore[arg-type,return-value]
    assert (outcome.candidate, outcome.status, outcome.iterations) == (None, Status.TIME_LIMIT, 0)
    run = lbfgs(
        lambda x: (float(x @ x), 2 * x), rhs, gradient_tolerance=0.0, max_iterations=50, deadline=expired
    )
    assert run.iterations == 1  # one iteration always, then the deadline
    result = solve_flat(_completion(), tolerance=1e-15, time_limit=1e-9)
    assert (result.status, result.iterations) == (Status.TIME_LIMIT, 1)


@pytest.mark.parametrize("depth", [2, 3])
def test_sparse_recovery_time_limits(depth: int) -> None:
    """Regression for depth >= 3: the dual Newton iterations ignored the time limit (5.7 s at 0.05 s)."""
    inst = SparseRecovery(dim=2000, sparsity=10, num_measurements=400).sample(
        generator=torch.Generator().manual_seed(0)
    )
    one_iteration, _ = _elapsed(lambda: solve_flat(inst, depth=depth, tolerance=1e-15, max_iterations=1))
    elapsed, result = _elapsed(lambda: solve_flat(inst, depth=depth, tolerance=1e-15, time_limit=0.05))
    assert elapsed < _bound(0.05, one_iteration), (elapsed, one_iteration)
    assert result.status in (Status.TIME_LIMIT, Status.CONVERGED), result.message


@pytest.mark.skipif(not HAS_CVXPY, reason="needs the 'reference' extra (cvxpy + clarabel)")
@pytest.mark.reference
def test_cvxpy_time_limit() -> None:
    """Clarabel gets the time left after CVXPY built the model; compilation itself is not interruptible."""
    inst = _completion()
    one_iteration, _ = _elapsed(lambda: solve_flat(inst, backend="cvxpy", max_iterations=1))
    elapsed, result = _elapsed(lambda: solve_flat(inst, backend="cvxpy", time_limit=0.05))
    assert elapsed < _bound(0.05, one_iteration), (elapsed, one_iteration)
    assert result.status is Status.TIME_LIMIT, result.message


@pytest.mark.parametrize("solver", ["gd", "sam", "entropy_sgd", "large_step_gd", "hutchinson_penalty"])
def test_nonconvex_time_limits(solver: str) -> None:
    inst = _gaussian_sensing()
    objective = BilinearFactorization(inst, width=14)
    init = objective.random_params(generator=torch.Generator().manual_seed(0), scale=0.1)

    def run(**options: Any) -> Any:
        if solver != "hutchinson_penalty":  # the only one without a stopping tolerance
            options["tolerance"] = 0.0  # never converge: run into the limit
        configured = NONCONVEX_SOLVERS[solver](**options)
        return configured.run(objective, init, generator=torch.Generator().manual_seed(0))

    one_iteration, _ = _elapsed(lambda: run(max_iterations=1))
    for limit in LIMITS:
        elapsed, result = _elapsed(lambda: run(max_iterations=10**7, time_limit=limit))  # noqa: B023
        assert result.status in (Status.TIME_LIMIT, Status.DIVERGED), result.message
        assert elapsed < _bound(limit, one_iteration), (limit, elapsed, one_iteration)


# ---- the README's "Your own data" example runs as written --------------------------------------------
def test_readme_own_data_example() -> None:
    readme = Path(__file__).parents[2] / "README.md"
    text = readme.read_text(encoding="utf-8")
    section = text.split("### Your own data", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    test = doctest.DocTestParser().get_doctest(code, {}, "README: Your own data", str(readme), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
