from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from curvature_cases import bilinear_case, dense_hessian, mlp_case
from torch import nn

from flatminima.curvature import HessianOperator, MatrixOperator
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError


@pytest.mark.parametrize("ad_mode", ["reverse", "forward"])
def test_closure_operator_matches_dense_hessian(ad_mode) -> None:
    case = mlp_case(0)
    H = HessianOperator(case.loss, case.params(), ad_mode=ad_mode)
    assert H.ad_mode == ad_mode
    expected = dense_hessian(case.loss, case.params())
    torch.testing.assert_close(H.dense(), expected, rtol=1e-10, atol=1e-12)
    assert H.size == expected.shape[0]
    assert H.dtype == torch.float64


@pytest.mark.parametrize("ad_mode", ["reverse", "forward"])
def test_model_operator_averages_over_the_whole_dataset(ad_mode) -> None:
    case = mlp_case(1, n=31)
    # unequal batches: the batch losses must be weighted by their sizes
    H = HessianOperator.from_model(
        case.net, nn.functional.cross_entropy, case.batches([10, 20, 1]), mode="eval", ad_mode=ad_mode
    )
    expected = dense_hessian(case.loss, case.params())
    torch.testing.assert_close(H.dense(), expected, rtol=1e-10, atol=1e-12)
    assert H.names == ("0.weight", "0.bias", "2.weight", "2.bias")


