"""Bad input gets a clear error (one pytest.raises per message); float32 instances work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from objective_cases import CASES, matrix_instance, quadratic_instance, sparse_instance

from flatminima.errors import InputDataError, InputTypeError
from flatminima.objectives import (
    AutogradObjective,
    BilinearFactorization,
    DeepFactorization,
    HadamardFactorization,
    SymmetricFactorization,
    balanced_hadamard_factors,
    balancedness,
    deep_trace_lower_bound,
    hadamard_flat_penalty,
    kappa,
    norm_gap,
    recovery_error,
    regularity_bounds,
)
from flatminima.operators import DenseOperator

F64 = torch.float64


@pytest.fixture
def bilinear(generator: torch.Generator) -> BilinearFactorization:
    return BilinearFactorization(matrix_instance("dense", generator), width=3)


@pytest.fixture
def params(bilinear: BilinearFactorization, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    return bilinear.random_params(generator=generator)


# ---- parameter tuples ---------------------------------------------------------------------------
def test_params_must_be_a_tuple(bilinear: BilinearFactorization, params: tuple) -> None:
    with pytest.raises(InputTypeError, match=r"params must be a tuple of 2 tensors \(L, R\); got Tensor\."):
        bilinear.value(params[0])


def test_params_wrong_length(bilinear: BilinearFactorization, params: tuple) -> None:
    with pytest.raises(InputDataError, match=r"params must have 2 entries \(L, R\); got 3\."):
        bilinear.grad((*params, params[0]))


def test_params_entry_not_a_tensor(bilinear: BilinearFactorization, params: tuple) -> None:
    with pytest.raises(InputTypeError, match=r"params\[1\] \(R\) must be a torch.Tensor; got ndarray\."):
        bilinear.value([params[0], np.zeros((3, 3))])  # type: ignore[arg-type]


def test_params_entry_not_floating(bilinear: BilinearFactorization, params: tuple) -> None:
    with pytest.raises(
        InputTypeError, match=r"params\[0\] \(L\) must have a floating dtype; got torch.int64\."
    ):
        bilinear.value((torch.zeros(4, 3, dtype=torch.int64), params[1]))


def test_params_wrong_shape(bilinear: BilinearFactorization, params: tuple) -> None:
    with pytest.raises(InputDataError, match=r"params\[0\] \(L\) must have shape \(4, 3\); got \(4, 2\)\."):
        bilinear.hessian_trace((params[0][:, :2], params[1]))


def test_params_mixed_dtypes(bilinear: BilinearFactorization, params: tuple) -> None:
    with pytest.raises(
        InputDataError,
        match=r"params\[1\] \(R\) must have the dtype of the objective, torch.float64; got torch.float32\.",
    ):
        bilinear.scaled_trace((params[0], params[1].float()))


def test_params_wrong_device(bilinear: BilinearFactorization, params: tuple) -> None:
    with pytest.raises(
        InputDataError, match=r"params\[0\] \(L\) must be on the device of the objective, cpu; got meta\."
    ):
        bilinear.value((params[0].to("meta"), params[1]))


@pytest.mark.parametrize("index", [0, 1])
def test_params_nan(bilinear: BilinearFactorization, params: tuple, index: int) -> None:
    bad = list(params)
    bad[index] = bad[index].clone()
    bad[index][0, 0] = float("nan")
    name = "LR"[index]
    with pytest.raises(
        InputDataError, match=rf"params\[{index}\] \({name}\) must have finite entries; got NaN or inf\."
    ):
        bilinear.value(tuple(bad))


def test_direction_is_validated_with_its_own_label(bilinear: BilinearFactorization, params: tuple) -> None:
    with pytest.raises(
        InputDataError, match=r"direction\[1\] \(R\) must have shape \(3, 3\); got \(3, 1\)\."
    ):
        bilinear.hvp(params, (params[0], params[1][:, :1]))


def test_names_in_messages_follow_the_objective(generator: torch.Generator) -> None:
    deep = CASES["deep3-dense"].build(generator)
    p = deep.random_params(generator=generator)
    with pytest.raises(InputDataError, match=r"params\[2\] \(W_3\) must have shape \(4, 2\); got \(2, 4\)\."):
        deep.value((p[0], p[1], p[2].mT))
    hadamard = CASES["hadamard2"].build(generator)
    with pytest.raises(InputDataError, match=r"params must have 2 entries \(v_1, v_2\); got 1\."):
        hadamard.value((torch.ones(5, dtype=F64),))


# ---- constructors -------------------------------------------------------------------------------
def test_width_must_be_positive(generator: torch.Generator) -> None:
    inst = matrix_instance("dense", generator)
    with pytest.raises(InputDataError, match=r"width must be >= 1; got width=0\."):
        BilinearFactorization(inst, width=0)
    with pytest.raises(InputTypeError, match=r"width must be an integer; got 2.5 of type float\."):
        BilinearFactorization(inst, width=2.5)  # type: ignore[arg-type]


def test_instance_must_be_an_instance() -> None:
    with pytest.raises(
        InputTypeError, match=r"instance must be a flatminima.problems.Instance .*; got dict\."
    ):
        BilinearFactorization({}, width=2)  # type: ignore[arg-type]


def test_symmetric_widths_errors(generator: torch.Generator) -> None:
    inst = quadratic_instance("symmetric_rank_one", generator, (1, 0))
    with pytest.raises(InputDataError, match=r"widths must satisfy k1 \+ k2 >= 1; got widths=\(0, 0\)\."):
        SymmetricFactorization(inst, widths=(0, 0))
    with pytest.raises(InputDataError, match=r"widths\[1\] \(k2\) must be >= 0; got widths\[1\] \(k2\)=-1\."):
        SymmetricFactorization(inst, widths=(1, -1))
    with pytest.raises(InputTypeError, match=r"widths must be a pair \(k1, k2\) of integers; got widths=3\."):
        SymmetricFactorization(inst, widths=3)  # type: ignore[arg-type]


def test_symmetric_needs_symmetric_sensing_matrices(generator: torch.Generator) -> None:
    inst = quadratic_instance("symmetric_rank_one", generator, (1, 0))
    A = torch.randn(16, 4, 4, generator=generator, dtype=F64)
    dense = dataclasses.replace(inst, operator=DenseOperator(A))
    with pytest.raises(InputDataError, match=r"the DenseOperator's matrices are not symmetric"):
        SymmetricFactorization(dense, widths=(1, 0))
    with pytest.raises(InputDataError, match=r"needs a square operator; got shape_in=\(4, 3\)\."):
        SymmetricFactorization(matrix_instance("dense", generator), widths=(1, 0))
    square_mask = dataclasses.replace(inst, operator=matrix_instance("identity", generator).operator)
    with pytest.raises(InputDataError, match=r"needs a square operator"):
        SymmetricFactorization(square_mask, widths=(1, 0))
    identity = matrix_instance("symmetric_rank_one", generator)
    from flatminima.operators import IdentityOperator

    with pytest.raises(
        InputDataError, match=r"needs symmetric sensing matrices A_i: .*; got IdentityOperator\."
    ):
        SymmetricFactorization(
            dataclasses.replace(identity, operator=IdentityOperator((4, 4))), widths=(1, 0)
        )


def test_deep_argument_errors(generator: torch.Generator) -> None:
    inst = matrix_instance("dense", generator)
    with pytest.raises(InputDataError, match=r"depth must be >= 1; got depth=0\."):
        DeepFactorization(inst, depth=0, widths=())
    with pytest.raises(InputDataError, match=r"widths must list the depth - 1 = 2 inner sizes; got 1"):
        DeepFactorization(inst, depth=3, widths=(2,))
    with pytest.raises(InputDataError, match=r"widths\[1\] must be >= 1; got widths\[1\]=0\."):
        DeepFactorization(inst, depth=3, widths=(2, 0))
    with pytest.raises(
        InputTypeError, match=r"widths must be an integer or a sequence of depth - 1 = 1 integers"
    ):
        DeepFactorization(inst, depth=2, widths="3")  # type: ignore[arg-type]
    assert DeepFactorization(inst, depth=3, widths=2).shapes == ((2, 3), (2, 2), (4, 2))
    assert DeepFactorization(inst, depth=1).shapes == ((4, 3),)


def test_hadamard_needs_a_vector_operator(generator: torch.Generator) -> None:
    with pytest.raises(
        InputDataError, match=r"HadamardFactorization needs an operator on vectors .*\(4, 3\)"
    ):
        HadamardFactorization(matrix_instance("dense", generator), depth=2)
    with pytest.raises(InputDataError, match=r"depth must be >= 1; got depth=0\."):
        HadamardFactorization(sparse_instance(generator), depth=0)


def test_random_params_needs_a_generator(bilinear: BilinearFactorization) -> None:
    with pytest.raises(InputTypeError, match=r"generator must be a torch.Generator"):
        bilinear.random_params(generator=0)  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match=r"scale must satisfy 0.0 < scale; got scale=0.0\."):
        bilinear.random_params(generator=torch.Generator().manual_seed(0), scale=0.0)


# ---- autograd reference -------------------------------------------------------------------------
def test_autograd_objective_errors() -> None:
    with pytest.raises(InputTypeError, match=r"value_fn must be callable; got int\."):
        AutogradObjective(3, shapes=[(2,)])  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match=r"names must have one entry per parameter \(2\); got 1\."):
        AutogradObjective(lambda p: p[0].sum(), shapes=[(2,), (2,)], names=["x"])
    with pytest.raises(
        InputDataError, match=r"block_weights must have one entry per parameter \(1\); got 2\."
    ):
        AutogradObjective(lambda p: p[0].sum(), shapes=[(2,)], block_weights=[1.0, 2.0])
    with pytest.raises(InputDataError, match=r"shapes must list at least one parameter shape; got none\."):
        AutogradObjective(lambda p: p[0].sum(), shapes=[])
    with pytest.raises(InputTypeError, match=r"objective must be a flatminima Objective; got str\."):
        AutogradObjective.from_objective("loss")  # type: ignore[arg-type]
    free = AutogradObjective(lambda p: (p[0] * p[1]).sum(), shapes=[(2,), (2,)], names=["x", "y"])
    with pytest.raises(
        InputDataError,
        match=r"params\[1\] \(y\) must have the dtype of params\[0\] \(x\), torch.float64; got "
        r"torch.float32\.",
    ):
        free.value((torch.ones(2, dtype=F64), torch.ones(2, dtype=torch.float32)))
    with pytest.raises(
        InputDataError, match=r"params\[1\] \(y\) must be on the device of params\[0\] \(x\), cpu; got meta\."
    ):
        free.value((torch.ones(2, dtype=F64), torch.ones(2, dtype=F64, device="meta")))


# ---- free functions -----------------------------------------------------------------------------
def test_free_function_errors() -> None:
    L = torch.ones(3, 2, dtype=F64)
    with pytest.raises(InputDataError, match=r"norm must be one of \('fro', 'nuc'\); got norm='spectral'\."):
        balancedness(L, L, norm="spectral")
    with pytest.raises(InputDataError, match=r"R must have shape \(\*, 2\); got R.shape=\(3, 3\)\."):
        norm_gap(L, torch.ones(3, 3, dtype=F64))
    with pytest.raises(
        InputDataError,
        match=r"expected one dtype for all inputs; got L is torch.float64, R is torch.float32\.",
    ):
        balancedness(L, L.float())
    with pytest.raises(
        InputDataError, match=r"ground_truth must have shape \(3, 2\); got ground_truth.shape=\(2, 3\)\."
    ):
        recovery_error(L, L.mT)
    with pytest.raises(
        InputTypeError, match=r"source must be an Instance or a MeasurementOperator; got Tensor\."
    ):
        kappa(L)  # type: ignore[arg-type]
    with pytest.raises(
        InputDataError, match=r"kappa_value must satisfy 1.0 <= kappa_value; got kappa_value=0.5\."
    ):
        regularity_bounds(0.5, 1.0)
    with pytest.raises(InputDataError, match=r"E must have shape \(\*, \*\); got E.shape=\(3,\)\."):
        deep_trace_lower_bound(torch.ones(3, dtype=F64), 2)
    with pytest.raises(InputDataError, match=r"depth must be >= 1; got depth=0\."):
        deep_trace_lower_bound(L, 0)
    with pytest.raises(
        InputDataError, match=r"reference must have shape \(3, 3\); got reference.shape=\(3, 2\)\."
    ):
        norm_gap(L, L, L)
    with pytest.raises(InputDataError, match=r"x must have shape \(\*\); got x.shape=\(3, 2\)\."):
        balanced_hadamard_factors(L, depth=2)
    with pytest.raises(InputDataError, match=r"scales must have shape \(3\); got scales.shape=\(2,\)\."):
        hadamard_flat_penalty(torch.ones(3, dtype=F64), depth=2, scales=torch.ones(2, dtype=F64))


# ---- dtypes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_instance_works_and_agrees_with_float64(name: str) -> None:
    generator = torch.Generator().manual_seed(31)
    case = CASES[name]
    objective64 = case.build(generator)
    params64 = objective64.random_params(generator=generator)
    direction64 = objective64.random_params(generator=generator)
    inst32 = objective64.instance.to(dtype=torch.float32)  # type: ignore[attr-defined]
    objective32 = _same_objective(objective64, inst32)
    params32 = tuple(p.float() for p in params64)
    direction32 = tuple(p.float() for p in direction64)
    pairs = [
        (objective32.value(params32), objective64.value(params64)),
        (objective32.hessian_trace(params32), objective64.hessian_trace(params64)),
        (objective32.scaled_trace(params32), objective64.scaled_trace(params64)),
        *zip(objective32.grad(params32), objective64.grad(params64), strict=True),
        *zip(objective32.hvp(params32, direction32), objective64.hvp(params64, direction64), strict=True),
    ]
    for low, high in pairs:
        assert low.dtype == torch.float32
        error = float((low.double() - high).norm())
        assert error <= 1e-4 * max(float(high.norm()), 1.0)
    with pytest.raises(
        InputDataError, match=r"must have the dtype of the objective, torch.float32; got torch.float64"
    ):
        objective32.value(params64)


def _same_objective(objective, instance):  # type: ignore[no-untyped-def]
    if isinstance(objective, BilinearFactorization):
        return BilinearFactorization(instance, width=objective.width)
    if isinstance(objective, SymmetricFactorization):
        return SymmetricFactorization(instance, widths=objective.widths)
    if isinstance(objective, DeepFactorization):
        return DeepFactorization(instance, depth=objective.depth, widths=objective.widths)
    if isinstance(objective, HadamardFactorization):
        return HadamardFactorization(instance, depth=objective.depth)
    from flatminima.objectives import RobustPCALoss

    assert isinstance(objective, RobustPCALoss)
    return RobustPCALoss(instance, width=objective.width, radius=objective.radius)
