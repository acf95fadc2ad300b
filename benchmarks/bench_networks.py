"""Hutchinson's cost per probe on real networks, in gradients: flatminima, PyHessian 0.1, curvlinops.

For each model (float32 and float64) the report gives the cost of one probe of Hutchinson's trace
estimator, divided by the cost of one gradient of the same loss on the same batch:

* gradient: ``torch.autograd.grad(loss_fn(model(X), y), params)`` (forward and backward, the model
  in eval mode, torch's default kernels: what one training step's gradient costs);
* flatminima: ``hutchinson_trace(H, 32)`` with its default block of 32 probes, H from
  ``HessianOperator.from_model(model, loss_fn, [(X, y)], mode="eval")`` built once beforehand; per
  probe = one call's time / 32, so it includes the gradient graph each block builds, the probes'
  draws and the quadratic forms: what a user pays per probe. The column "path" says how the block ran:
  ``taylor`` (second-order Taylor mode, plain MLPs), ``vmap/k`` (Hessian-vector products on one
  gradient graph, vmapped k probes at a time) or ``loop`` (one double backward per probe on one
  plain-autograd gradient graph, chosen on CPU when the saved activations are large, as in CNNs; see
  ``flatminima.curvature._autograd_products``);
* PyHessian 0.1: ``hessian(model, criterion, data=(X, y), cuda=False).trace(maxIter=32, tol=-inf)``
  (its single-batch path: ``backward(create_graph=True)`` once when built, then one
  ``torch.autograd.grad`` per probe; the build is *not* counted, which favours PyHessian). When
  ``pyhessian`` is not importable, bench_curvature's verbatim re-implementation of that loop runs; the
  header says which. PyHessian fails on the transformer: CPU attention runs a fused kernel without a
  double backward (flatminima switches attention to its MATH backend while it measures);
* curvlinops (if importable): ``HessianLinearOperator(model, loss, params, [(X, y)]) @ Z`` for a block
  Z of 32 probes, plus the quadratic forms, per probe; "not installed" otherwise.

The column "check" is the largest relative difference between flatminima's H v and a plain double
backward (PyHessian's product) over one probe, so the timed products are the same Hessian. Timings:
the fastest of ``--rounds`` alternating rounds (every method once per round), one thread and process
CPU time by default, so that other jobs sharing the cores distort little.

Models (own definitions; the extras test generality: the residual CNN was among the measurements behind
the CPU threshold of HessianOperator's loop-or-vmap rule, the GRU was added after the rule was fixed):

* MLP 64-128-128-10 (ReLU), cross-entropy, 256 examples;
* CNN: conv 1->8, BatchNorm, ReLU, max-pool, conv 8->24, BatchNorm, ReLU, max-pool, linear; 16x16
  inputs, cross-entropy, 256 examples (5.7k parameters; BatchNorm in eval mode);
* transformer: linear embedding 16->32, one ``nn.TransformerEncoderLayer`` (d_model 32, 4 heads,
  feed-forward 64, no dropout), linear token-classification head (5 classes), 64 sequences of 16
  tokens, cross-entropy over every token;
* extra: a tanh MLP 20-64-64-3 with cross-entropy on 512 examples;
* extra: a residual CNN (conv 3->16, a residual block of two 3x3 convs with GroupNorm and SiLU,
  average pooling, linear 16->3), mean squared error regression on 128 RGB 12x12 inputs;
* extra: a GRU (8 features, 32 hidden units) over 128 sequences of 20 steps, linear head on the last
  state, cross-entropy (4 classes).

Run (about 10 minutes on one busy core):

    .venv/bin/python benchmarks/bench_networks.py [--rounds 5] [--probes 32] [--unchunked]

``--unchunked`` adds flatminima with the whole block vmapped at once (the behaviour before the
chunking), to show what the chunking changed. Or the pytest-benchmark timings:

    .venv/bin/python -m pytest benchmarks/bench_networks.py --benchmark-only
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from flatminima.curvature import HessianOperator, hutchinson_trace
from flatminima.curvature._autograd_products import WHOLE_BLOCK

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_curvature import BASELINE, _warm_up, pyhessian

#: hutchinson_trace's default block of probes: what a user gets out of the box.
BATCH = int(inspect.signature(hutchinson_trace).parameters["batch_size"].default)
CLOCK: Callable[[], float] = time.process_time

try:  # curvlinops is not a dependency of flatminima
    import curvlinops
except ImportError:  # pragma: no cover - depends on the environment
    curvlinops = None


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# ---- models -----------------------------------------------------------------------------------------
class TokenClassifier(nn.Module):
    """A linear embedding, one transformer encoder layer and a per-token linear head."""

    def __init__(self, features: int = 16, d_model: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Linear(features, d_model)
        self.encoder = nn.TransformerEncoderLayer(
            d_model, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x))).transpose(1, 2)  # (N, classes, tokens)


class ResidualCNN(nn.Module):
    """conv 3->16, a residual block (two convs with GroupNorm and SiLU), average pooling, linear 16->3."""

    def __init__(self, width: int = 16, outputs: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm1 = nn.GroupNorm(4, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.norm2 = nn.GroupNorm(4, width)
        self.head = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.silu(self.stem(x))
        r = nn.functional.silu(self.norm1(self.conv1(h)))
        h = nn.functional.silu(h + self.norm2(self.conv2(r)))
        return self.head(h.mean(dim=(2, 3)))


class SequenceClassifier(nn.Module):
    """A one-layer GRU over the sequence and a linear head on its last hidden state."""

    def __init__(self, features: int = 8, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x)[0][:, -1])


def _init_bn(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Non-trivial BatchNorm running statistics and affine parameters (as after training)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
                module.weight.copy_(1 + 0.1 * torch.randn(module.num_features, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.num_features, generator=generator))
    return model


def mlp() -> tuple[nn.Module, Callable[..., torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    X = torch.randn(256, 64, generator=g)
    return net, nn.functional.cross_entropy, X, torch.randint(0, 10, (256,), generator=g)


def cnn() -> tuple[nn.Module, Callable[..., torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 24, 3, padding=1),
        nn.BatchNorm2d(24),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(24 * 4 * 4, 10),
    )
    X = torch.randn(256, 1, 16, 16, generator=g)
    return _init_bn(net, g), nn.functional.cross_entropy, X, torch.randint(0, 10, (256,), generator=g)


def transformer() -> tuple[nn.Module, Callable[..., torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    X = torch.randn(64, 16, 16, generator=g)
    return TokenClassifier(), nn.functional.cross_entropy, X, torch.randint(0, 5, (64, 16), generator=g)


def tanh_mlp() -> tuple[nn.Module, Callable[..., torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3))
    X = torch.randn(512, 20, generator=g)
    return net, nn.functional.cross_entropy, X, torch.randint(0, 3, (512,), generator=g)


def residual_cnn() -> tuple[nn.Module, Callable[..., torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    X = torch.randn(128, 3, 12, 12, generator=g)
    return ResidualCNN(), nn.functional.mse_loss, X, torch.randn(128, 3, generator=g)


def gru() -> tuple[nn.Module, Callable[..., torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    X = torch.randn(128, 20, 8, generator=g)
    return SequenceClassifier(), nn.functional.cross_entropy, X, torch.randint(0, 4, (128,), generator=g)


MODELS: dict[str, Callable[[], tuple[nn.Module, Callable[..., torch.Tensor], torch.Tensor, torch.Tensor]]] = {
    "MLP 64-128-128-10": mlp,
    "CNN 2conv+BN": cnn,
    "transformer layer": transformer,
    "extra: tanh MLP": tanh_mlp,
    "extra: residual CNN": residual_cnn,
    "extra: GRU": gru,
}


def case(name: str, dtype: torch.dtype) -> dict[str, Any]:
    """The model (eval mode) and batch in ``dtype``, with its loss function."""
    net, loss_fn, X, y = MODELS[name]()
    net = net.to(dtype).eval()
    X = X.to(dtype)
    y = y.to(dtype) if y.is_floating_point() else y
    return {"name": name, "model": net, "loss_fn": loss_fn, "X": X, "y": y, "dtype": dtype}


# ---- the methods --------------------------------------------------------------------------------------
def gradient(c: dict[str, Any]) -> Callable[[], Any]:
    params = [p for p in c["model"].parameters() if p.requires_grad]
    return lambda: torch.autograd.grad(c["loss_fn"](c["model"](c["X"]), c["y"]), params)


def flatminima_operator(c: dict[str, Any]) -> HessianOperator:
    return HessianOperator.from_model(c["model"], c["loss_fn"], [(c["X"], c["y"])], mode="eval")


def flatminima_path(H: HessianOperator) -> str:
    """How hutchinson_trace's blocks ran (after one call): taylor, vmap/k or loop."""
    if H._closed_quadratic_forms is not None:
        return "taylor"
    chunk = H._probe_chunk
    return "loop" if chunk == 1 else f"vmap/{min(chunk or BATCH, BATCH)}"