def test_matmat_matches_matvec_and_loop() -> None:
    case = mlp_case(2)
    H = HessianOperator(case.loss, case.params())
    looped = HessianOperator(case.loss, case.params(), vectorize=False)
    V = torch.randn(H.size, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    HV = H.matmat(V)
    torch.testing.assert_close(HV[:, 1], H.matvec(V[:, 1]))
    torch.testing.assert_close(HV, looped.matmat(V))


def test_select_gives_the_diagonal_block() -> None:
    case = mlp_case(3)
    H = HessianOperator(case.loss, case.params())
    full = H.dense()
    first = H.select("0.*")
    assert first.names == ("0.weight", "0.bias")
    torch.testing.assert_close(first.dense(), full[: first.size, : first.size])
    last = H.select(-1)
    assert last.names == ("2.bias",)
    torch.testing.assert_close(last.dense(), full[-3:, -3:])
    both = H.select("2.bias", 0)  # union in parameter order
    assert both.names == ("0.weight", "2.bias")
    assert H.groups("module") == {"0": ("0.weight", "0.bias"), "2": ("2.weight", "2.bias")}
    assert set(H.groups("parameter")) == set(H.names)


def test_point_flatten_unflatten_roundtrip() -> None:
    case = mlp_case(4)
    H = HessianOperator(case.loss, case.params())
    pieces = H.unflatten(H.point)
    for name, tensor in pieces.items():
        torch.testing.assert_close(tensor, case.params()[name])


def test_value_and_grad() -> None:
    case = mlp_case(5)
    params = case.params()
    H = HessianOperator(case.loss, params)
    value, grad = H.value_and_grad_at(H.point)
    torch.testing.assert_close(value, case.loss(params))
    expected = torch.func.grad(case.loss)(params)
    torch.testing.assert_close(grad, H.flatten(expected))
    torch.testing.assert_close(H.value(), case.loss(params))


def test_to_scipy_is_float64_and_matches() -> None:
    case = mlp_case(6)
    H = HessianOperator(case.loss, case.params())
    op = H.to_scipy()
    assert op.dtype == np.float64
    assert op.shape == (H.size, H.size)
    dense = H.dense().numpy()
    x = np.arange(H.size, dtype=np.float64)
    np.testing.assert_allclose(op.matvec(x), dense @ x, rtol=1e-10, atol=1e-12)
    top = scipy.sparse.linalg.eigsh(op, k=1, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(top[0], np.linalg.eigvalsh(dense)[-1], rtol=1e-8)


def test_float32_follows_inputs() -> None:
    case = mlp_case(7)
    params = {k: v.float() for k, v in case.params().items()}
    x = case.x.float()

    def loss(p):
        return nn.functional.cross_entropy(torch.func.functional_call(case.net, p, (x,)), case.y)

    H = HessianOperator(loss, params)
    assert H.dtype == torch.float32
    assert H.matvec(torch.ones(H.size, dtype=torch.float32)).dtype == torch.float32


def test_from_objective_duck_typed_factor_loss() -> None:
    case = bilinear_case(0)

    class Factorized:
        def value(self, params):
            L, R = params
            return case.loss({"L": L, "R": R})

    H = HessianOperator.from_objective(Factorized(), (case.L, case.R))
    assert H.names == ("0", "1")
    expected = dense_hessian(case.loss, case.params())
    torch.testing.assert_close(H.dense(), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(H.select(1).dense(), expected[-case.R.numel() :, -case.R.numel() :])


def test_from_objective_uses_closed_form_hvp() -> None:
    calls = []

    class WithHvp:
        def value(self, params):
            (x,) = params
            return (x**4).sum()

        def hvp(self, params, direction):
            calls.append(1)
            (x,), (v,) = params, direction
            return (12 * x**2 * v,)

    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    H = HessianOperator.from_objective(WithHvp(), (x,), names=["x"])
    torch.testing.assert_close(H.dense(), torch.diag(12 * x**2))
    assert calls


class _Bad:
    pass


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: HessianOperator(lambda p: p["x"] ** 2, {"x": torch.ones(3)}), InputDataError, "scalar"),
        (
            lambda: HessianOperator(lambda p: p["x"].sum() / 0 * 0, {"x": torch.ones(3)}),
            InputDataError,
            "finite",
        ),
        (lambda: HessianOperator(3, {"x": torch.ones(3)}), InputTypeError, "loss must be callable"),
        (lambda: HessianOperator(lambda p: p["x"].sum(), {}), InputDataError, "at least one tensor"),
        (lambda: HessianOperator(lambda p: p["x"].sum(), [torch.ones(2)]), InputTypeError, "mapping"),
        (
            lambda: HessianOperator(
                lambda p: p["x"].sum(),
                {"x": torch.ones(2, dtype=torch.float64), "y": torch.ones(2, dtype=torch.float32)},
            ),
            InputDataError,
            "one dtype",
        ),
        (
            lambda: HessianOperator(lambda p: p["x"].sum(), {"x": torch.ones(2, dtype=torch.long)}),
            InputTypeError,
            "floating",
        ),
        (lambda: HessianOperator.from_objective(_Bad(), (torch.ones(2),)), InputTypeError, "value"),
        (lambda: HessianOperator.from_model("net", nn.functional.mse_loss, []), InputTypeError, "nn.Module"),
        (
            lambda: HessianOperator(lambda p: p["x"].sum(), {"x": torch.ones(2)}, ad_mode="backward"),
            ConfigurationError,
            "ad_mode must be 'reverse' or 'forward'; got ad_mode='backward'",
        ),
    ],
)
def test_construction_errors(build, error, match) -> None:
    with pytest.raises(error, match=match):
        build()


def test_model_without_trainable_parameters_is_rejected() -> None:
    net = nn.Linear(2, 1).double().requires_grad_(False)
    x, y = torch.ones(3, 2, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64)
    with pytest.raises(InputDataError, match="no parameter of the model requires grad"):
        HessianOperator.from_model(net, nn.functional.mse_loss, [(x, y)], mode="eval")


def test_frozen_parameter_is_held_fixed_and_cannot_be_selected() -> None:
    case = mlp_case(8)
    case.net[0].bias.requires_grad_(False)
    H = HessianOperator.from_model(case.net, nn.functional.cross_entropy, [(case.x, case.y)], mode="eval")
    assert "0.bias" not in H.names
    with pytest.raises(InputDataError, match="'0.bias' does not require grad"):
        H.select("0.bias")


