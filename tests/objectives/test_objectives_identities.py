"""Invariances and the closed-form identities of DESIGN section 4, checked with explicit numbers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from objective_cases import CASES, assert_close, assert_tuple_close, matrix_instance

from flatminima.errors import InputDataError
from flatminima.objectives import (
    BilinearFactorization,
    DeepFactorization,
    HadamardFactorization,
    RobustPCALoss,
    SymmetricFactorization,
    balanced_hadamard_factors,
    deep_flat_factors,
    deep_trace_lower_bound,
    hadamard_flat_penalty,
)
from flatminima.operators import IdentityOperator, SymmetricRankOneOperator, VectorOperator
from flatminima.problems import Instance

F64 = torch.float64
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)


def _orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=F64))
    return Q


def _sq(X: torch.Tensor) -> torch.Tensor:
    return X.square().sum()


# ---- invariance ---------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, name=st.sampled_from([n for n in sorted(CASES) if n.startswith("bilinear")]))
def test_bilinear_loss_and_traces_invariant_under_orthogonal_mixing(seed: int, name: str) -> None:
    generator = torch.Generator().manual_seed(seed)
    objective = CASES[name].build(generator)
    L, R = objective.random_params(generator=generator)
    Q = _orthogonal(L.shape[1], generator)
    rotated = (L @ Q, R @ Q)
    assert_close(objective.value(rotated), objective.value((L, R)))
    assert_close(objective.hessian_trace(rotated), objective.hessian_trace((L, R)))
    assert_close(objective.scaled_trace(rotated), objective.scaled_trace((L, R)))
    # the gradient is equivariant: grad(LQ, RQ) = grad(L, R) Q
    assert_tuple_close(objective.grad(rotated), tuple(g @ Q for g in objective.grad((L, R))))


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, radius_factor=st.sampled_from([0.5, 1.0, 2.0]))
def test_robust_pca_invariant_under_orthogonal_mixing(seed: int, radius_factor: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    inst = CASES["robust-pca-boundary"].build(generator).instance  # type: ignore[attr-defined]
    objective = RobustPCALoss(inst, width=2, radius=radius_factor * inst.metadata["outlier_l1_norm"])
    L, R = objective.random_params(generator=generator)
    Q = _orthogonal(2, generator)
    for method in (objective.value, objective.hessian_trace, objective.scaled_trace):
        assert_close(method((L @ Q, R @ Q)), method((L, R)))


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, name=st.sampled_from(["deep3-dense", "deep3-bilinear", "deep4-mask"]))
def test_deep_loss_and_trace_invariant_under_inner_rotations(seed: int, name: str) -> None:
    # W_l -> Q_l W_l Q_{l-1}^T with orthogonal Q_l on the inner sizes leaves E and every ||P||, ||Q||.
    generator = torch.Generator().manual_seed(seed)
    objective = CASES[name].build(generator)
    params = objective.random_params(generator=generator)
    N = len(params)
    rotations = [None] + [_orthogonal(params[l].shape[0], generator) for l in range(N - 1)] + [None]
    rotated = []
    for l, W in enumerate(params):
        left, right = rotations[l + 1], rotations[l]
        W = W if left is None else left @ W
        rotated.append(W if right is None else W @ right.mT)
    for method in (objective.value, objective.hessian_trace, objective.scaled_trace):
        assert_close(method(tuple(rotated)), method(params))


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_symmetric_loss_and_trace_invariant_under_orthogonal_mixing(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    objective = CASES["symmetric-rank-one-(2,1)"].build(generator)
    U1, U2 = objective.random_params(generator=generator)
    rotated = (U1 @ _orthogonal(3, generator), U2 @ _orthogonal(2, generator))
    for method in (objective.value, objective.hessian_trace, objective.scaled_trace):
        assert_close(method(rotated), method((U1, U2)))


def test_hadamard_invariant_under_paired_sign_flips(generator: torch.Generator) -> None:
    objective = CASES["hadamard3"].build(generator)
    v1, v2, v3 = objective.random_params(generator=generator)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0], dtype=F64)
    flipped = (v1 * signs, v2 * signs, v3)
    for method in (objective.value, objective.hessian_trace, objective.scaled_trace):
        assert_close(method(flipped), method((v1, v2, v3)))


# ---- identities ---------------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["zero_loss", "random"])
def test_identity_operator_traces_are_weighted_norms(point: str, generator: torch.Generator) -> None:
    # A = I, m = d1 d2, D1^2 = D2^2 = I / (d1 d2): str = 2 (||L||^2 + ||R||^2) / (d1 d2) and
    # tr = 2 (||L||^2 / d1 + ||R||^2 / d2), at zero loss and elsewhere.
    case = CASES["bilinear-identity"]
    objective = case.build(generator)
    L, R = (
        case.zero_loss(objective, generator)
        if point == "zero_loss"
        else objective.random_params(generator=generator)
    )
    d1, d2 = L.shape[0], R.shape[0]
    assert (d1, d2) == (4, 3)
    assert_close(objective.scaled_trace((L, R)), 2 * (_sq(L) + _sq(R)) / (d1 * d2))
    assert_close(objective.hessian_trace((L, R)), 2 * (_sq(L) / d1 + _sq(R) / d2))


@pytest.mark.parametrize("kind", ["dense", "bilinear", "mask", "symmetric_rank_one"])
def test_bilinear_traces_match_design_formula_with_rescaling_roots(
    kind: str, generator: torch.Generator
) -> None:
    inst = matrix_instance(kind, generator)
    objective = BilinearFactorization(inst, width=3)
    L, R = objective.random_params(generator=generator)
    D1, D2 = inst.operator.rescaling()
    d1, d2 = inst.operator.shape_in
    assert_close(objective.scaled_trace((L, R)), 2 * (_sq(D1 @ L) + _sq(D2 @ R)))
    assert_close(objective.hessian_trace((L, R)), 2 * (d2 * _sq(D1 @ L) + d1 * _sq(D2 @ R)))


def test_robust_pca_traces_are_plain_norms(generator: torch.Generator) -> None:
    objective = CASES["robust-pca-boundary"].build(generator)
    L, R = objective.random_params(generator=generator)
    assert_close(objective.scaled_trace((L, R)), 2 * (_sq(L) + _sq(R)))
    assert_close(objective.hessian_trace((L, R)), 2 * (3 * _sq(L) + 4 * _sq(R)))


@pytest.mark.parametrize("name", ["symmetric-rank-one-(2,1)", "symmetric-rank-one-(2,0)"])
def test_symmetric_trace_on_zero_loss_set(name: str, generator: torch.Generator) -> None:
    # On S: tr = 8 d (||D U1||^2 + ||D U2||^2) and str = tr / d (DESIGN 4, quadratic networks).
    case = CASES[name]
    objective = case.build(generator)
    U1, U2 = case.zero_loss(objective, generator)
    D, D_again = objective.instance.operator.rescaling()  # type: ignore[attr-defined]
    assert_close(D, D_again)
    d = U1.shape[0]
    expected = 8 * d * (_sq(D @ U1) + _sq(D @ U2))
    assert_close(objective.hessian_trace((U1, U2)), expected)
    assert_close(objective.scaled_trace((U1, U2)), expected / d)


def test_symmetric_trace_off_zero_loss_set_has_residual_term(generator: torch.Generator) -> None:
    case = CASES["symmetric-rank-one-(2,1)"]
    objective = case.build(generator)
    assert isinstance(objective, SymmetricFactorization)
    U1, U2 = objective.random_params(generator=generator)
    D, _ = objective.instance.operator.rescaling()
    res = objective.residual((U1, U2))
    operator = objective.instance.operator
    assert isinstance(operator, SymmetricRankOneOperator)
    traces_A = operator.vectors.square().sum(-1)  # tr(x x^T) = ||x||^2
    residual_term = 4 / res.numel() * (3 - 2) * (res @ traces_A)
    assert abs(float(residual_term)) > 1e-3
    d = U1.shape[0]
    expected = 8 * d * (_sq(D @ U1) + _sq(D @ U2)) + residual_term
    assert_close(objective.hessian_trace((U1, U2)), expected)


def test_deep_depth_two_equals_bilinear(generator: torch.Generator) -> None:
    inst = matrix_instance("bilinear", generator)
    deep = DeepFactorization(inst, depth=2, widths=(3,))
    flat = BilinearFactorization(inst, width=3)
    W1, W2 = deep.random_params(generator=generator)
    V1, V2 = deep.random_params(generator=generator)
    L, R = W2, W1.mT
    assert_close(deep.value((W1, W2)), flat.value((L, R)))
    assert_close(deep.scaled_trace((W1, W2)), flat.scaled_trace((L, R)))
    assert_close(deep.hessian_trace((W1, W2)), flat.hessian_trace((L, R)))
    g1, g2 = deep.grad((W1, W2))
    gL, gR = flat.grad((L, R))
    assert_tuple_close((g1.mT, g2), (gR, gL))
    h1, h2 = deep.hvp((W1, W2), (V1, V2))
    hL, hR = flat.hvp((L, R), (V2, V1.mT))
    assert_tuple_close((h1.mT, h2), (hR, hL))


def _identity_instance(M: torch.Tensor) -> Instance:
    operator = IdentityOperator(tuple(M.shape))  # type: ignore[arg-type]
    return Instance(M, operator, operator.apply(M), "identity")


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_deep_trace_lower_bound_attained_for_rank_one(depth: int, generator: torch.Generator) -> None:
    d_N, d_0, width, s = 4, 3, 2, 1.7
    u = torch.randn(d_N, generator=generator, dtype=F64)
    v = torch.randn(d_0, generator=generator, dtype=F64)
    u, v = u / u.norm(), v / v.norm()
    E = s * torch.outer(u, v)
    objective = DeepFactorization(_identity_instance(E), depth=depth, widths=width)
    beta = (s / (d_0 * d_N) ** 0.5) ** (1 / depth)
    e1 = torch.zeros(width, dtype=F64)
    e1[0] = 1.0
    layers = [d_0**0.5 * beta * torch.outer(e1, v)]
    layers += [beta * torch.outer(e1, e1) for _ in range(depth - 2)]
    layers += [d_N**0.5 * beta * torch.outer(u, e1)]
    params = tuple(layers)
    assert float(objective.value(params)) < 1e-28
    bound = deep_trace_lower_bound(E, depth)
    m = d_N * d_0
    # hessian_trace = (2/m) sum_l ||P_l||^2 ||Q_l||^2 for A = I; here every term equals the bound / N
    assert_close(objective.hessian_trace(params), 2 / m * bound)
    assert float(bound) == pytest.approx(depth * (d_0 * d_N) ** (1 / depth) * s ** (2 * (depth - 1) / depth))


def test_deep_trace_lower_bound_attained_at_depth_two_for_any_rank(generator: torch.Generator) -> None:
    E = torch.randn(4, 3, generator=generator, dtype=F64)
    U, S, Vh = torch.linalg.svd(E, full_matrices=False)
    a = (4 / 3) ** 0.25  # (d_N / d_0)^(1/4): W_1 = a^-1 S^(1/2) V^T, W_2 = a U S^(1/2)
    params = ((S.sqrt()[:, None] * Vh) / a, a * U * S.sqrt())
    objective = DeepFactorization(_identity_instance(E), depth=2, widths=3)
    assert float(objective.value(params)) < 1e-28
    assert_close(objective.hessian_trace(params), 2 / 12 * deep_trace_lower_bound(E, 2))


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_deep_flat_factors_attain_the_bound_at_every_rank(
    depth: int, rank: int, generator: torch.Generator
) -> None:
    # The Gatmiry et al. bound is a minimum, not only an infimum: explicit factors attain it.
    E = torch.randn(4, rank, generator=generator, dtype=F64) @ torch.randn(
        rank, 3, generator=generator, dtype=F64
    )
    widths = (rank + 1,) * (depth - 1)
    params = deep_flat_factors(E, depth, widths)
    objective = DeepFactorization(_identity_instance(E), depth=depth, widths=widths)
    assert float(objective.value(params)) < 1e-28
    assert_close(objective.hessian_trace(params), 2 / 12 * deep_trace_lower_bound(E, depth))
    # the layers are not the "balanced" S^(1/N) factorization for N >= 3: that one is strictly sharper
    if depth >= 3 and rank >= 2:
        U, S, Vh = torch.linalg.svd(E, full_matrices=False)
        root = S[:rank] ** (1 / depth)
        balanced = [root[:, None] * Vh[:rank]]
        balanced += [torch.diag(root) for _ in range(depth - 2)]
        balanced += [U[:, :rank] * root]
        sharper = DeepFactorization(_identity_instance(E), depth=depth, widths=rank)
        assert float(sharper.value(tuple(balanced))) < 1e-26
        assert float(sharper.hessian_trace(tuple(balanced))) > float(objective.hessian_trace(params)) * (
            1 + 1e-3
        )


def test_deep_flat_factors_defaults_and_errors() -> None:
    E = torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=F64))
    assert [tuple(W.shape) for W in deep_flat_factors(E, 3)] == [(2, 3), (2, 2), (3, 2)]
    zero = deep_flat_factors(torch.zeros(3, 2, dtype=F64), 2)
    assert [float(W.abs().sum()) for W in zero] == [0.0, 0.0]
    with pytest.raises(InputDataError, match=r"widths must be >= rank E = 2; got widths=\(1,\)\."):
        deep_flat_factors(E, 2, 1)


@pytest.mark.parametrize("depth", [3, 4])
def test_deep_trace_at_least_lower_bound(depth: int, generator: torch.Generator) -> None:
    E = torch.randn(4, 3, generator=generator, dtype=F64)
    objective = DeepFactorization(_identity_instance(E), depth=depth, widths=3)
    for _ in range(20):
        params = objective.random_params(generator=generator)
        E_params = objective.end_to_end(params)
        assert float(objective.hessian_trace(params)) >= 2 / 12 * float(
            deep_trace_lower_bound(E_params, depth)
        ) * (1 - 1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_hadamard_flat_penalty_is_the_minimal_trace(depth: int, generator: torch.Generator) -> None:
    objective = CASES[f"hadamard{depth}"].build(generator)
    assert isinstance(objective, HadamardFactorization)
    x = objective.instance.ground_truth[:, 0]
    penalty = objective.flat_penalty(x)
    # balanced factors attain it (AM-GM equality) ...
    balanced = balanced_hadamard_factors(x, depth=depth)
    assert_close(objective.hessian_trace(balanced), penalty)
    # ... and it equals 2 k sum_j D_jj^2 |x_j|^(2 - 2/k) with D = diag(||a_j||) / sqrt(m)
    operator = objective.instance.operator
    assert isinstance(operator, VectorOperator)
    A = operator.matrix
    scales = A.norm(dim=0) / A.shape[0] ** 0.5
    expected = 2 * depth * (scales**2 * x.abs() ** (2 - 2 / depth)).sum()
    assert_close(penalty, expected)
    assert_close(hadamard_flat_penalty(x, depth=depth, scales=scales), expected)
    # any other factorization of x has a trace at least as large
    for _ in range(10):
        others = [1 + torch.rand(5, generator=generator, dtype=F64) for _ in range(depth - 1)]
        first = x / torch.stack(others).prod(0) if others else x
        params = (first, *others)
        assert_close(objective.end_to_end(params)[:, 0], x)
        assert float(objective.hessian_trace(params)) >= float(penalty) * (1 - 1e-12)
