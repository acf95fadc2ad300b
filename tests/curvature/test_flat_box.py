"""Hochreiter and Schmidhuber's flat box: closed forms on diagonal quadratics, verification, errors."""

from __future__ import annotations

import math

import pytest
import torch
from curvature_cases import mlp_case
from torch import nn

from flatminima.curvature import FlatBox, HessianOperator, flat_box, measure
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

F = nn.functional
DEPTH = 30  # bisection steps: the widths are exact to a relative 2^-30


def _diagonal_quadratic(h: torch.Tensor, center: torch.Tensor, point: torch.Tensor) -> HessianOperator:
    def loss(p):
        d = p["w"] - center
        return 1.0 + 0.5 * (h * d**2).sum()

    return HessianOperator(loss, {"w": point.clone()})


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_coordinate_box_of_a_diagonal_quadratic_matches_the_closed_form() -> None:
    """Axis half-widths sqrt(2 eps / h_i); every corner of that box has loss n eps, so c = 1/sqrt(n)."""
    n, eps = 6, 0.01
    h = torch.linspace(0.5, 8.0, n, dtype=torch.float64)
    center = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    H = _diagonal_quadratic(h, center, center)
    box = flat_box(H, eps, num_bisections=DEPTH, precision=0.5, generator=_gen())
    assert isinstance(box, FlatBox) and box.granularity == "coordinate" and box.loss == pytest.approx(1.0)
    truth = torch.sqrt(2 * eps / h)
    a = box.axis_half_widths
    assert bool((a <= truth * (1 + 1e-12)).all())  # the feasible end of every bracket is kept
    assert bool((a >= truth * (1 - 2.0 ** (1 - DEPTH))).all())
    # the joint scale: the largest c with every corner feasible, c^2 sum_i h_i a_i^2 / 2 <= eps
    exact_scale = math.sqrt(2 * eps / float((h * a**2).sum()))
    assert exact_scale * (1 - 2.0 ** (1 - DEPTH)) <= box.scale <= exact_scale * (1 + 1e-12)
    assert box.scale == pytest.approx(1 / math.sqrt(n), rel=1e-7)
    dw = box.scale * a
    assert torch.allclose(box.half_widths, dw, rtol=0, atol=0)
    assert box.half_widths.dtype == torch.float64
    assert box.log_volume == pytest.approx(float(torch.log(2 * dw).sum()), rel=1e-12)
    assert box.description_length_bits == pytest.approx(-float(torch.log2(dw / 0.5).sum()), rel=1e-12)
    closed = torch.sqrt(2 * eps / (n * h))  # the box's half-widths in closed form
    assert box.log_volume == pytest.approx(float(torch.log(2 * closed).sum()), rel=1e-6)
    # a box inside the tolerance everywhere: no verification point violates it
    assert box.violation_fraction == 0.0 and box.violation_stderr == 0.0
    assert box.num_verification_points == 64 and box.num_saturated == 0
    assert box.num_loss_evaluations > 2 * n * DEPTH


def test_the_box_takes_the_nearer_crossing_of_both_signs_away_from_the_minimum() -> None:
    """At w = c + delta, L(w +- t e_i) - L(w) = h (t^2 +- 2 delta t) / 2.

    So the nearer crossing is at t = sqrt(delta^2 + 2 eps / h) - |delta|.
    """
    h = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    center = torch.zeros(3, dtype=torch.float64)
    delta = torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64)
    eps = 0.02
    box = flat_box(
        _diagonal_quadratic(h, center, center + delta), eps, num_bisections=DEPTH, generator=_gen()
    )
    truth = torch.sqrt(delta**2 + 2 * eps / h) - delta.abs()
    assert torch.allclose(box.axis_half_widths, truth, rtol=2.0 ** (1 - DEPTH))


