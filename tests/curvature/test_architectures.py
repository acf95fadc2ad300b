"""Hessian-vector products of real architectures against a dense torch.func.hessian (float64, tiny).

The reference differentiates the example-weighted batch losses of a plain copy of the model (in the
same mode, fixed dropout masks, dense embedding gradients) twice, with attention on the MATH backend
(the fused CPU kernels have no second derivative). Its LayerNorm and train-mode BatchNorm are written
out: on torch 2.13, torch.func.hessian (and jacrev of jacrev) of F.layer_norm and of train-mode
batch_norm is wrong, non-symmetric and off finite differences of the gradient by about 0.5 (nested
vmap over their backward), while single Hessian-vector products (vjp or jvp of torch.func.grad, vmapped
once, as the operator computes them) agree with finite differences; the finite-difference test below
checks the operator on the real layers independently of any reference.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import pytest
import torch
from curvature_cases import dense_hessian
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from flatminima.curvature import HessianOperator, taylor

F = nn.functional
DTYPE = torch.float64


def _randomize(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """Random parameters (and BatchNorm running statistics) from an explicit generator, in float64."""
    net = net.to(DTYPE)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=generator, dtype=DTYPE))
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator, dtype=DTYPE))
                module.running_var.copy_(
                    torch.rand(module.num_features, generator=generator, dtype=DTYPE) + 0.5
                )
    return net


class _Residual(nn.Module):
    """x + W2 tanh(LayerNorm(W1 x)), then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.outer = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.outer(torch.tanh(self.norm(self.inner(x)))))


class _Attention(nn.Module):
    """Self-attention over a sequence, mean-pooled, then a linear head."""

    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.attention(x, x, x, need_weights=self.need_weights)
        return self.head(out.mean(dim=1))


class _Encoder(nn.Module):
    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=5, dropout=dropout, batch_first=True)
        self.layer.self_attn.dropout = 0.0  # attention dropout cannot be fixed (see test_model_errors)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x).mean(dim=1))


def _features(shape: tuple[int, ...]) -> Callable[[torch.Generator, int], torch.Tensor]:
    return lambda g, n: torch.randn(n, *shape, generator=g, dtype=DTYPE)


def _tokens(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.randint(0, 7, (n, 3), generator=g)


@dataclasses.dataclass
class Architecture:
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator, int], torch.Tensor]
    mode: str = "eval"


ARCHITECTURES: dict[str, Architecture] = {
    "conv1d": Architecture(
        lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(9, 3)), _features((2, 5))
    ),
    "conv2d": Architecture(
        lambda: nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)
        ),
        _features((1, 4, 4)),
    ),
    "batchnorm_train": Architecture(
        lambda: nn.Sequential(
            nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(18, 3)
        ),
        _features((1, 4, 4)),
        "train",
    ),
    "batchnorm_eval": Architecture(
        lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)),
        _features((3,)),
    ),
    "layernorm": Architecture(
        lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Tanh(), nn.Linear(4, 3)), _features((3,))
    ),
    "groupnorm": Architecture(
        lambda: nn.Sequential(
            nn.Conv1d(2, 4, 2), nn.GroupNorm(2, 4), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)
        ),
        _features((2, 4)),
    ),
    "residual": Architecture(_Residual, _features((4,))),
    "embedding": Architecture(
        lambda: nn.Sequential(nn.Embedding(7, 2), nn.Flatten(), nn.Tanh(), nn.Linear(6, 3)), _tokens
    ),
    "embedding_sparse": Architecture(
        lambda: nn.Sequential(nn.Embedding(7, 2, sparse=True), nn.Flatten(), nn.Tanh(), nn.Linear(6, 3)),
        _tokens,
    ),
    "attention_fused": Architecture(lambda: _Attention(need_weights=False), _features((3, 4))),
    "attention_weights": Architecture(lambda: _Attention(need_weights=True), _features((3, 4))),
    "transformer_eval": Architecture(lambda: _Encoder(dropout=0.1), _features((3, 4))),
    "transformer_train_dropout": Architecture(lambda: _Encoder(dropout=0.3), _features((3, 4)), "train"),
    "mlp_train_dropout": Architecture(
        lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Dropout(0.4), nn.Linear(5, 3)),
        _features((3,)),
        "train",
    ),
}


