"""Tiny float64 instances and points (zero-loss and random) for the objective tests.

Every builder takes an explicit generator; nothing random happens at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from flatminima.objectives import (
    BilinearFactorization,
    DeepFactorization,
    HadamardFactorization,
    Objective,
    RobustPCALoss,
    SymmetricFactorization,
    balanced_hadamard_factors,
)
from flatminima.operators import DenseOperator, IdentityOperator
from flatminima.problems import (
    BilinearSensing,
    Instance,
    MatrixCompletion,
    MatrixSensing,
    QuadraticNetwork,
    RobustPCA,
    SparseRecovery,
)

F64 = torch.float64
Params = tuple[torch.Tensor, ...]

D1, D2, RANK = 4, 3, 2


# ---- instances ---------------------------------------------------------------------------------
def matrix_instance(kind: str, generator: torch.Generator) -> Instance:
    """A tiny noiseless (4 x 3, rank 2) instance measured by the operator ``kind``."""
    shape = (D1, D2)
    if kind == "dense":
        return MatrixSensing(shape=shape, rank=RANK, num_measurements=14).sample(generator=generator)
    if kind == "bilinear":
        return BilinearSensing(shape=shape, rank=RANK, num_measurements=14).sample(generator=generator)
    if kind == "mask":
        return MatrixCompletion(shape=shape, rank=RANK, probability=0.75).sample(generator=generator)
    if kind == "identity":
        base = MatrixSensing(shape=shape, rank=RANK, num_measurements=1).sample(generator=generator)
        operator = IdentityOperator(shape)
        return Instance(base.ground_truth, operator, operator.apply(base.ground_truth), "identity")
    if kind == "symmetric_rank_one":
        # A square instance measured by x x^T (a non-symmetric ground truth is fine for L R^T).
        base = MatrixSensing(shape=(D1, D1), rank=RANK, num_measurements=1).sample(generator=generator)
        net = QuadraticNetwork(dim=D1, num_positive=1, num_measurements=14).sample(generator=generator)
        return Instance(base.ground_truth, net.operator, net.operator.apply(base.ground_truth), "sym")
    raise ValueError(kind)


def quadratic_instance(kind: str, generator: torch.Generator, signature: tuple[int, int]) -> Instance:
    """A quadratic-network instance (d = 4) measured by x x^T or by dense symmetric matrices."""
    r1, r2 = signature
    net = QuadraticNetwork(dim=D1, num_positive=r1, num_negative=r2, num_measurements=16)
    inst = net.sample(generator=generator)
    if kind == "symmetric_rank_one":
        return inst
    G = torch.randn(16, D1, D1, generator=generator, dtype=F64)
    operator = DenseOperator((G + G.mT) / 2)
    return dataclasses.replace(inst, operator=operator, observations=operator.apply(inst.ground_truth))


def sparse_instance(generator: torch.Generator) -> Instance:
    return SparseRecovery(dim=5, sparsity=2, num_measurements=4).sample(generator=generator)


def robust_pca_instance(generator: torch.Generator) -> Instance:
    return RobustPCA(shape=(D1, D2), rank=1, outliers_per_line=1).sample(generator=generator)


# ---- zero-loss points --------------------------------------------------------------------------
def truth_factors(M: torch.Tensor, width: int, generator: torch.Generator) -> Params:
    """(L, R) with L R^T = M: rank-r SVD factors mixed by a random invertible r x r matrix, zero-padded."""
    U, S, Vh = torch.linalg.svd(M)
    r = int((1e-10 * S[0] < S).sum())
    B = torch.eye(r, dtype=M.dtype) + 0.3 * torch.randn(r, r, generator=generator, dtype=M.dtype)
    L = U[:, :r] * S[:r].sqrt() @ B
    R = Vh[:r].mT * S[:r].sqrt() @ torch.linalg.inv(B).mT
    pad = width - r
    return (
        torch.cat([L, L.new_zeros(L.shape[0], pad)], dim=1),
        torch.cat([R, R.new_zeros(R.shape[0], pad)], dim=1),
    )


def deep_truth_factors(M: torch.Tensor, widths: tuple[int, ...], generator: torch.Generator) -> Params:
    """(W_1, ..., W_N) with W_N ... W_1 = M (widths >= rank), zero-padded."""
    if not widths:
        return (M.clone(),)
    L, R = truth_factors(M, min(widths), generator)
    r = L.shape[1]
    dims = (M.shape[1], *widths, M.shape[0])
    layers = []
    for l in range(len(dims) - 1):
        W = torch.zeros(dims[l + 1], dims[l], dtype=M.dtype)
        if l == 0:
            W[:r] = R.mT
        elif l == len(dims) - 2:
            W[:, :r] = L
        else:
            W[:r, :r] = torch.eye(r, dtype=M.dtype)
        layers.append(W)
    return tuple(layers)


def pad_columns(U: torch.Tensor, width: int) -> torch.Tensor:
    return torch.cat([U, U.new_zeros(U.shape[0], width - U.shape[1])], dim=1)


# ---- cases -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    """An objective on a tiny instance and how to draw a point on it."""

    build: Callable[[torch.Generator], Objective]
    zero_loss: Callable[[Objective, torch.Generator], Params]


MATRIX_KINDS = ["dense", "bilinear", "mask", "identity", "symmetric_rank_one"]
DEEP_KINDS = ["identity", "dense", "bilinear", "mask"]
DEEP_WIDTHS = {1: (), 2: (3,), 3: (3, 2), 4: (2, 3, 2)}


def bilinear_case(kind: str) -> Case:
    return Case(
        build=lambda g: BilinearFactorization(matrix_instance(kind, g), width=3),
        zero_loss=lambda obj, g: truth_factors(obj.instance.ground_truth, 3, g),  # type: ignore[attr-defined]
    )


def deep_case(kind: str, depth: int) -> Case:
    widths = DEEP_WIDTHS[depth]
    return Case(
        build=lambda g: DeepFactorization(matrix_instance(kind, g), depth=depth, widths=widths),
        zero_loss=lambda obj, g: deep_truth_factors(obj.instance.ground_truth, widths, g),  # type: ignore[attr-defined]
    )


def symmetric_case(kind: str, signature: tuple[int, int], widths: tuple[int, int]) -> Case:
    def zero(obj: Objective, g: torch.Generator) -> Params:
        extras = obj.instance.extras  # type: ignore[attr-defined]
        return (
            pad_columns(extras["teacher_positive"], widths[0]),
            pad_columns(extras["teacher_negative"], widths[1]),
        )

    return Case(
        build=lambda g: SymmetricFactorization(quadratic_instance(kind, g, signature), widths=widths),
        zero_loss=zero,
    )


def hadamard_case(depth: int) -> Case:
    return Case(
        build=lambda g: HadamardFactorization(sparse_instance(g), depth=depth),
        zero_loss=lambda obj, g: balanced_hadamard_factors(
            obj.instance.ground_truth[:, 0],  # type: ignore[attr-defined]
            depth=depth,
        ),
    )


def robust_pca_case(radius_factor: float = 1.0) -> Case:
    def build(g: torch.Generator) -> Objective:
        inst = robust_pca_instance(g)
        return RobustPCALoss(inst, width=2, radius=radius_factor * inst.metadata["outlier_l1_norm"])

    return Case(
        build=build,
        zero_loss=lambda obj, g: truth_factors(obj.instance.ground_truth, 2, g),  # type: ignore[attr-defined]
    )


def all_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for kind in MATRIX_KINDS:
        cases[f"bilinear-{kind}"] = bilinear_case(kind)
    for kind in DEEP_KINDS:
        for depth in (2, 3, 4):
            cases[f"deep{depth}-{kind}"] = deep_case(kind, depth)
    cases["deep1-dense"] = deep_case("dense", 1)
    cases["symmetric-rank-one-(2,1)"] = symmetric_case("symmetric_rank_one", (2, 1), (3, 2))
    cases["symmetric-rank-one-(2,0)"] = symmetric_case("symmetric_rank_one", (2, 0), (3, 0))
    cases["symmetric-rank-one-(0,1)"] = symmetric_case("symmetric_rank_one", (0, 1), (0, 2))
    cases["symmetric-dense-(1,1)"] = symmetric_case("dense", (1, 1), (2, 2))
    for depth in (1, 2, 3, 4):
        cases[f"hadamard{depth}"] = hadamard_case(depth)
    cases["robust-pca-boundary"] = robust_pca_case(1.0)
    cases["robust-pca-interior"] = robust_pca_case(1.5)
    return cases


CASES = all_cases()


def dense_sensing_matrices(instance: Instance) -> torch.Tensor:
    """The sensing matrices A_l (m, d1, d2), recovered independently of apply as A^*(e_l)."""
    m = instance.operator.num_measurements
    return instance.operator.adjoint(torch.eye(m, dtype=instance.dtype))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, rtol: float = 1e-10) -> None:
    """||actual - expected|| <= rtol * max(||expected||, 1): relative for O(1) and larger quantities.

    Parameters, ground truths and sensing matrices are O(1), so 1 is the natural unit; quantities that
    vanish (a gradient at a zero-loss point) are then compared to rtol in absolute terms.
    """
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    error = float(torch.linalg.vector_norm(actual - expected))
    scale = max(float(torch.linalg.vector_norm(expected)), 1.0)
    assert error <= rtol * scale, f"error {error:.3e} > {rtol:.0e} * {scale:.3e}"


def assert_tuple_close(actual: Params, expected: Params, *, rtol: float = 1e-10) -> None:
    assert isinstance(actual, tuple)
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected, strict=True):
        assert_close(a, b, rtol=rtol)