def pyhessian_trace(c: dict[str, Any], probes: int) -> tuple[Callable[[], Any] | None, str]:
    """A PyHessian trace of ``probes`` probes, or None and the reason it fails on this model."""
    try:
        ph = pyhessian(c["model"], c["loss_fn"], (c["X"], c["y"]))
        torch.manual_seed(0)  # PyHessian draws its probes from the global RNG
        ph.trace(maxIter=2, tol=-math.inf)
    except (RuntimeError, NotImplementedError) as error:
        return None, str(error).strip().splitlines()[0]
    return (lambda: ph.trace(maxIter=probes, tol=-math.inf)), ""


def curvlinops_trace(c: dict[str, Any], probes: int) -> tuple[Callable[[], Any] | None, str]:
    """curvlinops' Hessian applied to a block of ``probes`` Rademacher probes plus the quadratic forms."""
    if curvlinops is None:
        return None, "not installed"
    loss_module = nn.CrossEntropyLoss() if c["loss_fn"] is nn.functional.cross_entropy else nn.MSELoss()
    params = [p for p in c["model"].parameters() if p.requires_grad]
    try:
        op = curvlinops.HessianLinearOperator(
            c["model"], loss_module, params, [(c["X"], c["y"])], check_deterministic=False
        )
        n = sum(p.numel() for p in params)
        g = torch.Generator().manual_seed(0)
        Z = (2 * torch.randint(0, 2, (n, probes), generator=g) - 1).to(c["dtype"])
        try:
            op @ Z
            block = Z
        except (TypeError, ValueError, AttributeError):  # the SciPy-based curvlinops 1.x takes NumPy
            block = Z.numpy()
            op @ block
    except Exception as error:  # report any failure in the table instead of stopping the benchmark
        return None, str(error).strip().splitlines()[0]

    def run() -> Any:
        HZ = op @ block
        return (torch.as_tensor(HZ) * torch.as_tensor(block)).sum(dim=0)

    return run, ""