def test_tensor_granularity_shares_one_width_per_tensor() -> None:
    """Along a corner direction s of tensor g: t^2 sum_{i in g} h_i / 2 = eps, the same for every s."""
    ha = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    hb = torch.tensor([[0.5, 1.5], [2.5, 4.0]], dtype=torch.float64)

    def loss(p):
        return 0.5 * (ha * p["a"] ** 2).sum() + 0.5 * (hb * p["b"] ** 2).sum()

    params = {"a": torch.zeros(3, dtype=torch.float64), "b": torch.zeros(2, 2, dtype=torch.float64)}
    eps = 0.05
    box = flat_box(
        HessianOperator(loss, params), eps, granularity="tensor", num_bisections=DEPTH, generator=_gen(1)
    )
    widths = [math.sqrt(2 * eps / float(ha.sum())), math.sqrt(2 * eps / float(hb.sum()))]
    expected = torch.tensor([widths[0]] * 3 + [widths[1]] * 4, dtype=torch.float64)
    assert torch.allclose(box.axis_half_widths, expected, rtol=2.0 ** (1 - DEPTH))
    assert box.scale == pytest.approx(1 / math.sqrt(2), rel=1e-7)  # every corner: c^2 T eps
    assert box.violation_fraction == 0.0


def test_flat_directions_saturate_at_max_half_width() -> None:
    h = torch.tensor([1.0, 0.0], dtype=torch.float64)
    H = _diagonal_quadratic(h, torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    box = flat_box(H, 0.01, max_half_width=3.0, generator=_gen())
    assert box.num_saturated == 1
    assert float(box.axis_half_widths[1]) == 3.0
    assert box.scale == 1.0  # the flat axis adds nothing to the loss: the axis box is the box


def test_verification_catches_what_the_search_missed_and_reports_its_stderr() -> None:
    """H = 1 1^T + 0.01 I: the corners differ (loss ~ (sum_i s_i)^2); one search corner misses the worst."""
    n = 6
    Hm = torch.ones(n, n, dtype=torch.float64) + 0.01 * torch.eye(n, dtype=torch.float64)

    def loss(p):
        return 0.5 * p["w"] @ Hm @ p["w"]

    H = HessianOperator(loss, {"w": torch.zeros(n, dtype=torch.float64)})
    box = flat_box(H, 0.01, num_search_points=1, num_verification_points=200, generator=_gen(3))
    f = box.violation_fraction
    assert 0.0 < f < 1.0
    assert box.violation_stderr == pytest.approx(math.sqrt(f * (1 - f) / 200))
    thorough = flat_box(H, 0.01, num_search_points=400, num_verification_points=200, generator=_gen(3))
    assert thorough.scale < box.scale and thorough.violation_fraction < f


def test_a_model_box_is_reproducible_and_vectorized_like_the_loop() -> None:
    case = mlp_case(0, n=24)
    H = HessianOperator.from_model(case.net, F.cross_entropy, case.batches([12, 12]), mode="eval")
    layer = H.select("2.*")
    options = {"num_bisections": 8, "num_search_points": 6, "num_verification_points": 6}
    first, second = (flat_box(layer, 0.05, generator=_gen(5), **options) for _ in range(2))
    assert first.description_length_bits == second.description_length_bits
    assert first.half_widths.shape == (layer.size,)
    looped = flat_box(layer, 0.05, generator=_gen(5), vectorize=False, chunk_size=3, **options)
    assert torch.allclose(looped.axis_half_widths, first.axis_half_widths, rtol=2.0**-7)
    # the box is centred at w: every point of it within the tolerance along each axis
    w = layer.point
    for i in range(layer.size):
        e = torch.zeros_like(w)
        e[i] = float(first.axis_half_widths[i])
        for sign in (1.0, -1.0):
            assert float(layer.value_at(w + sign * e)) <= first.loss + 0.05


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": 0.0}, InputDataError, r"^epsilon must satisfy 0.0 < epsilon; got epsilon=0.0.$"),
        ({"epsilon": -1.0}, InputDataError, r"^epsilon must satisfy 0.0 < epsilon; got epsilon=-1.0.$"),
        ({"precision": 0.0}, InputDataError, r"^precision must satisfy 0.0 < precision; got precision=0.0.$"),
        ({"precision": -2}, InputDataError, r"^precision must satisfy 0.0 < precision; got precision=-2.0.$"),
        ({"max_half_width": 0.0}, InputDataError, "max_half_width must satisfy 0.0 < max_half_width"),
        ({"num_bisections": 0}, InputDataError, "num_bisections must be >= 1; got num_bisections=0"),
        ({"num_verification_points": 0}, InputDataError, "num_verification_points must be >= 1"),
        ({"granularity": "layer"}, ConfigurationError, "granularity must be 'coordinate' or 'tensor'"),
        ({"max_coordinates": 2}, ConfigurationError, "n = 3 exceeds max_coordinates = 2. Use granularity="),
        ({"vectorize": 1}, InputTypeError, "vectorize must be a bool"),
        ({"generator": None}, InputTypeError, "generator must be a torch.Generator"),
    ],
)
def test_flat_box_errors(kwargs, error, match) -> None:
    h = torch.ones(3, dtype=torch.float64)
    H = _diagonal_quadratic(h, torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(error, match=match) as caught:
        flat_box(H, **{"generator": _gen(), **kwargs})
    assert "\n" not in str(caught.value)
    if error is InputDataError:
        assert isinstance(caught.value, ValueError)


def test_hochreiter_box_in_the_measure_table() -> None:
    case = mlp_case(0, n=24)
    H = HessianOperator.from_model(case.net, F.cross_entropy, case.batches([12, 12]), mode="eval")
    options = {"num_bisections": 6, "num_search_points": 4, "num_verification_points": 8, "epsilon": 0.05}
    table = measure(
        H, ["hochreiter_box"], groups="module", generator=_gen(0), options={"hochreiter_box": options}
    )
    assert [r.group for r in table] == ["all", "0", "2"] and not table.failures
    # the groups draw from one stream in order: "all", then "0", then "2"
    g = _gen(0)
    direct = [flat_box(op, generator=g, **options) for op in (H, H.select("0.*"), H.select("2.*"))]
    for group, box in zip(("all", "0", "2"), direct, strict=True):
        row = table.get("hochreiter_box", group)
        assert row.value == box.description_length_bits and math.isnan(row.stderr)
        assert row.diagnostic == "violation_fraction" and row.diagnostic_value == box.violation_fraction
        assert row.diagnostic_stderr == box.violation_stderr and row.num_matvecs == 0
    assert direct[2].half_widths.shape == (H.select("2.*").size,)
    with pytest.raises(InputDataError, match="epsilon must satisfy 0.0 < epsilon"):
        measure(H, ["hochreiter_box"], generator=_gen(), options={"hochreiter_box": {"epsilon": 0.0}})
    with pytest.raises(ConfigurationError, match="exceeds max_coordinates = 10"):
        measure(H, ["hochreiter_box"], generator=_gen(), options={"hochreiter_box": {"max_coordinates": 10}})
    with pytest.raises(InputTypeError, match="generator must be a torch.Generator"):
        measure(H, ["hochreiter_box"])
    with pytest.raises(ConfigurationError, match=r"options\['hochreiter_box'\] has unknown keys \['eps'\]"):
        measure(H, ["hochreiter_box"], generator=_gen(), options={"hochreiter_box": {"eps": 0.1}})


def test_the_box_follows_the_parameters_dtype() -> None:
    h = torch.tensor([1.0, 4.0])
    H = _diagonal_quadratic(h, torch.zeros(2), torch.zeros(2))  # float32
    box = flat_box(H, 0.02, granularity="tensor", generator=_gen())
    assert box.half_widths.dtype == torch.float32 and box.axis_half_widths.dtype == torch.float32
    assert box.axis_half_widths[0] == pytest.approx(math.sqrt(2 * 0.02 / 5.0), rel=1e-5)
