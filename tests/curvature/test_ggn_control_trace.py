"""ggn_control_trace: tr H = tr G (exact, per-example products) + tr R (block-diagonal Hutchinson)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from curvature_cases import mlp_case
from gloo_ranks import run_ranks
from torch import distributed, nn

from flatminima.curvature import (
    MEASURES,
    GeneralizedGaussNewtonOperator,
    GGNControlTrace,
    HessianOperator,
    exact_trace,
    ggn_control_trace,
    measure,
)
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

F = nn.functional


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cnn(
    seed: int = 0, *, activation: type[nn.Module] = nn.ReLU
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 CNN with BatchNorm (running statistics from one train pass, then eval), 12 examples."""
    g = _generator(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        activation(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        activation(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).double()
    x = torch.randn(12, 2, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=g)
                module.bias.normal_(generator=g)
        net.train()
        net(x)
    return net.eval(), x, y


def _split(x: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(x.split(sizes), y.split(sizes), strict=True))


def _mse_case() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    g = _generator(3)
    net = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 2)).double()
    x = torch.randn(15, 4, generator=g, dtype=torch.float64)
    return net, _split(x, torch.randn(15, 2, generator=g, dtype=torch.float64), [8, 7])


def _tanh_mlp() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    case = mlp_case(0)
    return case.net, case.batches([11, 12, 7])


# ---- tr G exactly --------------------------------------------------------------------------------
def test_ggn_part_is_the_dense_gauss_newton_trace_on_an_mlp_a_cnn_and_squared_error() -> None:
    net, batches = _tanh_mlp()
    cnn, x, y = _cnn()
    mse_net, mse_batches = _mse_case()
    cases: list[tuple[nn.Module, Any, list[tuple[torch.Tensor, torch.Tensor]]]] = [
        (net, F.cross_entropy, batches),
        (cnn, F.cross_entropy, _split(x, y, [5, 7])),
        (mse_net, F.mse_loss, mse_batches),
    ]
    for model, loss, data in cases:
        H = HessianOperator.from_model(model, loss, data, mode="eval")
        G = GeneralizedGaussNewtonOperator(model, loss, data, mode="eval")
        result = ggn_control_trace(H, 4, generator=_generator(0), min_probes=2)
        assert isinstance(result, GGNControlTrace)
        assert result.ggn_trace == pytest.approx(float(exact_trace(G)), rel=1e-10, abs=1e-10)
        assert result.num_examples == G.num_examples
        assert result.vjps_per_example == 2  # C - 1 for 3 classes, D for 2 squared-error outputs


def test_ggn_part_of_a_selection_is_the_trace_of_its_diagonal_block() -> None:
    cnn, x, y = _cnn()
    H = HessianOperator.from_model(cnn, F.cross_entropy, [(x, y)], mode="eval").select("4.*", "9.*")
    G = GeneralizedGaussNewtonOperator(cnn, F.cross_entropy, [(x, y)], mode="eval").select("4.*", "9.*")
    result = ggn_control_trace(H, generator=_generator(0))
    assert result.ggn_trace == pytest.approx(float(exact_trace(G)), rel=1e-10)
    assert result.value == pytest.approx(float(exact_trace(H)), rel=1e-10)


def test_a_small_chunk_gives_the_same_ggn_trace() -> None:
    net, batches = _tanh_mlp()
    H = HessianOperator.from_model(net, F.cross_entropy, batches, mode="eval")
    whole = ggn_control_trace(H, 2, generator=_generator(0), min_probes=2)
    chunked = ggn_control_trace(H, 2, generator=_generator(0), min_probes=2, chunk_size=3)
    assert chunked.ggn_trace == pytest.approx(whole.ggn_trace, rel=1e-12)


def test_two_classes_need_one_product_per_example() -> None:
    g = _generator(8)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(9, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (9,), generator=g)
    H = HessianOperator.from_model(net, F.cross_entropy, [(x, y)], mode="eval")
    G = GeneralizedGaussNewtonOperator(net, F.cross_entropy, [(x, y)], mode="eval")
    result = ggn_control_trace(H, 2, generator=g, min_probes=2)
    assert result.vjps_per_example == 1
    assert result.ggn_trace == pytest.approx(float(exact_trace(G)), rel=1e-10)


# ---- the total: exact for piecewise-linear networks, within its stderr for smooth ones ------------
@pytest.mark.parametrize("joint", [False, True])
def test_relu_cnn_with_eval_batch_norm_gives_the_exact_hessian_trace_with_zero_stderr(joint: bool) -> None:
    cnn, x, y = _cnn()
    H = HessianOperator.from_model(cnn, F.cross_entropy, _split(x, y, [5, 7]), mode="eval")
    result = ggn_control_trace(H, generator=_generator(0), joint=joint)
    assert result.value == pytest.approx(float(exact_trace(H)), rel=1e-10)
    assert (result.residual, result.stderr, result.converged) == (0.0, 0.0, True)
    assert result.zero_blocks == ("0", "1", "4", "5", "9")
    assert result.num_matvecs == 5  # one screening product per block, nothing else