class _Masked(nn.Module):
    """The reference's dropout: multiply by the operator's fixed mask of the current batch."""

    def __init__(self, masks: dict[int, torch.Tensor], current: list[int]) -> None:
        super().__init__()
        self.masks, self.current = masks, current

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.masks[self.current[0]]


class _ManualBatchNorm(nn.Module):
    """Train-mode BatchNorm written out: (x - mean) / sqrt(var + eps) * weight + bias, batch statistics."""

    def __init__(self, module: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = module.weight, module.bias, module.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, correction=0)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.reshape(shape) + self.bias.reshape(shape)


class _ManualLayerNorm(nn.Module):
    """LayerNorm written out: (x - mean) / sqrt(var + eps) * weight + bias over the trailing dimensions."""

    def __init__(self, module: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = module.weight, module.bias, module.eps
        self.dims = tuple(range(-len(module.normalized_shape), 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=self.dims, keepdim=True)
        var = x.var(dim=self.dims, keepdim=True, correction=0)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def _written_out(reference: nn.Module, mode: str) -> None:
    """Replace LayerNorm (and train-mode BatchNorm) by written-out modules; embeddings use dense gradients."""
    for name, module in list(reference.named_modules()):
        parent, _, child = name.rpartition(".")
        if isinstance(module, nn.LayerNorm):
            setattr(reference.get_submodule(parent), child, _ManualLayerNorm(module))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and mode == "train":
            setattr(reference.get_submodule(parent), child, _ManualBatchNorm(module))
        elif isinstance(module, nn.Embedding):
            module.sparse = False


def _reference_loss(
    net: nn.Module, H: HessianOperator, mode: str, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """sum_b (n_b / N) cross_entropy(net(x_b), y_b) on a plain copy of ``net`` in ``mode``."""
    reference = copy.deepcopy(net).train(mode == "train")
    current = [0]
    _written_out(reference, mode)
    if mode == "train":
        assert H.source is not None
        for name, module in list(H.source.model.named_modules()):
            if hasattr(module, "masks"):  # the operator's fixed-mask dropout: reuse its masks
                parent, _, child = name.rpartition(".")
                setattr(reference.get_submodule(parent), child, _Masked(module.masks, current))
    total = sum(int(y.shape[0]) for _, y in batches)

    def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
        value = torch.zeros((), dtype=DTYPE)
        with sdpa_kernel(SDPBackend.MATH):
            for index, (x, y) in enumerate(batches):
                current[0] = index
                out = torch.func.functional_call(reference, params, (x,))
                value = value + F.cross_entropy(out, y) * (y.shape[0] / total)
        return value

    return loss


def _case(name: str, seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]], str]:
    architecture = ARCHITECTURES[name]
    g = torch.Generator().manual_seed(seed)
    net = _randomize(architecture.build(), g)
    x = architecture.inputs(g, 7)
    y = torch.randint(0, 3, (7,), generator=g)
    return net, [(x[:4], y[:4]), (x[4:], y[4:])], architecture.mode  # unequal batches: weighted by size


@pytest.mark.parametrize("ad_mode", ["reverse", "forward"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_hessian_matches_the_dense_hessian(name: str, ad_mode: str) -> None:
    net, batches, mode = _case(name)
    H = HessianOperator.from_model(
        net, F.cross_entropy, batches, mode=mode, generator=torch.Generator().manual_seed(1), ad_mode=ad_mode
    )
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    expected = dense_hessian(_reference_loss(net, H, mode, batches), params)
    dense = H.dense()
    torch.testing.assert_close(dense, expected, rtol=1e-9, atol=1e-10)
    assert float(expected.abs().max()) > 1e-3  # a real curvature, not zeros on both sides
    torch.testing.assert_close(H.dense(), dense, rtol=0, atol=0)  # the same loss at every product
    # Taylor mode supports plain MLPs only: everything here keeps Hessian-vector products
    assert not taylor.supports(H.source.model if H.source is not None else net, F.cross_entropy, mode)
    assert H._closed_quadratic_forms is None
    V = torch.randn(H.size, 3, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    torch.testing.assert_close(H.quadratic_forms(V), (V * H.matmat(V)).sum(dim=0), rtol=1e-10, atol=1e-12)


def test_the_fused_attention_kernels_alone_have_no_second_derivative() -> None:
    """The problem the MATH backend solves (skipped once torch differentiates its fused kernels twice)."""
    net, batches, _ = _case("attention_fused")
    params = {k: v.detach().clone() for k, v in net.eval().named_parameters()}
    x, y = batches[0]

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(torch.func.functional_call(net, p, (x,)), y)

    try:
        dense_hessian(loss, params)
    except (RuntimeError, NotImplementedError) as error:
        assert "scaled_dot_product" in str(error)
    else:
        pytest.skip("this torch differentiates its fused attention kernels twice")


def test_measuring_attention_leaves_the_model_and_the_attention_backends_untouched() -> None:
    net, batches, _ = _case("transformer_eval")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled())
    H = HessianOperator.from_model(net, F.cross_entropy, batches, mode="eval")
    H.matvec(torch.ones(H.size, dtype=DTYPE))
    assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled()) == flags
    assert net.training  # the user's model keeps its mode
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    sparse = _randomize(ARCHITECTURES["embedding_sparse"].build(), torch.Generator().manual_seed(0))
    tokens = _tokens(torch.Generator().manual_seed(1), 4)
    HessianOperator.from_model(sparse, F.cross_entropy, [(tokens, batches[0][1])], mode="eval")
    assert sparse[0].sparse  # dense gradients are used on the measured copy only


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(9, 3)),
        nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 3)),
        nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Tanh(), nn.Linear(4, 3))),  # nested
        nn.Sequential(nn.Embedding(7, 2), nn.Flatten(), nn.Linear(6, 3)),
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)),
        _Residual(),
        _Attention(need_weights=False),
        nn.TransformerEncoderLayer(4, 2, dim_feedforward=5, batch_first=True),
    ],
)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_taylor_mode_rejects_every_other_architecture(model: nn.Module, mode: str) -> None:
    assert taylor.supports(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)), F.cross_entropy, mode)
    assert not taylor.supports(model, F.cross_entropy, mode)


