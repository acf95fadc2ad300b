"""Curvature across processes: two gloo ranks, each with a shard of the batches, match one process."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from curvature_cases import mlp_case
from gloo_ranks import run_ranks
from torch import distributed, nn

from flatminima.curvature import (
    EmpiricalFisherOperator,
    FisherOperator,
    GeneralizedGaussNewtonOperator,
    HessianOperator,
    curvature_operator,
    exact_trace,
    gradient_variance,
    hutchinson_trace,
    lanczos_eigenvalues,
    lanczos_spectral_density,
)
from flatminima.errors import InputDataError, InputTypeError

F = nn.functional
WORLD_SIZE = 2
SIZES = [5, 4, 6, 5, 3, 7, 5, 5]  # 40 examples in 8 batches of different sizes
UNEVEN = ([7, 9, 3], [21])  # rank 0: 3 batches, 19 examples; rank 1: 1 batch, 21 examples

pytestmark = pytest.mark.skipif(
    not (distributed.is_available() and distributed.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend",
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _summary(operator: Any) -> dict[str, torch.Tensor]:
    """Everything the operator computes from its data, for the same seeds on every rank."""
    V = torch.randn(operator.size, 3, generator=_generator(1), dtype=torch.float64)
    summary = {
        "matmat": operator.matmat(V),
        "matvec": operator.matvec(V[:, 0]),
        "quadratic_forms": operator.quadratic_forms(V),
        "exact_trace": exact_trace(operator),
        "hutchinson_trace": torch.as_tensor(hutchinson_trace(operator, 16, generator=_generator(2)).value),
        "top_eigenvalue": lanczos_eigenvalues(operator, 1, generator=_generator(3)).eigenvalues[0],
    }
    if isinstance(operator, HessianOperator):
        value, grad = operator.value_and_grad_at(operator.point)
        density = lanczos_spectral_density(operator, 8, num_repeats=2, generator=_generator(4))
        summary.update(
            value=value,
            grad=grad,
            value_at=operator.value_at(operator.point),
            nodes=density.nodes,
            gradient_variance_example=gradient_variance(operator),
            gradient_variance_batch=gradient_variance(operator, unit="batch"),
        )
    return summary


def _operators(batches: list[Any], **options: Any) -> dict[str, Any]:
    case = mlp_case(0, n=40)
    return {
        "hessian": HessianOperator.from_model(case.net, F.cross_entropy, batches, mode="eval", **options),
        "ggn": GeneralizedGaussNewtonOperator(case.net, F.cross_entropy, batches, **options),
        "empirical_fisher": EmpiricalFisherOperator(case.net, F.cross_entropy, batches, **options),
    }


def _on_rank(rank: int) -> dict[str, Any]:
    case = mlp_case(0, n=40)
    batches = case.batches(SIZES)
    operators = _operators(batches[rank::WORLD_SIZE])
    results: dict[str, Any] = {name: _summary(operator) for name, operator in operators.items()}
    results["num_examples"] = (operators["hessian"].source.num_examples, operators["ggn"].num_examples)
    uneven = case.batches([*UNEVEN[0], *UNEVEN[1]])
    uneven = uneven[: len(UNEVEN[0])] if rank == 0 else uneven[len(UNEVEN[0]) :]
    results["uneven"] = _summary(HessianOperator.from_model(case.net, F.cross_entropy, uneven, mode="eval"))
    fisher = FisherOperator(
        case.net, F.cross_entropy, batches[rank::WORLD_SIZE], generator=_generator(10 + rank)
    )
    results["fisher"] = fisher.dense()
    if rank == 0:  # an operator on one rank only, which must not wait for the other
        local = curvature_operator(
            case.net, F.cross_entropy, batches[0::WORLD_SIZE], mode="eval", process_group="local"
        )
        results["local"] = local.matmat(torch.eye(local.size, dtype=torch.float64)[:, :4])
    distributed.barrier()
    other = mlp_case(0, n=40).net
    if rank == 1:
        with torch.no_grad():
            other[0].bias.add_(1.0)
    try:
        HessianOperator.from_model(other, F.cross_entropy, batches[rank::WORLD_SIZE], mode="eval")
    except InputDataError as error:
        results["mismatch"] = str(error)
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The results of both ranks, computed once in two spawned processes."""
    return run_ranks(_on_rank, tmp_path_factory.mktemp("distributed"), WORLD_SIZE)


def _assert_matches(summary: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert summary.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(summary[key], value, rtol=1e-10, atol=1e-12, msg=key)


def test_two_ranks_with_half_the_batches_each_match_one_process(ranks: list[dict[str, Any]]) -> None:
    single = {
        name: _summary(operator) for name, operator in _operators(mlp_case(0, n=40).batches(SIZES)).items()
    }
    for results in ranks:
        assert results["num_examples"] == (40, 40)
        for name, expected in single.items():
            _assert_matches(results[name], expected)
    for name in single:  # every rank takes the same steps: the same bits, not only the same values
        for key, value in ranks[0][name].items():
            assert torch.equal(value, ranks[1][name][key]), (name, key)


def test_an_uneven_split_still_gives_the_dataset_mean(ranks: list[dict[str, Any]]) -> None:
    case = mlp_case(0, n=40)
    whole = HessianOperator.from_model(case.net, F.cross_entropy, [(case.x, case.y)], mode="eval")
    expected = _summary(whole)
    # the batch-unit gradient variance depends on the batching (one whole batch has none): not compared
    del expected["gradient_variance_batch"]
    for results in ranks:
        uneven = {key: value for key, value in results["uneven"].items() if key != "gradient_variance_batch"}
        _assert_matches(uneven, expected)
    torch.testing.assert_close(
        ranks[0]["uneven"]["value"], F.cross_entropy(case.net(case.x), case.y).detach()
    )


def test_the_fisher_is_the_same_on_every_rank_and_local_ignores_the_group(
    ranks: list[dict[str, Any]],
) -> None:
    assert torch.equal(ranks[0]["fisher"], ranks[1]["fisher"])
    assert bool(torch.linalg.eigvalsh(ranks[0]["fisher"]).min() > -1e-12)
    case = mlp_case(0, n=40)
    shard = curvature_operator(case.net, F.cross_entropy, case.batches(SIZES)[0::2], mode="eval")
    expected = shard.matmat(torch.eye(shard.size, dtype=torch.float64)[:, :4])
    torch.testing.assert_close(ranks[0]["local"], expected, rtol=1e-10, atol=1e-12)


def test_ranks_with_different_parameters_are_rejected_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    for results in ranks:
        assert "every rank must hold the same model parameters" in results["mismatch"]


def test_process_group_must_be_none_local_or_a_group() -> None:
    case = mlp_case(0, n=10)
    with pytest.raises(InputTypeError, match="process_group must be None, 'local' or a"):
        HessianOperator.from_model(
            case.net, F.cross_entropy, [(case.x, case.y)], mode="eval", process_group=1
        )
    with pytest.raises(InputTypeError, match="process_group"):
        GeneralizedGaussNewtonOperator(case.net, F.cross_entropy, [(case.x, case.y)], process_group="world")
    local = HessianOperator.from_model(
        case.net, F.cross_entropy, [(case.x, case.y)], mode="eval", process_group="local"
    )
    assert local.process_group is None and local.select(0).process_group is None
