"""flatminima.curvature against PyHessian 0.1: per-probe Hutchinson time, eigenvalue and trace costs.

Cases (issue 4): dense Gaussian matrix sensing with d1 = d2 = d in {20, 50, 100}, width k = d,
m = 20 d, f(L, R) = (1/m)||A(L R^T) - b||^2 in float64; and a 64-32-10 tanh MLP with cross-entropy on
scikit-learn's bundled digits data (1797 x 64), briefly trained, in float32. Both libraries see the
same model, the same full-batch loss and the same number of Rademacher probes (100).

* PyHessian: ``hessian(model, criterion, data=(inputs, targets), cuda=False).trace(maxIter=100,
  tol=-inf)`` (tol=-inf so that it runs all 100 probes instead of stopping after 2). It builds the
  gradient graph once and applies one double-backward HVP per probe. The sensing model is an
  ``nn.Module`` whose forward is the flattened matmul A_flat @ vec(L R^T), the fastest way to write it.
  When ``pyhessian`` is not importable, ``_PyHessian01`` below re-implements its trace loop verbatim
  (graph reuse, one ``torch.autograd.grad`` per probe); the report says which one ran.
* flatminima: ``hutchinson_trace(H, 100)`` (its default block of B = 32 probes) with H from
  ``HessianOperator.from_objective(BilinearFactorization(...), params)`` (Hutchinson needs only
  z^T H z, which the objective gives in closed form, (2/m)||A(dL R^T + L dR^T)||^2 + (4/m)<A^*(res),
  dL dR^T>: one matmul with the (m, d1 d2) matrix for B probes at once, where a Hessian-vector product
  needs two) or ``HessianOperator.from_model(net, cross_entropy, [(X, y)], mode="eval")`` (second-order
  Taylor mode, :mod:`flatminima.curvature.taylor`: z^T H z for B probes in one forward pass; models it
  does not cover get reverse-over-reverse HVPs vmapped over B probes).

Also reported: Lanczos products for the top eigenvalue to 1e-8 relative against PyHessian-style power
iteration products to reach 1e-2, and Hutchinson against Hutch++ products to 1 % relative standard
error. After j products power iteration's Rayleigh quotient lies in the Krylov space K_j of its start,
where the Lanczos Ritz value is the best one; so on a spectrum where even the best Ritz value of K_j
needs more products for 1e-8 than power iteration needs for 1e-2 (sensing d = 20: lambda2 / lambda1 =
0.937, the MLP: power iteration reaches 1e-2 in 6-9 products), no Krylov method from a random start
meets that ratio. The spectrum report adds a float64 copy of the MLP ("digits MLP f64"), since 1e-8 is
below float32 round-off.

Run the report (timings are the fastest of alternating rounds, in ms per probe; by default one thread
and process CPU time, which stays meaningful when other jobs share the cores; ``--threads 2 --clock
wall`` for wall-clock time on both cores):

    .venv/bin/python benchmarks/bench_curvature.py [--threads 2 --clock wall] [--skip-spectrum]

or the pytest-benchmark timings:

    .venv/bin/python -m pytest benchmarks/bench_curvature.py --benchmark-only

PyHessian is not a dependency: ``pip install --no-deps pyhessian==0.1`` in the benchmark environment.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from flatminima.curvature import (
    HessianOperator,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_eigenvalues,
)
from flatminima.curvature.lanczos import Tridiagonal, lanczos_tridiagonal
from flatminima.objectives import BilinearFactorization
from flatminima.problems import MatrixSensing

PROBES = 100
#: probes per vectorized block: hutchinson_trace's default (32), i.e. what a user gets out of the box.
#: Measured on the digits MLP (ms per probe): 0.48 at 25, 0.59 at 50, 0.77 at 100 (the tangents of a
#: block stop fitting in cache); the sensing cases prefer 100 (one large matrix product per block).
BATCH = int(inspect.signature(hutchinson_trace).parameters["batch_size"].default)
SENSING_DIMS = (20, 50, 100)

try:  # the real PyHessian 0.1 when installed (benchmark environment only)
    from pyhessian import hessian as _pyhessian_class

    BASELINE = "PyHessian 0.1 (pip package)"
except ImportError:  # pragma: no cover - depends on the environment
    _pyhessian_class = None
    BASELINE = "PyHessian 0.1 trace loop, re-implemented verbatim (package not installed)"


class _PyHessian01:
    """PyHessian 0.1's single-batch ``hessian.trace``, re-implemented line for line."""

    def __init__(self, model: nn.Module, criterion: Callable[..., torch.Tensor], data: tuple) -> None:
        self.model = model.eval()
        inputs, targets = data
        loss = criterion(self.model(inputs), targets)
        loss.backward(create_graph=True)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.gradsH = [0.0 if p.grad is None else p.grad + 0.0 for p in self.params]

    def trace(self, maxIter: int = 100, tol: float = 1e-3) -> list[float]:
        trace_vhv: list[float] = []
        trace = 0.0
        for _ in range(maxIter):
            self.model.zero_grad()
            v = [torch.randint_like(p, high=2) for p in self.params]
            for v_i in v:
                v_i[v_i == 0] = -1
            Hv = torch.autograd.grad(
                self.gradsH, self.params, grad_outputs=v, only_inputs=True, retain_graph=True
            )
            trace_vhv.append(sum(float((x * y).sum()) for x, y in zip(Hv, v, strict=True)))
            if abs(sum(trace_vhv) / len(trace_vhv) - trace) / (trace + 1e-6) < tol:
                return trace_vhv
            trace = sum(trace_vhv) / len(trace_vhv)
        return trace_vhv