def test_tanh_mlp_total_is_the_hessian_trace_within_its_standard_error() -> None:
    net, batches = _tanh_mlp()
    H = HessianOperator.from_model(net, F.cross_entropy, batches, mode="eval")
    exact = float(exact_trace(H))
    result = ggn_control_trace(H, 200, generator=_generator(1))
    assert result.stderr > 0.0
    assert abs(result.value - exact) <= 4.0 * result.stderr
    assert result.zero_blocks == ("2",)  # the output layer: f is affine in it
    assert result.block_residuals["2"] == 0.0
    assert (
        result.num_samples == 200 and result.num_matvecs == 2 + 200
    )  # screening both blocks, then block "0"


@pytest.mark.parametrize("joint", [False, True])
def test_tanh_cnn_total_is_the_hessian_trace_within_its_standard_error(joint: bool) -> None:
    cnn, x, y = _cnn(1, activation=nn.Tanh)
    H = HessianOperator.from_model(cnn, F.cross_entropy, [(x, y)], mode="eval")
    result = ggn_control_trace(H, 100, generator=_generator(2), distribution="gaussian", joint=joint)
    assert abs(result.value - float(exact_trace(H))) <= 4.0 * result.stderr
    assert "9" in result.zero_blocks and "0" not in result.zero_blocks


def _deep_tanh() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Two tanh layers: blocks "0" and "2" have a residual, the output layer "4" has none."""
    g = _generator(9)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(1.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    x, y = torch.randn(20, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g)
    return net, _split(x, y, [8, 12])


@pytest.mark.parametrize(
    ("distribution", "joint"), [("rademacher", False), ("gaussian", False), ("rademacher", True)]
)
def test_the_residual_estimator_is_unbiased_over_many_seeds(distribution: str, joint: bool) -> None:
    net, batches = _deep_tanh()
    H = HessianOperator.from_model(net, F.cross_entropy, batches, mode="eval")
    G = GeneralizedGaussNewtonOperator(net, F.cross_entropy, batches, mode="eval")
    exact = float(exact_trace(H) - exact_trace(G))
    results = [
        ggn_control_trace(
            H,
            2,
            generator=_generator(seed),
            min_probes=2,
            distribution=distribution,
            screen=joint or seed % 2 == 0,
            joint=joint,
        )
        for seed in range(120)
    ]
    residuals = [result.residual for result in results]
    spread = statistics.stdev(residuals) / math.sqrt(len(residuals))
    assert spread > 0.0
    assert abs(statistics.fmean(residuals) - exact) <= 4.0 * spread
    if joint:  # blocks "0" and "2" probed together, one product per sample after 3 screening products
        assert results[0].zero_blocks == ("4",) and set(results[0].block_residuals) == {"4", "0+2"}
        assert results[0].num_matvecs == 3 + 2


def test_rtol_stops_once_the_relative_standard_error_is_reached() -> None:
    net, batches = _tanh_mlp()
    H = HessianOperator.from_model(net, F.cross_entropy, batches, mode="eval")
    result = ggn_control_trace(H, 1000, generator=_generator(3), rtol=0.05, batch_size=8)
    assert result.converged and result.num_samples < 1000
    assert result.stderr <= 0.05 * abs(result.value)
    assert result.relative_error <= 0.05


def test_parameter_blocks_are_finer_and_still_unbiased() -> None:
    net, batches = _tanh_mlp()
    H = HessianOperator.from_model(net, F.cross_entropy, batches, mode="eval")
    result = ggn_control_trace(H, 200, generator=_generator(4), blocks="parameter")
    assert set(result.block_residuals) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert abs(result.value - float(exact_trace(H))) <= 4.0 * result.stderr


# ---- streaming and processes ------------------------------------------------------------------------
def test_streaming_several_batches_equals_one_concatenated_batch() -> None:
    case = mlp_case(0)
    one = HessianOperator.from_model(case.net, F.cross_entropy, [(case.x, case.y)], mode="eval")
    many = HessianOperator.from_model(case.net, F.cross_entropy, case.batches([4, 9, 10, 7]), mode="eval")
    a = ggn_control_trace(one, 20, generator=_generator(5))
    b = ggn_control_trace(many, 20, generator=_generator(5))
    assert b.ggn_trace == pytest.approx(a.ggn_trace, rel=1e-12)
    assert b.value == pytest.approx(a.value, rel=1e-10)
    assert b.stderr == pytest.approx(a.stderr, rel=1e-8)


SIZES = [5, 4, 6, 5, 3, 7]  # 30 examples


def _shard_result(rank: int) -> tuple[float, float, float]:
    case = mlp_case(0)
    H = HessianOperator.from_model(case.net, F.cross_entropy, case.batches(SIZES)[rank::2], mode="eval")
    result = ggn_control_trace(H, 12, generator=_generator(6))
    return result.ggn_trace, result.value, result.stderr


@pytest.mark.skipif(not (distributed.is_available() and distributed.is_gloo_available()), reason="needs gloo")
def test_two_gloo_ranks_with_a_shard_each_match_one_process(tmp_path: Path) -> None:
    ranks = run_ranks(_shard_result, tmp_path)
    case = mlp_case(0)
    H = HessianOperator.from_model(case.net, F.cross_entropy, case.batches(SIZES), mode="eval")
    single = ggn_control_trace(H, 12, generator=_generator(6))
    for ggn, value, stderr in ranks:
        assert ggn == pytest.approx(single.ggn_trace, rel=1e-10)
        assert value == pytest.approx(single.value, rel=1e-10)
        assert stderr == pytest.approx(single.stderr, rel=1e-8)


# ---- measure() ----------------------------------------------------------------------------------------
def test_measure_reports_the_trace_per_module_with_its_stderr() -> None:
    cnn, x, y = _cnn()
    H = HessianOperator.from_model(cnn, F.cross_entropy, [(x, y)], mode="eval")
    assert "ggn_control_trace" in MEASURES
    table = measure(
        H,
        ["ggn_control_trace", "exact_trace"],
        groups="module",
        generator=_generator(7),
        options={"ggn_control_trace": {"rtol": 0.01}},
    )
    rows = {(row.name, row.group): row for row in table}
    for group in ("all", "0", "1", "4", "5", "9"):
        control, exact = rows["ggn_control_trace", group], rows["exact_trace", group]
        assert control.value == pytest.approx(exact.value, rel=1e-10)
        assert control.stderr == 0.0 and control.curvature == "hessian" and control.error is None


def test_measure_checks_the_operator_and_the_generator_before_any_work() -> None:
    net, batches = _tanh_mlp()
    G = GeneralizedGaussNewtonOperator(net, F.cross_entropy, batches, mode="eval")
    with pytest.raises(InputTypeError, match="HessianOperator"):
        measure(G, "ggn_control_trace", generator=_generator(0))
    H = HessianOperator.from_model(net, F.cross_entropy, batches, mode="eval")
    with pytest.raises(InputTypeError, match="generator"):
        measure(H, "ggn_control_trace")
    with pytest.raises(ConfigurationError, match="unknown keys"):
        measure(H, "ggn_control_trace", generator=_generator(0), options={"ggn_control_trace": {"tol": 1}})


# ---- bad input: one clear line --------------------------------------------------------------------
class _BatchCentering(nn.Module):
    """Subtracts the batch mean: mixes the examples even in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=0, keepdim=True)


