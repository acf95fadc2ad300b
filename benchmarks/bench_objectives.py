"""Closed-form Hessian trace vs 100-probe Hutchinson through autograd HVPs (issue 2 acceptance).

Dense Gaussian matrix sensing, d1 = d2 = 100, width k = 100, m = 2000, float64, CPU:

(a) one ``BilinearFactorization.hessian_trace`` after the one-time rescaling build (D1^2, D2^2 cached):
    O((d1^2 + d2^2) k) work, independent of m;
(b) Hutchinson with 100 Rademacher probes, each an exact HVP by forward-over-reverse ``torch.func``
    (``jvp`` of ``grad``) of the same objective's value: O(m d1 d2 k) per probe;
(b') the same 100 HVPs batched with ``torch.func.vmap`` (a stronger autograd baseline).

Target: (a) <= 1 ms and >= 1000x faster than (b). Run with

    .venv/bin/python -m pytest benchmarks/bench_objectives.py --benchmark-only
"""

from __future__ import annotations

import timeit
import warnings

import pytest
import torch
from torch.func import grad, jvp, vmap

from flatminima.objectives import BilinearFactorization
from flatminima.problems import MatrixSensing

D, WIDTH, M, RANK, PROBES = 100, 100, 2000, 5, 100


@pytest.fixture(scope="module")
def setting() -> tuple[BilinearFactorization, tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(0)
    instance = MatrixSensing(shape=(D, D), rank=RANK, num_measurements=M).sample(generator=generator)
    objective = BilinearFactorization(instance, width=WIDTH)
    params = objective.random_params(generator=generator, scale=0.1)
    objective.hessian_trace(params)  # the one-time rescaling build
    with warnings.catch_warnings():  # load torch's forward-AD decompositions outside the timings
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        jvp(lambda x: x.sin(), (torch.ones(2, dtype=torch.float64),), (torch.ones(2, dtype=torch.float64),))
    return objective, params


def _rademacher(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, dtype=torch.float64).mul_(2).sub_(1)


def hutchinson_trace(
    objective: BilinearFactorization,
    params: tuple[torch.Tensor, ...],
    *,
    generator: torch.Generator,
    num_probes: int = PROBES,
    batched: bool = False,
) -> tuple[float, float]:
    """Return (estimate, standard error) of tr grad^2 f from Rademacher probes and autograd HVPs."""
    f = objective.value_function()
    gradient = grad(f)

    def hvp(direction: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(jvp(gradient, (params,), (direction,))[1])

    probes = tuple(_rademacher(generator, num_probes, *p.shape) for p in params)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch's jvp decompositions
        if batched:
            products = vmap(hvp)(probes)
            samples = sum((v * h).sum(dim=(1, 2)) for v, h in zip(probes, products, strict=True))
        else:
            samples = torch.stack(
                [
                    sum(
                        (v[i] * h).sum()
                        for v, h in zip(probes, hvp(tuple(v[i] for v in probes)), strict=True)
                    )
                    for i in range(num_probes)
                ]
            )
    samples = torch.as_tensor(samples)
    return float(samples.mean()), float(samples.std() / num_probes**0.5)


def test_closed_form_hessian_trace(benchmark, setting) -> None:  # type: ignore[no-untyped-def]
    objective, params = setting
    trace = benchmark(objective.hessian_trace, params)
    D1_sq, D2_sq = objective.instance.operator.rescaling_squares()
    L, R = params
    expected = 2 * D * (((D1_sq @ L) * L).sum() + ((D2_sq @ R) * R).sum())
    assert torch.isclose(trace, expected, rtol=1e-12)
    assert benchmark.stats.stats.median <= 1e-3, "closed-form trace slower than 1 ms"


@pytest.mark.parametrize("batched", [False, True], ids=["loop", "vmap"])
def test_hutchinson_autograd_hvps(benchmark, setting, batched: bool) -> None:  # type: ignore[no-untyped-def]
    objective, params = setting
    generator = torch.Generator().manual_seed(1)
    estimate, stderr = benchmark.pedantic(
        hutchinson_trace,
        args=(objective, params),
        kwargs={"generator": generator, "batched": batched},
        rounds=2 if not batched else 3,
        iterations=1,
    )
    exact = float(objective.hessian_trace(params))
    assert abs(estimate - exact) < 5 * stderr
    closed = min(timeit.repeat(lambda: objective.hessian_trace(params), number=200, repeat=5)) / 200
    ratio = benchmark.stats.stats.median / closed
    benchmark.extra_info.update(
        closed_form_seconds=closed, hutchinson_seconds=benchmark.stats.stats.median, ratio=ratio
    )
    print(
        f"\n[{'vmap' if batched else 'loop'}] closed form {closed * 1e6:.1f} us, Hutchinson "
        f"{benchmark.stats.stats.median * 1e3:.1f} ms, ratio {ratio:.0f}x "
        f"(estimate {estimate:.1f} +- {stderr:.1f}, exact {exact:.1f})"
    )
    if not batched:
        assert ratio >= 1000, f"closed form only {ratio:.0f}x faster than Hutchinson"