def pyhessian(model: nn.Module, criterion: Callable[..., torch.Tensor], data: tuple) -> Any:
    """A PyHessian object (the package's class if installed, else the verbatim re-implementation)."""
    with warnings.catch_warnings():  # backward(create_graph=True) warns about a reference cycle
        warnings.simplefilter("ignore")
        if _pyhessian_class is not None:
            return _pyhessian_class(model, criterion, data=data, cuda=False)
        return _PyHessian01(model, criterion, data)


# ---- cases ----------------------------------------------------------------------------------------
class _Sensing(nn.Module):
    def __init__(self, L: torch.Tensor, R: torch.Tensor) -> None:
        super().__init__()
        self.L = nn.Parameter(L.clone())
        self.R = nn.Parameter(R.clone())

    def forward(self, A_flat: torch.Tensor) -> torch.Tensor:
        return A_flat @ (self.L @ self.R.T).reshape(-1)


def _mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs - targets).square().mean()  # (1/m) ||A(L R^T) - b||^2


def sensing_case(d: int) -> dict[str, Any]:
    """Matrix sensing d x d, rank 2, width k = d, m = 20 d; the objective and the same nn.Module."""
    g = torch.Generator().manual_seed(d)
    instance = MatrixSensing(shape=(d, d), rank=2, num_measurements=20 * d).sample(generator=g)
    objective = BilinearFactorization(instance, width=d)
    params = objective.random_params(generator=g, scale=1 / math.sqrt(d))
    A_flat = instance.operator.matrices.reshape(20 * d, d * d)
    module = _Sensing(*params)
    return {
        "name": f"sensing d={d}",
        "operator": lambda: HessianOperator.from_objective(objective, params),
        "pyhessian": lambda: pyhessian(module, _mse, (A_flat, instance.observations)),
        "exact_trace": float(objective.hessian_trace(params)),
    }


