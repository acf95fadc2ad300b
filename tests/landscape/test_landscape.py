"""Landscape directions (filter normalization as defined, reproducible), slices, widths and errors."""

from __future__ import annotations

import pytest
import torch

from flatminima.curvature import HessianOperator
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError
from flatminima.landscape import (
    basin_width,
    direction_norm,
    hessian_directions,
    interpolate,
    model_functions,
    random_direction,
    slice_1d,
    slice_2d,
)
from flatminima.networks import mlp, rescale_layers


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_filter_normalization_matches_its_definition() -> None:
    net = mlp(6, [5, 4], 3, generator=gen(0))
    d = random_direction(net, generator=gen(1))
    raw = random_direction(net, generator=gen(1), normalization="none")
    for name, w in net.named_parameters():
        if w.ndim <= 1:
            assert torch.equal(d[name], torch.zeros_like(w))
            continue
        # each filter (row) rescaled to the norm of the weight's row, keeping the Gaussian draw's direction
        assert torch.allclose(d[name].norm(dim=1), w.detach().norm(dim=1), rtol=1e-12, atol=0)
        cosine = (d[name] * raw[name]).sum(1) / (d[name].norm(dim=1) * raw[name].norm(dim=1))
        assert torch.allclose(cosine, torch.ones_like(cosine), rtol=1e-12)
    copied = random_direction(net, generator=gen(1), one_dim="copy")
    assert torch.equal(copied["0.bias"], net[0].bias.detach())
    layer = random_direction(net, generator=gen(1), normalization="layer")
    assert layer["2.weight"].norm() == pytest.approx(float(net[2].weight.detach().norm()), rel=1e-12)


def test_directions_are_reproducible_and_leave_the_global_rng() -> None:
    net = mlp(6, [5], 3, generator=gen(0))
    state = torch.random.get_rng_state()
    a, b = random_direction(net, generator=gen(7)), random_direction(net, generator=gen(7))
    c = random_direction(net, generator=gen(8))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_filter_normalized_slices_are_invariant_to_rescaling() -> None:
    net = mlp(4, [6], 3, generator=gen(0))
    scaled = rescale_layers(net, 0, 5.0)
    x = torch.randn(20, 4, generator=gen(1), dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=gen(2))
    f = model_functions(net, {"train": (x, y)})
    curves = [slice_1d(f, m, random_direction(m, generator=gen(3)), num_points=9) for m in (net, scaled)]
    assert torch.allclose(curves[0].values["train_loss"], curves[1].values["train_loss"], rtol=1e-10)


