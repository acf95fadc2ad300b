"""Bad models, losses and data for HessianOperator.from_model: one clear error naming the batch or layer."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flatminima.curvature import HessianOperator
from flatminima.errors import ConfigurationError, InputDataError

F = nn.functional
DTYPE = torch.float64


def _net(outputs: int = 3) -> nn.Module:
    torch.manual_seed(0)  # module initialization only
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, outputs)).double()


def _data(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=DTYPE), torch.randint(0, 3, (n,), generator=g)


def _build(net: nn.Module, loss_fn, batches, **options) -> HessianOperator:
    return HessianOperator.from_model(net, loss_fn, batches, **{"mode": "eval", **options})


# ---- malformed batches ---------------------------------------------------------------------------
class _Batches:
    """A re-iterable loader whose batch ``bad_index`` is replaced by ``bad``."""

    def __init__(self, bad_index: int, bad) -> None:
        self.bad_index, self.bad = bad_index, bad

    def __iter__(self):
        x, y = _data()
        for index, batch in enumerate(zip(x.split(4), y.split(4), strict=True)):
            yield self.bad if index == self.bad_index else batch


def test_a_batch_that_is_not_a_pair_is_named() -> None:
    x, _ = _data(4)
    with pytest.raises(
        InputDataError, match=r"^batches\[2\] must be a pair \(inputs, targets\); got tuple of length 1\.$"
    ):
        _build(_net(), F.cross_entropy, _Batches(2, (x,)))


def test_non_tensor_inputs_are_named() -> None:
    _, y = _data(4)
    with pytest.raises(
        InputDataError,
        match=r"^batches\[1\]\[0\] \(inputs\) must be a tensor or a tuple of tensors, each with a leading "
        r"batch dimension; got list of \(float, float, float, float\)\.$",
    ):
        _build(_net(), F.cross_entropy, _Batches(1, ([0.0, 1.0, 2.0, 3.0], y)))


def test_inputs_and_targets_of_different_batch_sizes_are_named() -> None:
    x, y = _data(5)
    with pytest.raises(
        InputDataError,
        match=r"^batches\[1\]\[0\] \(inputs\) and batches\[1\]\[1\] \(targets\) must share the leading batch "
        r"dimension; got inputs of shape \(5, 3\) and targets of shape \(4,\)\.$",
    ):
        _build(_net(), F.cross_entropy, _Batches(1, (x, y[:4])))


def test_data_on_another_device_is_named() -> None:
    x, y = _data(4)
    with pytest.raises(
        InputDataError,
        match=r"^batches\[0\]\[0\] must be on the model parameters' device cpu; got meta \(have the loader "
        r"yield batches moved with \.to\('cpu'\)\)\.$",
    ):
        _build(_net(), F.cross_entropy, [(x.to("meta"), y)])


# ---- model and data disagree ---------------------------------------------------------------------
def test_data_of_another_dtype_than_the_model_names_both_dtypes_and_the_batch() -> None:
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    batches = [(xb.float() if index == 2 else xb, yb) for index, (xb, yb) in enumerate(loader)]
    with pytest.raises(
        InputDataError,
        match=r"^batches\[2\]\[0\] \(inputs\) must have the model parameters' dtype torch\.float64; got "
        r"torch\.float32 \(convert the data or the model, e\.g\. model\.to\(torch\.float64\)\)\.$",
    ):
        _build(_net(), F.cross_entropy, batches)


@pytest.mark.parametrize(
    ("loss_fn", "targets", "shapes"),
    [
        # mse_loss would warn and silently broadcast (4, 1) against (4,) to (4, 4)
        (F.mse_loss, lambda y: torch.zeros(4, dtype=DTYPE), r"\(4, 1\) and the targets \(4,\)"),
        (F.cross_entropy, lambda y: torch.zeros(4, 5, dtype=DTYPE), r"\(4, 1\) and the targets \(4, 5\)"),
        (nn.MSELoss(), lambda y: torch.zeros(4, 2, dtype=DTYPE), r"\(4, 1\) and the targets \(4, 2\)"),
    ],
)
def test_targets_that_do_not_match_the_outputs_name_the_batch_and_both_shapes(
    loss_fn, targets, shapes
) -> None:
    x, y = _data()
    batches = [(x[:4], torch.zeros(4, 1, dtype=DTYPE)), (x[4:8], targets(y))]
    with pytest.raises(
        InputDataError,
        match=rf"^loss_fn\(outputs, targets\) failed on batches\[1\]: the model's outputs have shape "
        rf"{shapes}; ",
    ):
        _build(_net(outputs=1), loss_fn, batches)


def test_a_model_that_fails_on_a_batch_names_it() -> None:
    x, y = _data()
    with pytest.raises(
        InputDataError,
        match=r"^the model failed on batches\[1\] with inputs of shape \(4, 2\): mat1 and mat2",
    ):
        _build(_net(), F.cross_entropy, [(x[:4], y[:4]), (x[4:8, :2], y[4:8])])


# ---- the loss must be a batch mean ---------------------------------------------------------------
@pytest.mark.parametrize("loss_fn", [nn.MSELoss(reduction="sum"), nn.CrossEntropyLoss(reduction="none")])
def test_a_loss_module_that_does_not_average_is_rejected(loss_fn) -> None:
    x, y = _data()
    name, reduction = type(loss_fn).__name__, loss_fn.reduction
    with pytest.raises(
        ConfigurationError,
        match=rf"^loss_fn must average over its batch \(reduction='mean'\) because the dataset loss is the "
        rf"mean over all examples; got {name}\(reduction='{reduction}'\)\.$",
    ):
        _build(_net(), loss_fn, [(x, y)])


@pytest.mark.parametrize(
    "loss_fn",
    [
        functools.partial(F.cross_entropy, reduction="sum"),
        lambda outputs, targets: F.cross_entropy(outputs, targets, reduction="none").sum(),
    ],
)
def test_a_summing_loss_callable_is_detected_on_the_first_batch(loss_fn) -> None:
    x, y = _data()
    with pytest.raises(
        ConfigurationError,
        match=r"^loss_fn must average over its batch \(reduction='mean'\) because the dataset loss is the "
        r"mean over all examples; on batches\[0\] it gives \S+ for the whole batch but \S+ as the "
        r"example-weighted mean of its two halves and \S+ as their sum, as with reduction='sum'\.$",
    ):
        _build(_net(), loss_fn, [(x[:5], y[:5]), (x[5:], y[5:])])


def test_a_loss_callable_returning_per_example_losses_is_named() -> None:
    x, y = _data()
    with pytest.raises(
        InputDataError,
        match=r"^loss_fn must return a scalar \(0-dim\) tensor, the mean over its batch; got \(12,\) on "
        r"batches\[0\]\.$",
    ):
        _build(_net(), functools.partial(F.cross_entropy, reduction="none"), [(x, y)])


def test_a_non_finite_loss_names_the_batch() -> None:
    x, y = _data()
    x[7, 0] = float("nan")
    with pytest.raises(
        InputDataError, match=r"^loss must be finite at the given parameters; got nan on batches\[1\]\.$"
    ):
        _build(_net(), F.cross_entropy, [(x[:6], y[:6]), (x[6:], y[6:])])


# ---- layers that cannot be measured --------------------------------------------------------------
class _Cube(torch.autograd.Function):
    """x^3 as an old-style autograd.Function: no setup_context, so torch.func cannot transform it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


