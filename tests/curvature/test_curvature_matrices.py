"""The generalized Gauss-Newton, Fisher and empirical Fisher operators against dense constructions."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from curvature_cases import mlp_case, within
from torch import nn

from flatminima.curvature import (
    CURVATURES,
    EmpiricalFisherOperator,
    FisherOperator,
    GeneralizedGaussNewtonOperator,
    HessianOperator,
    curvature_operator,
    exact_trace,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_eigenvalues,
    measure,
)
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError

F = nn.functional
SIZES = [5, 7]


def _regression_case(seed: int = 1, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return net, x, y


def _problem(kind: str):
    """(net, loss_fn, x, y) for kind "cross_entropy" or "mse": tiny float64 tanh MLPs."""
    if kind == "cross_entropy":
        case = mlp_case(0, n=12)
        return case.net, F.cross_entropy, case.x, case.y
    net, x, y = _regression_case()
    return net, F.mse_loss, x, y


def _batches(x, y):
    return list(zip(x.split(SIZES), y.split(SIZES), strict=True))


class Flat:
    """The network as a function of its flattened parameters (in named_parameters order)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        params = dict(net.named_parameters())
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.numels = [p.numel() for p in params.values()]
        self.theta = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def outputs(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pieces = theta.split(self.numels)
        params = {n: p.reshape(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}
        return torch.func.functional_call(self.net, params, (x,))

    def jacobians(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example Jacobians df_n/dw, shape (N, K, P)."""
        J = torch.func.jacrev(self.outputs)(self.theta, x)
        return J.reshape(x.shape[0], -1, self.theta.numel())

    def example_gradients(self, loss, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-example gradients of loss(f(x_n), t_n) by vmap(grad), shape (N, P)."""

        def example_loss(theta, xn, tn):
            return loss(self.outputs(theta, xn[None]), tn[None])

        return torch.func.vmap(torch.func.grad(example_loss), in_dims=(None, 0, 0))(self.theta, x, targets)


def _output_hessians(kind: str, outputs: torch.Tensor) -> torch.Tensor:
    """H_n, the Hessian of example n's loss in its output, shape (N, K, K), by torch.func.hessian."""
    flat = outputs.reshape(outputs.shape[0], -1)
    loss = (lambda f: torch.logsumexp(f, 0)) if kind == "cross_entropy" else (lambda f: f.square().mean())
    with warnings.catch_warnings():  # forward-over-reverse: torch warns about its own jit.script use
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        return torch.stack([torch.func.hessian(loss)(f) for f in flat])


def _dense_ggn(net, kind: str, x: torch.Tensor) -> torch.Tensor:
    flat = Flat(net)
    J = flat.jacobians(x)
    H = _output_hessians(kind, flat.outputs(flat.theta, x))
    return torch.einsum("nkp,nkl,nlq->pq", J, H, J) / x.shape[0]


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_ggn_matches_its_dense_construction(kind: str) -> None:
    net, loss, x, y = _problem(kind)
    G = GeneralizedGaussNewtonOperator(net, loss, _batches(x, y), mode="eval")
    expected = _dense_ggn(net, kind, x)
    dense = G.dense()
    assert G.curvature == "ggn" and G.num_examples == 12 and G.mode == "eval"
    torch.testing.assert_close(dense, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dense, dense.T, rtol=0, atol=1e-14)
    assert float(torch.linalg.eigvalsh(dense).min()) >= -1e-12 * float(dense.abs().max())


def test_ggn_is_the_hessian_of_a_linear_least_squares_model() -> None:
    net, x, y = _regression_case()
    linear = net[2]
    features = torch.tanh(net[0](x)).detach()
    batches = _batches(features, y)
    G = curvature_operator(linear, nn.MSELoss(), batches, curvature="ggn")
    H = curvature_operator(linear, nn.MSELoss(), batches, curvature="hessian")
    assert isinstance(H, HessianOperator)
    torch.testing.assert_close(G.dense(), H.dense(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_empirical_fisher_matches_per_example_gradients(kind: str) -> None:
    net, loss, x, y = _problem(kind)
    E = EmpiricalFisherOperator(net, loss, _batches(x, y), mode="eval")
    g = Flat(net).example_gradients(loss, x, y)
    torch.testing.assert_close(E.dense(), g.T @ g / 12, rtol=1e-10, atol=1e-13)
    assert torch.linalg.matrix_rank(E.dense()) <= 12


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_fisher_matches_its_dense_construction_from_the_same_samples(kind: str) -> None:
    net, loss, x, y = _problem(kind)
    S = 3
    Fi = FisherOperator(
        net, loss, _batches(x, y), generator=torch.Generator().manual_seed(0), num_samples=S, mode="eval"
    )
    assert Fi.curvature == "fisher" and Fi.num_samples == S and len(Fi.samples) == len(SIZES)
    flat = Flat(net)
    samples = torch.cat(Fi.samples)  # (N, S) labels, or (N, S, D) Gaussian targets
    expected = torch.zeros(flat.theta.numel(), flat.theta.numel(), dtype=torch.float64)
    for s in range(S):
        if kind == "cross_entropy":  # the score of a sampled label: the cross-entropy gradient
            g = flat.example_gradients(F.cross_entropy, x, samples[:, s])
            scale = 1.0
        else:  # the unit-variance Gaussian's score, times c = 2/D (the loss is c times its NLL)
            g = flat.example_gradients(lambda f, t: 0.5 * (f - t).square().sum(), x, samples[:, s])
            scale = 2.0 / y.shape[1]
        expected += scale * g.T @ g
    expected /= 12 * S
    torch.testing.assert_close(Fi.dense(), expected, rtol=1e-10, atol=1e-13)
    if kind == "cross_entropy":
        assert samples.dtype == torch.int64 and int(samples.max()) < 3
    else:
        assert samples.shape == (12, S, 2)


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_fisher_is_the_ggn_in_expectation(kind: str) -> None:
    """Independent draws of F average to G (both losses are exponential-family NLLs in their outputs)."""
    net, loss, x, y = _problem(kind)
    batches = _batches(x, y)
    G = GeneralizedGaussNewtonOperator(net, loss, batches, mode="eval").dense()
    g = torch.Generator().manual_seed(3)
    draws = torch.stack(
        [
            FisherOperator(net, loss, batches, generator=g, num_samples=4, mode="eval").dense()
            for _ in range(40)
        ]
    )
    directions = torch.randn(G.shape[0], 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    summaries = [
        (draws.diagonal(dim1=1, dim2=2).sum(dim=1), float(G.trace())),
        *[(torch.einsum("i,kij,j->k", v, draws, v), float(v @ G @ v)) for v in directions.T],
    ]
    for samples, exact in summaries:
        mean, stderr = float(samples.mean()), float(samples.std()) / math.sqrt(len(samples))
        assert abs(mean - exact) <= 5 * stderr
        assert stderr < 0.2 * abs(exact)  # the check has power
    # entrywise: every entry of the mean within 6 standard errors (tiny entries: absolute floor)
    stderr = draws.std(dim=0) / math.sqrt(len(draws))
    assert bool(((draws.mean(dim=0) - G).abs() <= 6 * stderr + 1e-12).all())


@pytest.mark.parametrize("curvature", ["ggn", "fisher", "empirical_fisher"])
@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_operators_are_psd_and_work_with_the_estimators(curvature: str, kind: str) -> None:
    net, loss, x, y = _problem(kind)
    op = curvature_operator(
        net,
        loss,
        _batches(x, y),
        curvature=curvature,
        mode="eval",
        generator=torch.Generator().manual_seed(1),
    )
    dense = op.dense()
    eigenvalues = torch.linalg.eigvalsh(dense)
    assert float(eigenvalues.min()) >= -1e-12 * float(eigenvalues.max())
    V = torch.randn(op.size, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(op.quadratic_forms(V), (V * (dense @ V)).sum(0), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(op.matvec(V[:, 0]), dense @ V[:, 0], rtol=1e-10, atol=1e-14)
    trace = float(dense.trace())
    assert float(exact_trace(op)) == pytest.approx(trace, rel=1e-10)
    estimate = hutchinson_trace(op, 200, generator=torch.Generator().manual_seed(5))
    assert within(estimate, trace) and estimate.stderr > 0
    sketched = hutchpp_trace(op, 60, generator=torch.Generator().manual_seed(6))
    assert abs(sketched.value - trace) <= 5 * sketched.stderr + 1e-10 * trace
    top = lanczos_eigenvalues(op, 2, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(top.eigenvalues, eigenvalues.flip(0)[:2], rtol=1e-8, atol=1e-12)


def test_groups_vectorization_and_the_measure_table() -> None:
    net, loss, x, y = _problem("cross_entropy")
    G = GeneralizedGaussNewtonOperator(net, loss, _batches(x, y), mode="eval")
    dense = G.dense()
    first = G.select("0.*")
    assert first.names == ("0.weight", "0.bias") and first.size == 25
    torch.testing.assert_close(first.dense(), dense[:25, :25], rtol=1e-12, atol=1e-15)
    assert list(G.groups("module")) == ["0", "2"]
    assert first.unflatten(first.point)["0.bias"].shape == (5,)
    G.vectorize = False
    torch.testing.assert_close(G.dense(), dense, rtol=1e-12, atol=1e-15)
    table = measure(
        G,
        ["exact_trace", "hutchinson_trace", "lanczos_top_eigenvalue", "exact_scaled_trace"],
        groups="module",
        generator=torch.Generator().manual_seed(0),
    )
    assert {r.curvature for r in table} == {"ggn"} and not table.failures
    assert table.get("exact_trace", "0").value == pytest.approx(float(dense[:25, :25].trace()))
    assert table.get("hutchinson_trace").stderr > 0


def test_train_mode_batchnorm_ggn_uses_batch_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (10,), generator=g)
    with torch.no_grad():
        net[1].running_mean.copy_(torch.randn(4, generator=g, dtype=torch.float64))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    train = GeneralizedGaussNewtonOperator(net, F.cross_entropy, batches, mode="train")
    evaluated = GeneralizedGaussNewtonOperator(net, F.cross_entropy, batches, mode="eval")
    reference = copy.deepcopy(net).train()  # batch statistics, running statistics untouched
    reference[1].track_running_stats = False
    reference[1].running_mean = reference[1].running_var = None
    flat = Flat(reference)
    expected = torch.zeros(flat.theta.numel(), flat.theta.numel(), dtype=torch.float64)
    for xb in (x[:4], x[4:]):  # G = (1/N) sum_b J_b^T blockdiag(H_n) J_b with the batch Jacobian J_b
        J = torch.func.jacrev(flat.outputs)(flat.theta, xb)
        H = _output_hessians("cross_entropy", flat.outputs(flat.theta, xb).detach())
        expected += torch.einsum("nkp,nkl,nlq->pq", J, H, J)
    torch.testing.assert_close(train.dense(), expected / 10, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(train.dense(), evaluated.dense())
    assert net.training  # the operators never touched the caller's model
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])


def test_streams_a_dataloader_and_rejects_data_that_changes() -> None:
    net, loss, x, y = _problem("cross_entropy")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    reference = GeneralizedGaussNewtonOperator(net, loss, _batches(x, y), mode="eval").dense()
    torch.testing.assert_close(
        GeneralizedGaussNewtonOperator(net, loss, loader, mode="eval").dense(), reference
    )
    shuffled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5, shuffle=True)
    with pytest.raises(ConfigurationError, match="shuffle=True"):
        GeneralizedGaussNewtonOperator(net, loss, shuffled, mode="eval")
    with pytest.raises(InputTypeError, match="batches must be re-iterable"):
        GeneralizedGaussNewtonOperator(net, loss, iter(_batches(x, y)), mode="eval")

    class Reshuffled:
        def __init__(self) -> None:
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            order = torch.arange(12) if self.passes == 1 else torch.arange(12).flip(0)
            return iter(_batches(x[order], y[order]))

    changing = GeneralizedGaussNewtonOperator(net, loss, Reshuffled(), mode="eval")
    with pytest.raises(InputDataError, match=r"batches\[0\] differs from the first pass"):
        changing.matvec(torch.ones(changing.size, dtype=torch.float64))


def test_factory_and_errors() -> None:
    net, loss, x, y = _problem("cross_entropy")
    batches = _batches(x, y)
    assert CURVATURES == ("hessian", "ggn", "fisher", "empirical_fisher")
    H = curvature_operator(net, loss, batches, mode="eval")
    torch.testing.assert_close(H.dense(), HessianOperator.from_model(net, loss, batches, mode="eval").dense())
    with pytest.raises(ConfigurationError, match="curvature must be one of 'hessian', 'ggn', 'fisher', "):
        curvature_operator(net, loss, batches, curvature="gauss_newton")
    with pytest.raises(ConfigurationError, match="num_samples applies to curvature='fisher' only"):
        curvature_operator(net, loss, batches, curvature="ggn", num_samples=3)
    with pytest.raises(ConfigurationError, match="ad_mode applies to curvature='hessian' only"):
        curvature_operator(net, loss, batches, curvature="empirical_fisher", ad_mode="forward")
    with pytest.raises(InputTypeError, match="generator must be a torch.Generator"):
        curvature_operator(net, loss, batches, curvature="fisher", mode="eval")
    with pytest.raises(InputDataError, match="num_samples must be >= 1"):
        FisherOperator(net, loss, batches, generator=torch.Generator(), num_samples=0)
    for bad in (nn.L1Loss(), nn.CrossEntropyLoss(label_smoothing=0.1), nn.MSELoss(reduction="sum")):
        with pytest.raises(ConfigurationError, match="curvature='ggn' needs loss_fn to be"):
            GeneralizedGaussNewtonOperator(net, bad, batches, mode="eval")
    with pytest.raises(InputTypeError, match="model must be a torch.nn.Module"):
        GeneralizedGaussNewtonOperator("net", loss, batches)  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match="integer class targets"):
        GeneralizedGaussNewtonOperator(net, loss, [(x, y.double())], mode="eval")
    with pytest.raises(InputDataError, match="integer class targets"):
        GeneralizedGaussNewtonOperator(net, loss, [(x, y + 3)], mode="eval")
    regression, xr, yr = _regression_case()
    with pytest.raises(InputDataError, match="mse curvature needs floating targets of the outputs' shape"):
        EmpiricalFisherOperator(regression, F.mse_loss, [(xr, yr[:, :1])], mode="eval")
    dropout = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).double()
    with pytest.raises(ConfigurationError, match="cannot fix the masks of the dropout layers"):
        GeneralizedGaussNewtonOperator(dropout, loss, batches, mode="train")
    frozen = nn.Linear(4, 3).double().requires_grad_(False)
    with pytest.raises(InputDataError, match="no parameter of the model requires grad"):
        GeneralizedGaussNewtonOperator(frozen, loss, batches, mode="eval")


@pytest.mark.reference
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_reference_curvlinops() -> None:
    """Agreement with curvlinops' GGN (both losses) and empirical Fisher (cross-entropy), if installed."""
    curvlinops = pytest.importorskip("curvlinops")
    cases = [
        ("cross_entropy", GeneralizedGaussNewtonOperator, curvlinops.GGNLinearOperator),
        ("mse", GeneralizedGaussNewtonOperator, curvlinops.GGNLinearOperator),
        ("cross_entropy", EmpiricalFisherOperator, curvlinops.EFLinearOperator),
    ]
    for kind, ours, theirs in cases:
        net, _, x, y = _problem(kind)
        module_loss = nn.CrossEntropyLoss() if kind == "cross_entropy" else nn.MSELoss()
        reference = theirs(net.eval(), module_loss, list(net.parameters()), _batches(x, y))
        eye = torch.eye(reference.shape[1], dtype=torch.float64)
        # curvlinops >= 2.0 multiplies torch tensors; older versions are SciPy operators
        product = reference @ eye if hasattr(reference, "to_scipy") else reference @ eye.numpy()
        expected = torch.as_tensor(product, dtype=torch.float64)
        torch.testing.assert_close(ours(net, module_loss, _batches(x, y), mode="eval").dense(), expected)