def _one_line_error(error: type[Exception], match: str, run: Any) -> None:
    with pytest.raises(error, match=match) as info:
        run()
    assert "\n" not in str(info.value)


def test_bad_input_gives_one_line_errors() -> None:
    net, batches = _tanh_mlp()
    generator = _generator(0)

    def hessian(**options: Any) -> HessianOperator:
        return HessianOperator.from_model(net, batches=batches, mode="eval", **options)

    unsupported = hessian(loss_fn=lambda outputs, targets: F.cross_entropy(outputs, targets))
    _one_line_error(
        ConfigurationError,
        "cross-entropy or mean squared error",
        lambda: ggn_control_trace(unsupported, generator=generator),
    )
    _one_line_error(
        ConfigurationError,
        "cross-entropy or mean squared error",
        lambda: measure(unsupported, "ggn_control_trace", generator=generator),
    )
    cnn, x, y = _cnn()
    train = HessianOperator.from_model(cnn, F.cross_entropy, [(x, y)], mode="train")
    _one_line_error(
        ConfigurationError, r"mode='train' 1, 5 couple", lambda: ggn_control_trace(train, generator=generator)
    )
    closure = HessianOperator(lambda p: (p["w"] ** 2).sum(), {"w": torch.ones(2, dtype=torch.float64)})
    _one_line_error(InputDataError, "from_model", lambda: ggn_control_trace(closure, generator=generator))
    H = hessian(loss_fn=F.cross_entropy)
    _one_line_error(
        ConfigurationError,
        "blocks must be",
        lambda: ggn_control_trace(H, generator=generator, blocks="layer"),
    )
    _one_line_error(InputTypeError, "generator", lambda: ggn_control_trace(H))
    mixing = nn.Sequential(nn.Linear(4, 5), _BatchCentering(), nn.Tanh(), nn.Linear(5, 3)).double()
    mixed = HessianOperator.from_model(mixing, F.cross_entropy, batches, mode="eval")
    _one_line_error(
        ConfigurationError, "mixes the examples", lambda: ggn_control_trace(mixed, generator=generator)
    )