def test_taylor_mode_rejects_hooked_layers() -> None:
    """A forward hook changes what the network computes, which Taylor mode would not see."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    assert taylor.supports(net, F.cross_entropy, "eval")
    handle = net[1].register_forward_hook(lambda module, args, output: 2 * output)
    assert not taylor.supports(net, F.cross_entropy, "eval")
    handle.remove()
    net.register_forward_pre_hook(lambda module, args: (2 * args[0],))
    assert not taylor.supports(net, F.cross_entropy, "eval")


@pytest.mark.parametrize("name", ["layernorm", "batchnorm_train", "transformer_train_dropout"])
def test_hessian_matches_finite_differences_of_the_gradient(name: str) -> None:
    """An independent check on the real layers: H e_j = (g(w + h e_j) - g(w - h e_j)) / (2 h) + O(h^2)."""
    net, batches, mode = _case(name)
    H = HessianOperator.from_model(
        net, F.cross_entropy, batches, mode=mode, generator=torch.Generator().manual_seed(1)
    )
    step, chosen = 1e-5, list(range(0, H.size, max(1, H.size // 30)))  # about 30 columns
    columns = []
    for j in chosen:
        shift = torch.zeros(H.size, dtype=DTYPE)
        shift[j] = step
        forward, backward = H.value_and_grad_at(H.point + shift)[1], H.value_and_grad_at(H.point - shift)[1]
        columns.append((forward - backward) / (2 * step))
    torch.testing.assert_close(H.dense()[:, chosen], torch.stack(columns, dim=1), rtol=1e-6, atol=1e-7)