def digits_case(dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """A 64-32-10 tanh MLP on sklearn's digits, 200 full-batch Adam steps from seed 0 (float32 by default).

    A float64 copy of the trained float32 network serves the spectrum costs: a top eigenvalue to 1e-8
    relative is below float32 round-off (the Hessian-vector products themselves carry ~1e-7).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        optimizer.step()
    net.zero_grad(set_to_none=True)
    net, X = net.to(dtype), X.to(dtype)
    return {
        "name": "digits MLP" if dtype == torch.float32 else "digits MLP f64",
        "operator": lambda: HessianOperator.from_model(
            net, nn.functional.cross_entropy, [(X, y)], mode="eval"
        ),
        "pyhessian": lambda: pyhessian(net, nn.functional.cross_entropy, (X, y)),
        "exact_trace": None,
    }


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    **{f"sensing{d}": (lambda d=d: sensing_case(d)) for d in SENSING_DIMS},
    "digits": digits_case,
}
#: the spectrum report also runs the float64 copy of the MLP (see :func:`digits_case`)
SPECTRUM_CASES: dict[str, Callable[[], dict[str, Any]]] = {
    **CASES,
    "digits64": lambda: digits_case(torch.float64),
}


# ---- measurements ---------------------------------------------------------------------------------
#: the clock of the report: process CPU time by default (robust on a shared machine when one thread is
#: used), or wall time (``--clock wall``).
CLOCK: Callable[[], float] = time.process_time


def _warm_up() -> None:
    with warnings.catch_warnings():  # torch loads its forward-AD decompositions on first use
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        x = torch.ones(2, dtype=torch.float64)
        torch.func.jvp(torch.sin, (x,), (x,))


def per_probe_times(
    case: dict[str, Any], *, rounds: int = 15, batch_sizes: tuple[int, ...] = (BATCH, 100)
) -> tuple[float, list[float]]:
    """Seconds per probe of PyHessian's trace (tol=-inf) and of hutchinson_trace at each block size.

    All run ``PROBES`` probes; they are timed in alternation, ``rounds`` times, and each keeps its
    fastest round, so a drifting background load on a shared machine cannot favour either side.
    """
    _warm_up()
    H = case["operator"]()
    generator = torch.Generator().manual_seed(0)
    ph = case["pyhessian"]()
    torch.manual_seed(0)  # PyHessian draws its probes from the global RNG
    ph.trace(maxIter=5, tol=-math.inf)
    hutchinson_trace(H, 10, generator=generator, batch_size=10)
    theirs, ours = math.inf, [math.inf] * len(batch_sizes)
    for _ in range(rounds):
        start = CLOCK()
        values = ph.trace(maxIter=PROBES, tol=-math.inf)
        theirs = min(theirs, (CLOCK() - start) / len(values))
        for index, batch_size in enumerate(batch_sizes):
            start = CLOCK()
            hutchinson_trace(H, PROBES, generator=generator, batch_size=batch_size)
            ours[index] = min(ours[index], (CLOCK() - start) / PROBES)
    return theirs, ours


def power_iteration_matvecs(
    H: HessianOperator, top: float, seed: int, limit: int = 500
) -> tuple[int, int, float]:
    """PyHessian's power iteration (``hessian.eigenvalues``) with a counter.

    Returns (products to reach 1e-2 relative error, products at PyHessian's own stop with its
    default tol=1e-3 on the relative change, relative error at that stop).
    """
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(H.size, generator=g, dtype=torch.float64).to(H.dtype)
    v = v / v.norm()
    reached, previous = limit, None
    for count in range(1, limit + 1):
        Hv = H.matvec(v)
        value = float(v @ Hv)
        if reached == limit and abs(value - top) <= 1e-2 * abs(top):
            reached = count
        if previous is not None and abs(previous - value) / (abs(previous) + 1e-6) < 1e-3:
            return reached, count, abs(value - top) / abs(top)
        previous = value
        v = Hv / Hv.norm()
    return reached, limit, abs(value - top) / abs(top)


def krylov_oracle_matvecs(H: HessianOperator, top: float, seed: int, limit: int = 500) -> float:
    """Products until the best Ritz value of the Krylov space is within 1e-8 of ``top`` (an oracle stop).

    A lower bound for any Krylov method from this start, Lanczos with its a-posteriori stop included;
    inf when round-off (float32) keeps every Ritz value of the first ``limit`` steps farther than 1e-8.
    """

    def reached(state: Tridiagonal) -> bool:
        ritz = float(torch.linalg.eigvalsh(state.matrix())[-1])
        return abs(ritz - top) <= 1e-8 * abs(top)

    start = torch.randn(H.size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    state = lanczos_tridiagonal(H, start.to(H.dtype), limit, stop=reached)
    return float(state.num_matvecs) if reached(state) else math.inf


def spectrum_costs(case: dict[str, Any], seeds: int = 3) -> dict[str, float]:
    """Mean products: Lanczos (1e-8) vs power iteration (1e-2); Hutchinson vs Hutch++ (1 %)."""
    H = case["operator"]()
    reference = lanczos_eigenvalues(H, 1, generator=torch.Generator().manual_seed(99), tol=1e-12)
    top = float(reference.eigenvalues[0])
    lanczos = [
        lanczos_eigenvalues(H, 1, generator=torch.Generator().manual_seed(s), tol=1e-8) for s in range(seeds)
    ]
    errors = [abs(float(r.eigenvalues[0]) - top) / abs(top) for r in lanczos]
    power = [power_iteration_matvecs(H, top, s) for s in range(seeds)]
    oracle = [krylov_oracle_matvecs(H, top, s) for s in range(seeds)]
    plain = hutchinson_trace(H, 20000, generator=torch.Generator().manual_seed(0), rtol=0.01, batch_size=50)
    plus = {
        k: hutchpp_trace(
            H, 20000, generator=torch.Generator().manual_seed(0), rtol=0.01, sketch_size=k
        ).num_matvecs
        for k in (10, 50)
    }
    return {
        "lanczos_matvecs": sum(r.num_matvecs for r in lanczos) / seeds,
        "lanczos_max_rel_error": max(errors),
        "krylov_oracle": sum(oracle) / seeds,
        "power_to_1e-2": sum(p[0] for p in power) / seeds,
        "power_at_stop": sum(p[1] for p in power) / seeds,
        "power_error_at_stop": max(p[2] for p in power),
        "hutchinson_matvecs": plain.num_matvecs,
        "hutchpp10_matvecs": plus[10],
        "hutchpp50_matvecs": plus[50],
    }


# ---- pytest-benchmark entries ---------------------------------------------------------------------
@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "digits":
        pytest.importorskip("sklearn")
    return CASES[request.param]()


def test_pyhessian_trace(benchmark: Any, case: dict[str, Any]) -> None:
    ph = case["pyhessian"]()
    torch.manual_seed(0)
    benchmark.pedantic(lambda: ph.trace(maxIter=PROBES, tol=-math.inf), rounds=3, warmup_rounds=1)


def test_flatminima_hutchinson_trace(benchmark: Any, case: dict[str, Any]) -> None:
    _warm_up()
    H = case["operator"]()
    generator = torch.Generator().manual_seed(0)
    result = benchmark.pedantic(
        lambda: hutchinson_trace(H, PROBES, generator=generator, batch_size=BATCH), rounds=3, warmup_rounds=1
    )
    if case["exact_trace"] is not None:
        assert abs(result.value - case["exact_trace"]) <= 5 * result.stderr


# ---- report ---------------------------------------------------------------------------------------
def main() -> None:
    """Print per-probe times, speed-ups and spectrum costs for every case."""
    import argparse

    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="cpu: process time; wall")
    parser.add_argument("--skip-spectrum", action="store_true", help="only the per-probe timings")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    CLOCK = time.process_time if arguments.clock == "cpu" else time.perf_counter
    print(
        f"baseline: {BASELINE}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {arguments.clock} clock"
    )
    print(
        f"Hutchinson, {PROBES} Rademacher probes; ms per probe (fastest of 15 alternating rounds); "
        f"flatminima with blocks of {BATCH} probes (the default) and of 100"
    )
    print(
        f"{'case':<16}{'n':>8}{'PyHessian':>11}{f'B={BATCH}':>10}{'speed-up':>10}"
        f"{'B=100':>10}{'speed-up':>10}"
    )
    for build in CASES.values():
        case = build()
        n = case["operator"]().size
        theirs, (default, large) = per_probe_times(case)
        print(
            f"{case['name']:<16}{n:>8}{1e3 * theirs:>11.3f}{1e3 * default:>10.3f}{theirs / default:>9.1f}x"
            f"{1e3 * large:>10.3f}{theirs / large:>9.1f}x",
            flush=True,
        )
    if arguments.skip_spectrum:
        return
    print(
        "\nHessian-vector products, mean over 3 start seeds: Lanczos for the top eigenvalue to 1e-8 relative"
        " (oracle: the first Krylov space whose best Ritz value is within 1e-8);"
    )
    print("PyHessian power iteration to reach 1e-2 (oracle count) and at its own stop (tol 1e-3; its error);")
    print("Hutchinson and Hutch++ (sketch 10 / 50) to 1 % relative standard error")
    for build in SPECTRUM_CASES.values():
        case = build()
        c = spectrum_costs(case)
        print(
            f"{case['name']:<16} Lanczos {c['lanczos_matvecs']:5.1f} "
            f"(error {c['lanczos_max_rel_error']:.0e}; oracle {c['krylov_oracle']:5.1f}) | "
            f"power {c['power_to_1e-2']:5.1f} to 1e-2, {c['power_at_stop']:5.1f} at stop "
            f"(error {c['power_error_at_stop']:.0e}) | Hutchinson {c['hutchinson_matvecs']:5d} | "
            f"Hutch++ {c['hutchpp10_matvecs']:5d} / {c['hutchpp50_matvecs']:5d}",
            flush=True,
        )


if __name__ == "__main__":
    main()