def test_bad_batches_and_selectors() -> None:
    case = mlp_case(9)
    with pytest.raises(InputDataError, match=r"batches\[0\] must be a pair"):
        HessianOperator.from_model(case.net, nn.functional.cross_entropy, [(case.x,)], mode="eval")
    with pytest.raises(InputDataError, match="at least one"):
        HessianOperator.from_model(case.net, nn.functional.cross_entropy, [], mode="eval")
    H = HessianOperator(case.loss, case.params())
    with pytest.raises(InputDataError, match="no parameter matches 'conv'"):
        H.select("conv")
    with pytest.raises(InputDataError, match="out of range"):
        H.select(7)
    with pytest.raises(InputDataError, match="at least one"):
        H.select()
    with pytest.raises(InputDataError, match="level must be"):
        H.groups("layer")


def test_vector_shape_dtype_and_size_errors() -> None:
    case = mlp_case(10)
    H = HessianOperator(case.loss, case.params())
    with pytest.raises(InputDataError, match=r"v must have shape \(43,\)"):
        H.matvec(torch.ones(5, dtype=torch.float64))
    with pytest.raises(InputDataError, match=r"V must have shape \(43, b\)"):
        H.matmat(torch.ones(43, dtype=torch.float64))
    with pytest.raises(InputDataError, match="dtype"):
        H.matvec(torch.ones(43, dtype=torch.float32))
    with pytest.raises(InputDataError, match="exceeds max_size"):
        H.dense(max_size=10)
    with pytest.raises(InputDataError, match="symmetric"):
        MatrixOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(InputDataError, match="square"):
        MatrixOperator(torch.ones(2, 3, dtype=torch.float64))


def test_device_follows_inputs(device: str) -> None:
    case = mlp_case(11)
    params = {k: v.to(device) for k, v in case.params().items()}
    x, y = case.x.to(device), case.y.to(device)

    def loss(p):
        return nn.functional.cross_entropy(torch.func.functional_call(case.net, p, (x,)), y)

    H = HessianOperator(loss, params)
    assert H.device.type == device
    expected = dense_hessian(case.loss, case.params())
    torch.testing.assert_close(H.dense().cpu(), expected, rtol=1e-9, atol=1e-11)


def _sensing_objective_operator():  # type: ignore[no-untyped-def]
    from flatminima.objectives import BilinearFactorization
    from flatminima.problems import MatrixSensing

    g = torch.Generator().manual_seed(4)
    instance = MatrixSensing(shape=(5, 4), rank=2, num_measurements=30).sample(generator=g)
    objective = BilinearFactorization(instance, width=3)
    return HessianOperator.from_objective(objective, objective.random_params(generator=g))


@pytest.mark.parametrize("selection", [(), ("L",), ("R",)])
def test_closed_quadratic_forms_match_the_hessian_vector_products(selection) -> None:
    """An objective's hessian_quadratic_forms (one data pass) give v^T H v exactly, per group too."""
    from flatminima.curvature import ScaledOperator

    H = _sensing_objective_operator()
    assert H._closed_quadratic_forms is not None
    H = H.select(*selection) if selection else H
    V = torch.randn(H.size, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = (V * H.matmat(V)).sum(dim=0)
    torch.testing.assert_close(H.quadratic_forms(V), expected, rtol=1e-10, atol=1e-12)
    scale = torch.linspace(0.5, 2.0, H.size, dtype=torch.float64)
    S = ScaledOperator(H, scale)
    torch.testing.assert_close(S.quadratic_forms(V), (V * S.matmat(V)).sum(dim=0), rtol=1e-10, atol=1e-12)


def test_quadratic_forms_default_and_validation() -> None:
    case = mlp_case(3)
    H = HessianOperator(case.loss, case.params())
    V = torch.randn(H.size, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(H.quadratic_forms(V), (V * H.matmat(V)).sum(dim=0))
    with pytest.raises(InputDataError, match="V"):
        H.quadratic_forms(V[:-1])
