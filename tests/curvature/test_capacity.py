"""VC-dimension bounds: W, L, U counted on hand-built networks and the formulas evaluated by hand."""

from __future__ import annotations

import math

import pytest
import torch
from curvature_cases import mlp_case
from torch import nn

from flatminima.curvature import (
    MEASURES,
    HessianOperator,
    MeasureValue,
    NetworkCounts,
    bartlett2019_vc_bound,
    harvey2017_vc_bound,
    measure,
    network_counts,
)
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

F = nn.functional


def _bartlett_by_hand(L: int, cumulative_parameters: list[int], k: list[int], p: int) -> float:
    R = sum(i * ki for i, ki in enumerate(k, start=1))
    r = max(2 * math.e * p * R, 16.0)
    return L + sum(cumulative_parameters) * math.log2(2 * r * math.log2(r))


def test_counts_and_bounds_of_a_three_layer_mlp() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.LeakyReLU(0.1), nn.Linear(4, 2))
    counts = network_counts(net, (3,))
    # W = (3*4 + 4) + (4*4 + 4) + (4*2 + 2) = 16 + 20 + 10, U = 4 + 4 hidden ReLU / LeakyReLU units
    assert counts == NetworkCounts(
        num_parameters=46,
        num_layers=3,
        num_units=8,
        units_per_layer=(4, 4, 2),
        parameters_per_layer=(16, 20, 10),
        nonlinear_layers=(True, True, False),
        pieces=2,
    )
    assert counts.effective_depth == pytest.approx((16 + 36 + 46) / 46)
    # R = 1*4 + 2*4 + 3*2 = 18, r = 2 e * 18 = 97.86; Lbar W = 16 + 36 + 46 = 98
    r = 2 * math.e * 18
    assert bartlett2019_vc_bound(counts) == pytest.approx(3 + 98 * math.log2(2 * r * math.log2(r)), rel=1e-12)
    assert bartlett2019_vc_bound(counts) == pytest.approx(1016.1085, abs=1e-3)
    assert harvey2017_vc_bound(counts) == 46 * 8


def test_convolutions_count_their_output_positions_as_units() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(18, 1))
    counts = network_counts(net, (1, 5, 5))
    # conv: 2 channels x 3 x 3 positions = 18 units, 2*9 + 2 = 20 parameters; output: 18 + 1
    assert (counts.num_parameters, counts.num_layers, counts.num_units) == (39, 2, 18)
    assert counts.units_per_layer == (18, 1) and counts.parameters_per_layer == (20, 19)
    assert bartlett2019_vc_bound(counts) == pytest.approx(_bartlett_by_hand(2, [20, 39], [18, 1], 1))
    assert harvey2017_vc_bound(counts) == 39 * 18


def test_pieces_linear_hidden_layers_nesting_and_input_activations() -> None:
    net = nn.Sequential(
        nn.ReLU(),  # acts on the input: not a unit
        nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Hardtanh()),  # composed: 1 + 2 breakpoints
        nn.Linear(3, 3),  # a hidden layer without activation: linear units, not counted in U
        nn.Identity(),
        nn.Sequential(nn.Linear(3, 2), nn.ReLU6()),
        nn.Linear(2, 1),
    )
    counts = network_counts(net, (2,))
    assert counts.num_layers == 4 and counts.units_per_layer == (3, 3, 2, 1)
    assert counts.nonlinear_layers == (True, False, True, False)
    assert counts.num_units == 3 + 2 and counts.pieces == 4  # p = 3
    assert counts.num_parameters == 9 + 12 + 8 + 3
    expected = _bartlett_by_hand(4, [9, 21, 29, 32], [3, 3, 2, 1], 3)
    assert bartlett2019_vc_bound(counts) == pytest.approx(expected, rel=1e-12)