def test_slices_interpolation_and_width() -> None:
    f = {"f": lambda p: (p["w"] ** 2).sum()}
    w = {"w": torch.zeros(2, dtype=torch.float64)}
    curve = slice_1d(
        f, w, {"w": torch.tensor([1.0, 0.0], dtype=torch.float64)}, extent=(-2.0, 2.0), num_points=401
    )
    assert basin_width(curve, "f", 1.0) == pytest.approx(2.0, abs=1e-3)  # f = t^2 <= 1
    line = interpolate(f, w, {"w": torch.tensor([2.0, 0.0], dtype=torch.float64)}, num_points=5)
    assert torch.allclose(line.values["f"], torch.tensor([1.0, 0.0, 1.0, 4.0, 9.0], dtype=torch.float64))
    surface = slice_2d(f, w, {"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 1.0])}, num_points=3)
    assert surface.values["f"][1, 1] == 0.0 and surface.values["f"][0, 2] == 2.0


def test_hessian_directions_are_top_eigenvectors() -> None:
    H = HessianOperator(
        lambda p: (torch.tensor([1.0, 5.0, 3.0], dtype=torch.float64) * p["w"] ** 2).sum(),
        {"w": torch.zeros(3, dtype=torch.float64)},
    )
    first, second = hessian_directions(H, 2, generator=gen(0))
    assert abs(float(first["w"][1])) == pytest.approx(1.0, abs=1e-8)
    assert abs(float(second["w"][2])) == pytest.approx(1.0, abs=1e-8)
    assert direction_norm(first) == pytest.approx(1.0)


def test_errors() -> None:
    with pytest.raises(InputDataError, match=r"the model \(ReLU\) has no trainable parameters"):
        random_direction(torch.nn.ReLU(), generator=gen(0))
    with pytest.raises(
        InputDataError, match=r"model_or_params must hold at least one tensor; got an empty mapping"
    ):
        random_direction({}, generator=gen(0))
    with pytest.raises(
        InputTypeError, match=r"model_or_params must be an nn.Module or a mapping of tensors; got int"
    ):
        random_direction(3, generator=gen(0))  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match=r"generator must be a torch.Generator"):
        random_direction({"w": torch.zeros(2)}, generator=None)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError,
        match=r"normalization must be one of filter, layer, none; got normalization='unit'",
    ):
        random_direction({"w": torch.zeros(2)}, generator=gen(0), normalization="unit")
    with pytest.raises(ConfigurationError, match=r"one_dim must be 'zero' or 'copy'; got one_dim='skip'"):
        random_direction({"w": torch.zeros(2)}, generator=gen(0), one_dim="skip")
    f = {"f": lambda p: (p["w"] ** 2).sum()}
    with pytest.raises(InputDataError, match=r"end\['w'\] must have shape \(2,\); got \(3,\)"):
        interpolate(f, {"w": torch.zeros(2)}, {"w": torch.zeros(3)})
    with pytest.raises(InputDataError, match=r"interpolate extent must satisfy extent\[0\] < extent\[1\]"):
        interpolate(f, {"w": torch.zeros(2)}, {"w": torch.zeros(2)}, extent=(1.0, 0.0))
    with pytest.raises(
        InputDataError, match=r"interpolate num_points must be >= 2; got interpolate num_points=1"
    ):
        interpolate(f, {"w": torch.zeros(2)}, {"w": torch.zeros(2)}, num_points=1)
    with pytest.raises(InputTypeError, match=r"functions must be a non-empty mapping"):
        interpolate({}, {"w": torch.zeros(2)}, {"w": torch.zeros(2)})
    curve = interpolate(f, {"w": torch.zeros(2)}, {"w": torch.ones(2)}, num_points=3)
    with pytest.raises(InputDataError, match=r"name must be one of \['f'\]; got name='g'"):
        basin_width(curve, "g", 1.0)
    with pytest.raises(InputDataError, match=r"delta must satisfy 0.0 < delta; got delta=0.0"):
        basin_width(curve, "f", 0.0)
    with pytest.raises(InputDataError, match=r"num_directions must satisfy 1 <= num_directions <= n = 2"):
        hessian_directions(
            HessianOperator(lambda p: p["w"].sum() ** 2, {"w": torch.zeros(2, dtype=torch.float64)}),
            3,
            generator=gen(0),
        )


def test_directional_width_resolves_narrow_basins() -> None:
    from flatminima.landscape import directional_width

    w = {"w": torch.zeros(2, dtype=torch.float64)}
    d = {"w": torch.tensor([1.0, 0.0], dtype=torch.float64)}
    # f = 1e4 t^2 <= 1 iff |t| <= 0.01, far below the grid spacing 0.2
    f = lambda p: 1e4 * (p["w"] ** 2).sum()  # noqa: E731
    assert directional_width(f, w, d, 1.0, extent=1.0, num_points=5, tolerance=1e-9) == pytest.approx(
        0.02, rel=1e-6
    )
    # asymmetric: f = t^2 for t > 0 and 4 t^2 for t < 0 -> widths 1 and 0.5 at delta = 1
    g = lambda p: torch.where(p["w"][0] > 0, 1.0, 4.0) * p["w"][0] ** 2  # noqa: E731
    assert directional_width(g, w, d, 1.0, extent=3.0, tolerance=1e-9) == pytest.approx(1.5, rel=1e-6)
    # never crossing: a lower bound equal to the whole segment
    assert directional_width(f, w, {"w": torch.zeros(2, dtype=torch.float64)}, 1.0, extent=0.5) == 1.0
    with pytest.raises(InputDataError, match=r"extent must satisfy 0.0 < extent; got extent=0.0"):
        directional_width(f, w, d, 1.0, extent=0.0)
    with pytest.raises(InputDataError, match=r"direction\['w'\] must have shape \(2,\); got \(3,\)"):
        directional_width(f, w, {"w": torch.zeros(3)}, 1.0)
    with pytest.raises(InputTypeError, match=r"function must be callable; got int"):
        directional_width(3, w, d, 1.0)  # type: ignore[arg-type]
