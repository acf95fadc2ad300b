"""Contract tests over every operator kind: adjoint identity, rescaling, factored products, to()."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flatminima.errors import InputDataError, InputTypeError
from flatminima.operators import (
    BilinearOperator,
    DenseOperator,
    EntryMask,
    IdentityOperator,
    MeasurementOperator,
    SymmetricRankOneOperator,
    VectorOperator,
    symmetric_sqrt,
)


def _randn(*shape: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def make_dense(g: torch.Generator) -> MeasurementOperator:
    return DenseOperator(_randn(7, 3, 4, generator=g))


def make_bilinear(g: torch.Generator) -> MeasurementOperator:
    return BilinearOperator(_randn(9, 3, generator=g), _randn(9, 5, generator=g))


def make_symmetric(g: torch.Generator) -> MeasurementOperator:
    return SymmetricRankOneOperator(_randn(8, 4, generator=g))


def make_mask(g: torch.Generator) -> MeasurementOperator:
    mask = torch.rand(4, 5, generator=g) < 0.6
    mask[0, 0] = True
    return EntryMask.from_mask(mask)


def make_identity(g: torch.Generator) -> MeasurementOperator:
    return IdentityOperator((3, 4))


def make_vector(g: torch.Generator) -> MeasurementOperator:
    return VectorOperator(_randn(5, 6, generator=g))


FACTORIES: dict[str, Callable[[torch.Generator], MeasurementOperator]] = {
    "dense": make_dense,
    "bilinear": make_bilinear,
    "symmetric": make_symmetric,
    "mask": make_mask,
    "identity": make_identity,
    "vector": make_vector,
}


KINDS = sorted(FACTORIES)


def make(kind: str, seed: int = 0) -> MeasurementOperator:
    return FACTORIES[kind](torch.Generator().manual_seed(seed))


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def sensing_matrices(op: MeasurementOperator) -> torch.Tensor:
    """Brute force: A_l = A^*(e_l), shape (m, d1, d2)."""
    return op.adjoint(torch.eye(op.num_measurements, dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3))
def test_adjoint_identity(kind: str, seed: int, batch: int) -> None:
    op = make(kind)
    d1, d2 = op.shape_in
    X = randn(batch, d1, d2, seed=seed)
    y = randn(batch, op.num_measurements, seed=seed + 1)
    lhs = (op.apply(X) * y).sum()
    rhs = (X * op.adjoint(y)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_apply_matches_sensing_matrices_and_batches(kind: str) -> None:
    op = make(kind)
    A = sensing_matrices(op)
    X = randn(2, 3, *op.shape_in, seed=3)
    expected = torch.einsum("lij,bcij->bcl", A, X)
    torch.testing.assert_close(op.apply(X), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.apply(X[0, 1]), expected[0, 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_rescaling_equals_brute_force_formula(kind: str) -> None:
    op = make(kind)
    A = sensing_matrices(op)
    m, (d1, d2) = op.num_measurements, op.shape_in
    D1_sq = torch.einsum("lij,lkj->ik", A, A) / (m * d2)
    D2_sq = torch.einsum("lji,ljk->ik", A, A) / (m * d1)
    got1, got2 = op.rescaling_squares()
    torch.testing.assert_close(got1, D1_sq, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got2, D2_sq, rtol=1e-12, atol=1e-14)
    D1, D2 = op.rescaling()
    torch.testing.assert_close(D1 @ D1, D1_sq, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(D2 @ D2, D2_sq, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(D1, D1.T)
    assert bool((torch.linalg.eigvalsh(D1) >= -1e-12).all())


@pytest.mark.parametrize("kind", KINDS)
def test_factored_products_match_dense(kind: str) -> None:
    op = make(kind)
    d1, d2 = op.shape_in
    L, R = randn(d1, 3, seed=4), randn(d2, 3, seed=5)
    y = randn(op.num_measurements, seed=6)
    G = op.adjoint(y)
    torch.testing.assert_close(op.apply_factored(L, R), op.apply(L @ R.T), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.adjoint_matmul(y, R), G @ R, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.adjoint_t_matmul(y, L), G.T @ L, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_sandwich_norms_match_brute_force(kind: str) -> None:
    op = make(kind)
    A = sensing_matrices(op)
    d1, d2 = op.shape_in
    P, Q = randn(d1, 2, seed=7), randn(3, d2, seed=8)
    expected = (P.T @ A @ Q.T).square().sum()
    torch.testing.assert_close(op.sandwich_norms(P, Q), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_to_changes_dtype_and_keeps_values(kind: str) -> None:
    op = make(kind)
    op32 = op.to(dtype=torch.float32)
    assert op32.dtype == torch.float32
    X = randn(*op.shape_in, seed=9)
    out = op32.apply(X.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), op.apply(X), rtol=1e-5, atol=1e-5)
    assert op32.rescaling_squares()[0].dtype == torch.float32


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_dtype_and_wrong_shape_raise(kind: str) -> None:
    op = make(kind)
    d1, d2 = op.shape_in
    with pytest.raises(InputDataError, match=r"expected X and the operator to share one dtype"):
        op.apply(torch.zeros(d1, d2, dtype=torch.float32))
    with pytest.raises(InputDataError, match=rf"X must have shape \(\.\.\., {d1}, {d2}\)"):
        op.apply(torch.zeros(d1 + 1, d2, dtype=torch.float64))
    with pytest.raises(InputDataError, match=r"y must have shape"):
        op.adjoint(torch.zeros(op.num_measurements + 1, dtype=torch.float64))
    with pytest.raises(InputTypeError, match="X must be a torch.Tensor"):
        op.apply([[1.0]])  # type: ignore[arg-type]


def test_gaussian_rescaling_is_close_to_identity() -> None:
    g = torch.Generator().manual_seed(0)
    op = DenseOperator(torch.randn(4000, 10, 10, generator=g, dtype=torch.float64))
    D1, _ = op.rescaling()
    assert float(torch.linalg.matrix_norm(D1 - torch.eye(10), ord=2)) < 0.1
    assert 1.0 <= op.rescaling_condition_number() < 1.2


def test_bilinear_never_materializes_dense_tensor_and_chunks_agree() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5000, 6, generator=g, dtype=torch.float64)
    b = torch.randn(5000, 4, generator=g, dtype=torch.float64)
    op = BilinearOperator(a, b)  # m > chunk size: the chunked paths run
    X = torch.randn(6, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op.apply(X), torch.einsum("li,ij,lj->l", a, X, b))
    y = torch.randn(5000, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op.adjoint(y), torch.einsum("l,li,lj->ij", y, a, b))
    D1_sq, D2_sq = op.rescaling_squares()
    torch.testing.assert_close(D1_sq, torch.einsum("l,li,lk->ik", b.square().sum(1), a, a) / (5000 * 4))
    torch.testing.assert_close(D2_sq, torch.einsum("l,li,lk->ik", a.square().sum(1), b, b) / (5000 * 6))


def test_entry_mask_counts_and_empty_lines() -> None:
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, False]])
    op = EntryMask.from_mask(mask)
    assert op.num_measurements == 3
    assert op.empty_rows() == [1]
    assert op.empty_columns() == [2]
    assert op.rescaling_condition_number() == float("inf")
    D1, D2 = op.rescaling_diagonals()
    torch.testing.assert_close(D1.square(), torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64) / (3 * 3))
    torch.testing.assert_close(D2.square(), torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64) / (3 * 3))
    assert torch.equal(op.mask(), mask)


def test_entry_mask_errors() -> None:
    rows = torch.tensor([0, 1])
    with pytest.raises(InputDataError, match=r"cols must lie in \[0, 2\); got values in \[0, 5\]"):
        EntryMask((2, 2), rows, torch.tensor([0, 5]))
    with pytest.raises(InputDataError, match="must be distinct"):
        EntryMask((2, 2), torch.tensor([0, 0]), torch.tensor([1, 1]))
    with pytest.raises(InputTypeError, match="rows must be a 1-D int64 tensor"):
        EntryMask((2, 2), rows.float(), torch.tensor([0, 1]))
    with pytest.raises(InputDataError, match="at least one observed entry"):
        EntryMask.from_mask(torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(InputDataError, match=r"shape\[0\] must be >= 1; got shape\[0\]=0"):
        EntryMask((0, 2), rows, rows)


def test_identity_rescaling_and_dense_errors() -> None:
    op = IdentityOperator((3, 5))
    D1, D2 = op.rescaling()
    torch.testing.assert_close(D1, torch.eye(3, dtype=torch.float64) / 15**0.5)
    torch.testing.assert_close(D2, torch.eye(5, dtype=torch.float64) / 15**0.5)
    with pytest.raises(InputDataError, match=r"matrices must have shape \(\*, \*, \*\)"):
        DenseOperator(torch.zeros(3, 4))
    with pytest.raises(InputDataError, match="matrices must have finite entries"):
        DenseOperator(torch.full((2, 2, 2), float("nan")))
    with pytest.raises(InputDataError, match="left and right must share dtype"):
        BilinearOperator(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(InputDataError, match="dtype must be a floating dtype"):
        op.to(dtype=torch.int64)
    with pytest.raises(InputDataError, match="rescaling_diagonals needs an operator with diagonal"):
        DenseOperator(torch.zeros(2, 2, 2)).rescaling_diagonals()


def test_symmetric_sqrt() -> None:
    B = randn(5, 5, seed=11)
    S = B @ B.T
    root = symmetric_sqrt(S)
    torch.testing.assert_close(root @ root, S)
    torch.testing.assert_close(root, root.T)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_operators_on_cuda(kind: str) -> None:
    op = make(kind)
    op_cuda = op.to("cuda")
    X = randn(*op.shape_in, seed=12)
    torch.testing.assert_close(op_cuda.apply(X.cuda()).cpu(), op.apply(X))
    with pytest.raises(InputDataError, match="on the same device"):
        op_cuda.apply(X)
