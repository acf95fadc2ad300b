"""Contract tests over every registered problem, plus per-model checks and error messages."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flatminima.errors import InputDataError, InputTypeError
from flatminima.operators import (
    BilinearOperator,
    DenseOperator,
    EntryMask,
    IdentityOperator,
    SymmetricRankOneOperator,
    VectorOperator,
)
from flatminima.problems import (
    PROBLEMS,
    BilinearSensing,
    Instance,
    MatrixCompletion,
    MatrixSensing,
    Problem,
    QuadraticNetwork,
    RobustPCA,
    SparseRecovery,
)

SMALL: dict[str, Problem] = {
    "matrix_sensing": MatrixSensing(shape=(6, 5), rank=2, num_measurements=40),
    "bilinear_sensing": BilinearSensing(shape=(6, 5), rank=2, num_measurements=40),
    "matrix_completion": MatrixCompletion(shape=(6, 5), rank=2, probability=0.7),
    "robust_pca": RobustPCA(shape=(6, 5), rank=1, outliers_per_line=1),
    "quadratic_network": QuadraticNetwork(dim=5, num_positive=2, num_negative=1, num_measurements=30),
    "sparse_recovery": SparseRecovery(dim=10, sparsity=2, num_measurements=8),
}
OPERATOR_KIND = {
    "matrix_sensing": DenseOperator,
    "bilinear_sensing": BilinearOperator,
    "matrix_completion": EntryMask,
    "robust_pca": IdentityOperator,
    "quadratic_network": SymmetricRankOneOperator,
    "sparse_recovery": VectorOperator,
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_covers_every_problem() -> None:
    assert set(PROBLEMS) == set(SMALL)
    for name, cls in PROBLEMS.items():
        assert cls.name == name


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sample_contract(name: str) -> None:
    problem = SMALL[name]
    inst = problem.sample(generator=gen())
    assert isinstance(inst, Instance)
    assert inst.kind == name
    assert isinstance(inst.operator, OPERATOR_KIND[name])
    assert inst.ground_truth.dtype == torch.float64
    assert inst.ground_truth.device == torch.device("cpu")
    assert inst.ground_truth.shape == inst.operator.shape_in
    assert inst.observations.shape == (inst.operator.num_measurements,)
    assert inst.metadata["problem"] == name
    # noiseless models interpolate the ground truth (robust PCA: up to the outliers)
    residual = inst.operator.apply(inst.ground_truth) - inst.observations
    if name == "robust_pca":
        residual = residual + inst.operator.apply(inst.extras["outliers"])
    assert float(residual.abs().max()) < 1e-12
    # ||M||_F = 1 by default
    assert abs(float(torch.linalg.matrix_norm(inst.ground_truth)) - 1.0) < 1e-12


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sampling_is_reproducible_and_seed_dependent(name: str) -> None:
    problem = SMALL[name]
    a, b, c = (problem.sample(generator=gen(s)) for s in (3, 3, 4))
    assert torch.equal(a.ground_truth, b.ground_truth)
    assert torch.equal(a.observations, b.observations)
    assert not torch.equal(a.ground_truth, c.ground_truth)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_instance_to_moves_everything(name: str) -> None:
    inst = SMALL[name].sample(generator=gen()).to(dtype=torch.float32)
    assert inst.ground_truth.dtype == torch.float32
    assert inst.observations.dtype == torch.float32
    assert inst.operator.dtype == torch.float32
    for tensor in inst.extras.values():
        assert tensor.dtype in (torch.float32, torch.bool)
    inst.operator.apply(inst.ground_truth)  # consistent dtypes


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sample_requires_a_generator(name: str) -> None:
    with pytest.raises(InputTypeError, match="generator must be a torch.Generator"):
        SMALL[name].sample(generator=0)  # type: ignore[arg-type]


def test_low_rank_truth_has_the_requested_rank() -> None:
    inst = MatrixSensing(shape=(8, 7), rank=3, num_measurements=10).sample(generator=gen())
    singular_values = torch.linalg.svdvals(inst.ground_truth)
    assert int((singular_values > 1e-10).sum()) == 3


def test_noise_is_added_with_the_requested_scale() -> None:
    inst = MatrixSensing(shape=(4, 4), rank=1, num_measurements=20000, noise_std=0.5).sample(generator=gen())
    noise = inst.observations - inst.operator.apply(inst.ground_truth)
    torch.testing.assert_close(noise, inst.extras["noise"])
    assert abs(float(noise.std()) - 0.5) < 0.02


def test_completion_reports_empty_lines() -> None:
    problem = MatrixCompletion(shape=(30, 30), rank=1, probability=0.05)
    inst = problem.sample(generator=gen(1))
    operator = inst.operator
    assert isinstance(operator, EntryMask)
    assert inst.metadata["empty_rows"] == operator.empty_rows()
    assert inst.metadata["empty_columns"] == operator.empty_columns()
    assert len(inst.metadata["empty_rows"]) > 0  # p = 0.05 at d = 30 leaves empty rows
    full = MatrixCompletion(shape=(5, 4), rank=1, probability=1.0).sample(generator=gen())
    assert full.operator.num_measurements == 20
    assert full.metadata["empty_rows"] == []


def test_robust_pca_respects_outliers_per_line() -> None:
    inst = RobustPCA(shape=(12, 9), rank=2, outliers_per_line=2).sample(generator=gen())
    support = inst.extras["outliers"] != 0
    assert int(support.sum(0).max()) <= 2
    assert int(support.sum(1).max()) <= 2
    assert int(support.sum()) == 2 * 9  # two matchings of size min(d1, d2), almost surely disjoint here
    assert inst.metadata["outlier_l1_norm"] == pytest.approx(float(inst.extras["outliers"].abs().sum()))
    fraction = RobustPCA(shape=(40, 40), rank=1, outlier_fraction=0.1).sample(generator=gen())
    assert 100 < fraction.metadata["num_outliers"] < 220


def test_quadratic_network_signature_and_teacher() -> None:
    problem = QuadraticNetwork(dim=6, num_positive=2, num_negative=1, num_measurements=50)
    inst = problem.sample(generator=gen())
    eigenvalues = torch.linalg.eigvalsh(inst.ground_truth)
    assert int((eigenvalues > 1e-10).sum()) == 2
    assert int((eigenvalues < -1e-10).sum()) == 1
    U1, U2 = inst.extras["teacher_positive"], inst.extras["teacher_negative"]
    torch.testing.assert_close(U1 @ U1.T - U2 @ U2.T, inst.ground_truth)
    x = inst.operator.vectors  # type: ignore[attr-defined]
    torch.testing.assert_close(((x @ U1) ** 2).sum(1) - ((x @ U2) ** 2).sum(1), inst.observations)
    covariance = QuadraticNetwork(dim=4, num_positive=2, num_measurements=10).sample(generator=gen())
    assert bool((torch.linalg.eigvalsh(covariance.ground_truth) > -1e-12).all())


def test_sparse_recovery_support() -> None:
    inst = SparseRecovery(dim=20, sparsity=3, num_measurements=10).sample(generator=gen())
    support = inst.extras["support"]
    assert int(support.sum()) == 3
    assert torch.equal(inst.ground_truth[:, 0] != 0, support)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            lambda: MatrixSensing(shape=(20, 20), rank=25, num_measurements=5),
            r"rank must satisfy 1 <= rank <= min\(d1, d2\) = 20; got rank=25\.",
        ),
        (
            lambda: MatrixSensing(shape=(5, 5), rank=1, num_measurements=0),
            r"num_measurements must be >= 1; got num_measurements=0\.",
        ),
        (
            lambda: BilinearSensing(shape=(5, -3), rank=1, num_measurements=5),
            r"shape\[1\] must be >= 1; got shape\[1\]=-3\.",
        ),
        (
            lambda: MatrixCompletion(shape=(5, 5), rank=1, probability=1.5),
            r"probability must satisfy 0.0 < probability <= 1.0; got probability=1.5\.",
        ),
        (
            lambda: MatrixCompletion(shape=(5, 5), rank=1, probability=0.0),
            r"probability must satisfy 0.0 < probability <= 1.0; got probability=0.0\.",
        ),
        (
            lambda: MatrixSensing(shape=(5, 5), rank=1, num_measurements=5, noise_std=-0.1),
            r"noise_std must satisfy 0.0 <= noise_std; got noise_std=-0.1\.",
        ),
        (
            lambda: MatrixSensing(shape=(5, 5), rank=1, num_measurements=5, noise_std=float("nan")),
            r"noise_std must be finite; got noise_std=nan\.",
        ),
        (
            lambda: RobustPCA(shape=(5, 5), rank=1),
            r"give exactly one of outliers_per_line and outlier_fraction",
        ),
        (
            lambda: RobustPCA(shape=(5, 5), rank=1, outlier_fraction=1.2),
            r"outlier_fraction must satisfy 0.0 <= outlier_fraction <= 1.0; got outlier_fraction=1.2",
        ),
        (
            lambda: QuadraticNetwork(dim=3, num_positive=2, num_negative=2, num_measurements=5),
            r"num_positive \+ num_negative must satisfy 1 <= r1 \+ r2 <= dim = 3; got 2 \+ 2\.",
        ),
        (
            lambda: QuadraticNetwork(dim=3, num_positive=0, num_measurements=5),
            r"num_positive \+ num_negative must satisfy 1 <= r1 \+ r2",
        ),
        (
            lambda: SparseRecovery(dim=5, sparsity=6, num_measurements=3),
            r"sparsity must satisfy 1 <= sparsity <= dim = 5; got sparsity=6\.",
        ),
        (
            lambda: MatrixSensing(shape=(5,), rank=1, num_measurements=3),  # type: ignore[arg-type]
            r"shape must be a pair \(d1, d2\) of positive integers",
        ),
    ],
)
def test_bad_parameters_raise_clear_errors(factory, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputDataError, match=message):
        factory()


def test_type_errors() -> None:
    with pytest.raises(InputTypeError, match=r"rank must be an integer; got 2.5 of type float\."):
        MatrixSensing(shape=(5, 5), rank=2.5, num_measurements=3)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="num_measurements must be an integer"):
        MatrixSensing(shape=(5, 5), rank=1, num_measurements=True)


def test_problems_are_frozen() -> None:
    problem = SMALL["matrix_sensing"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.rank = 3  # type: ignore[misc]


def test_completion_with_no_observation_raises() -> None:
    with pytest.raises(InputDataError, match="observed no entry at probability=1e-09"):
        MatrixCompletion(shape=(2, 2), rank=1, probability=1e-9).sample(generator=gen())