def test_the_smallest_networks_raise_r_to_16() -> None:
    counts = network_counts(nn.Linear(1, 1), (1,))  # W = 2, L = 1, R = 1: 2 e p R = 5.4 < 16
    assert (counts.num_parameters, counts.num_layers, counts.num_units, counts.pieces) == (2, 1, 0, 2)
    assert bartlett2019_vc_bound(counts) == 1 + 2 * math.log2(2 * 16 * 4)  # = 15
    assert harvey2017_vc_bound(counts) == 2.0  # a linear classifier: W


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


@pytest.mark.parametrize(
    ("net", "error", "match"),
    [
        (
            nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)),
            ConfigurationError,
            "layer '1' is a Tanh",
        ),
        (
            nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)),
            ConfigurationError,
            "layer '1' is a BatchNorm1d",
        ),
        (nn.Sequential(_Residual(), nn.Linear(3, 1)), ConfigurationError, "layer '0' is a _Residual"),
        (_Residual(), ConfigurationError, "the model is a _Residual"),
        (nn.Sequential(nn.Linear(3, 2), nn.ReLU()), ConfigurationError, "output layer '0' is followed by"),
        (nn.Sequential(nn.ReLU(), nn.Flatten()), ConfigurationError, "at least one affine layer"),
        (nn.Sequential(nn.Linear(4, 1)), InputDataError, r"fails on a zero input of shape \(3,\)"),
    ],
)
def test_architectures_the_counts_cannot_read(net, error, match) -> None:
    with pytest.raises(error, match=match) as caught:
        network_counts(net, (3,))
    assert "\n" not in str(caught.value)


def test_count_argument_types() -> None:
    with pytest.raises(InputTypeError, match="model must be a torch.nn.Module"):
        network_counts("net", (3,))  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="input_shape must be a sequence of positive ints"):
        network_counts(nn.Linear(3, 1), (3.0,))  # type: ignore[arg-type]


def _relu_operator() -> tuple[nn.Module, HessianOperator]:
    case = mlp_case(0, n=24)
    net = nn.Sequential(case.net[0], nn.ReLU(), case.net[2])
    return net, HessianOperator.from_model(net, F.cross_entropy, case.batches([12, 12]), mode="eval")


def test_vc_bounds_in_the_measure_table() -> None:
    net, H = _relu_operator()
    table = measure(H, ["vc_bartlett2019", "vc_harvey2017", "exact_trace"], groups="module")
    assert [(r.name, r.group) for r in table][:2] == [("vc_bartlett2019", "all"), ("vc_harvey2017", "all")]
    counts = network_counts(net, (4,))
    for name, bound in (("vc_bartlett2019", bartlett2019_vc_bound), ("vc_harvey2017", harvey2017_vc_bound)):
        row = table.get(name)
        assert row.value == bound(counts) and math.isnan(row.stderr) and row.num_matvecs == 0
    assert table.get("vc_harvey2017").value == 43 * 5
    shaped = measure(H, ["vc_harvey2017"], options={"vc_harvey2017": {"input_shape": (4,)}})
    assert shaped.get("vc_harvey2017").value == 43 * 5


def test_vc_bounds_fail_up_front_before_any_work(monkeypatch) -> None:
    calls = []

    def spy(op, *, generator, cache, **options):
        calls.append(op)
        return MeasureValue(1.0)

    monkeypatch.setitem(MEASURES, "exact_trace", spy)
    case = mlp_case(0, n=24)  # a tanh network: not piecewise linear
    tanh = HessianOperator.from_model(case.net, F.cross_entropy, case.batches([12, 12]), mode="eval")
    with pytest.raises(ConfigurationError, match="layer '1' is a Tanh"):
        measure(tanh, ["exact_trace", "vc_bartlett2019"])
    closure = HessianOperator(case.loss, case.params())
    with pytest.raises(InputDataError, match="vc_harvey2017 needs a model"):
        measure(closure, ["exact_trace", "vc_harvey2017"])
    _, H = _relu_operator()
    with pytest.raises(ConfigurationError, match=r"options\['vc_bartlett2019'\] has unknown keys"):
        measure(H, ["exact_trace", "vc_bartlett2019"], options={"vc_bartlett2019": {"shape": (4,)}})
    assert calls == []