class _CubeLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Cube.apply(x)


def test_a_layer_without_second_derivatives_is_named() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), _CubeLayer(), nn.Linear(4, 3)).double()
    x, y = _data()
    with pytest.raises(
        ConfigurationError,
        match=r"^layer '1' \(_CubeLayer\) cannot be differentiated twice \(reverse over reverse mode\), so "
        r"no Hessian-vector product passes through it: .*setup_context",
    ):
        _build(net, F.cross_entropy, [(x, y)])


class _Warp(nn.Module):
    """Resamples a 4x4 image through a learned affine grid (grid_sample has no forward-mode AD)."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([[1.0, 0.1, 0.0], [0.0, 0.9, 0.1]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta.expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, [x.shape[0], 1, 4, 4], align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)


def test_forward_mode_names_the_layer_and_points_to_reverse_mode() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(_Warp(), nn.Flatten(), nn.Linear(16, 3)).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 4, 4, generator=g, dtype=DTYPE), torch.randint(0, 3, (6,), generator=g)
    with pytest.raises(
        ConfigurationError,
        match=r"^layer '0' \(_Warp\) cannot be differentiated twice \(forward over reverse mode\), so no "
        r"Hessian-vector product passes through it \(ad_mode='reverse' supports it\): .*grid_sampler_2d",
    ):
        _build(net, F.cross_entropy, [(x, y)], ad_mode="forward")
    _build(net, F.cross_entropy, [(x, y)], ad_mode="reverse")  # as the message says


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 2, dropout=0.1, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(x, x, x, need_weights=False)[0].mean(dim=1))


def test_attention_dropout_in_train_mode_is_named() -> None:
    net = _Attention().double()
    x, y = torch.randn(4, 3, 4, dtype=DTYPE), torch.zeros(4, dtype=torch.long)
    with pytest.raises(
        ConfigurationError,
        match=r"^mode='train' cannot fix the attention dropout of layer 'attention' \(MultiheadAttention\), "
        r"dropout=0\.1: it draws new masks at every call\. Set its dropout to 0 or use mode='eval'\.$",
    ):
        _build(net, F.cross_entropy, [(x, y)], mode="train")
    _build(net, F.cross_entropy, [(x, y)], mode="eval")  # no dropout in eval mode


class _FunctionalDropout(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, 0.5, self.training)


def test_a_random_layer_in_train_mode_is_named() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), _FunctionalDropout(), nn.Linear(4, 3)).double()
    x, y = _data()
    with pytest.raises(
        ConfigurationError,
        match=r"^mode='train' needs the same loss at every pass, but layer '1' \(_FunctionalDropout\) gives "
        r"different outputs on the same batch \(a random layer, e\.g\. functional dropout\)\. "
        r"Use mode='eval'\.$",
    ):
        _build(net, F.cross_entropy, [(x, y)], mode="train")


class _TwiceDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear, self.dropout = nn.Linear(3, 3), nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(self.dropout(x)))


def test_a_dropout_layer_applied_twice_in_train_mode_is_named() -> None:
    torch.manual_seed(0)
    net = _TwiceDropout().double()
    x, y = _data()
    with pytest.raises(
        ConfigurationError,
        match=r"^mode='train' needs each nn\.Dropout to be applied once per forward pass \(one fixed mask "
        r"per batch\); layer 'dropout' is applied more than once\. Use one module per use\.$",
    ):
        _build(net, F.cross_entropy, [(x, y)], mode="train", generator=torch.Generator().manual_seed(0))