def agreement(c: dict[str, Any], H: HessianOperator) -> float:
    """max relative difference of flatminima's H v from a plain double backward, over one probe."""
    params = [p for p in c["model"].parameters() if p.requires_grad]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from flatminima.curvature._arch import math_attention

        with math_attention():
            grads = torch.autograd.grad(c["loss_fn"](c["model"](c["X"]), c["y"]), params, create_graph=True)
    v = (2 * torch.randint(0, 2, (H.size,), generator=torch.Generator().manual_seed(5)) - 1).to(c["dtype"])
    pieces = v.split([p.numel() for p in params])
    reference = torch.autograd.grad(
        grads, params, [x.view_as(p) for x, p in zip(pieces, params, strict=True)]
    )
    expected = torch.cat([r.reshape(-1) for r in reference])
    return float((H.matvec(v) - expected).norm() / expected.norm())


def measure(c: dict[str, Any], *, probes: int, rounds: int, unchunked: bool) -> dict[str, Any]:
    """Per-probe seconds of every method and the gradient's seconds (fastest of alternating rounds)."""
    _warm_up()
    H = flatminima_operator(c)
    generator = torch.Generator().manual_seed(0)
    hutchinson_trace(H, probes, generator=generator, min_probes=2)
    methods: dict[str, tuple[Callable[[], Any], int]] = {
        "gradient": (gradient(c), 1),
        "flatminima": (lambda: hutchinson_trace(H, probes, generator=generator, min_probes=2), probes),
    }
    if unchunked and H._closed_quadratic_forms is None:
        whole = flatminima_operator(c)
        whole._probe_chunk = WHOLE_BLOCK  # the whole block in one vmapped call
        methods["unchunked"] = (
            lambda: hutchinson_trace(whole, probes, generator=generator, min_probes=2),
            probes,
        )
    notes = {}
    for key, build in (("pyhessian", pyhessian_trace), ("curvlinops", curvlinops_trace)):
        run, note = build(c, probes)
        notes[key] = note
        if run is not None:
            methods[key] = (run, probes)
    best = dict.fromkeys(methods, math.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyHessian's backward(create_graph=True) warns about a cycle
        for run, _ in methods.values():
            run()
        for _ in range(rounds):
            for key, (run, count) in methods.items():
                repeat = 5 if key == "gradient" else 1  # a gradient is short: time several
                start = CLOCK()
                for _ in range(repeat):
                    run()
                best[key] = min(best[key], (CLOCK() - start) / (repeat * count))
    return {
        "n": H.size,
        "path": flatminima_path(H),
        "check": agreement(c, H),
        "seconds": best,
        "notes": notes,
    }


# ---- pytest-benchmark entries ---------------------------------------------------------------------
@pytest.fixture(scope="module", params=list(MODELS))
def network(request: pytest.FixtureRequest) -> dict[str, Any]:
    return case(request.param, torch.float32)


def test_gradient(benchmark: Any, network: dict[str, Any]) -> None:
    benchmark.pedantic(gradient(network), rounds=5, warmup_rounds=1)


def test_flatminima_hutchinson_trace(benchmark: Any, network: dict[str, Any]) -> None:
    H = flatminima_operator(network)
    generator = torch.Generator().manual_seed(0)
    benchmark.pedantic(lambda: hutchinson_trace(H, BATCH, generator=generator), rounds=3, warmup_rounds=1)


def test_pyhessian_trace(benchmark: Any, network: dict[str, Any]) -> None:
    run, note = pyhessian_trace(network, BATCH)
    if run is None:
        pytest.skip(f"PyHessian fails on this model: {note}")
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


# ---- report ---------------------------------------------------------------------------------------
def main() -> None:
    """Print the per-probe cost of each method in gradients, per model and dtype."""
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--probes", type=int, default=BATCH, help=f"probes per trace call (default {BATCH})")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="cpu: process time; wall")
    parser.add_argument(
        "--unchunked", action="store_true", help="also flatminima with the block vmapped whole"
    )
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="a subset of the models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"PyHessian: {BASELINE}; curvlinops: "
        f"{'version ' + _version('curvlinops-for-pytorch') if curvlinops else 'not installed'}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.clock} clock"
    )
    print(
        f"per probe of Hutchinson ({args.probes} probes per call, block {BATCH}), in gradients of the same "
        f"loss on the same batch; fastest of {args.rounds} alternating rounds"
    )
    header = f"{'model':<22}{'dtype':>8}{'n':>7}{'grad ms':>9}{'flatminima':>12}{'path':>9}"
    if args.unchunked:
        header += f"{'unchunked':>11}"
    header += f"{'PyHessian':>11}{'curvlinops':>12}{'fm/PH':>7}{'check':>9}"
    print(header)
    failures: dict[str, str] = {}
    for name in args.models:
        for dtype in (torch.float32, torch.float64):
            c = case(name, dtype)
            r = measure(c, probes=args.probes, rounds=args.rounds, unchunked=args.unchunked)
            s, g = r["seconds"], r["seconds"]["gradient"]

            def ratio(key: str, s: dict[str, float] = s, g: float = g) -> str:
                return f"{s[key] / g:.2f}x" if key in s else "-"

            line = (
                f"{name:<22}{str(dtype).removeprefix('torch.'):>8}{r['n']:>7}{1e3 * g:>9.2f}"
                f"{ratio('flatminima'):>12}{r['path']:>9}"
            )
            if args.unchunked:
                line += f"{ratio('unchunked'):>11}"
            against = f"{s['flatminima'] / s['pyhessian']:.2f}" if "pyhessian" in s else "-"
            line += (
                f"{ratio('pyhessian') if 'pyhessian' in s else 'fails':>11}"
                f"{ratio('curvlinops') if 'curvlinops' in s else r['notes']['curvlinops'][:11]:>12}"
                f"{against:>7}{r['check']:>9.1e}"
            )
            print(line, flush=True)
            for key in ("pyhessian", "curvlinops"):
                if key not in s and r["notes"][key] != "not installed":
                    failures[f"{key} on {name}"] = r["notes"][key]
    for where, why in failures.items():
        print(f"{where} fails: {why}")


if __name__ == "__main__":
    main()
