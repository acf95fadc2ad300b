"""Curvature of a ~1M-parameter CNN over 10,000 streamed examples: wall time and peak memory.

The model: four 3x3 convolutions (3->32->64->128->384 channels), each followed by BatchNorm (eval
mode, running statistics estimated on the first batches), ReLU and 2x2 max-pooling, on 3x32x32
inputs, then global average pooling and a linear layer 384->1024, ReLU, 1024->10 (941,706 parameters);
cross-entropy. The data: 10,000 synthetic examples from a fixed ``torch.Generator`` (Gaussian images,
labels from a random linear teacher on 4x4-pooled images; nothing downloaded), streamed through a
``DataLoader`` in batches of 256: no step holds more than one batch's activations, so memory does not
grow with the dataset.

Measured, each over the whole dataset (``HessianOperator.from_model(..., mode="eval")``):

* one full-data gradient (the unit of cost);
* the trace to 1% relative standard error by ``ggn_control_trace(..., rtol=0.01)`` (the default
  ``--trace-method ggn_control``): tr H = tr G + tr R, the generalized Gauss-Newton trace exactly
  from per-example vector-Jacobian products (9 per example, one per column of a square-root factor of
  the softmax Hessian, whose rank is 10 - 1), plus Hutchinson on the diagonal blocks of the residual
  R = H - G, one module at a time. Every block of this network (convolutions, eval-mode BatchNorm,
  ReLU, max and average pooling, linear layers) enters the outputs piecewise linearly, so R_ll = 0:
  one screening product per block finds it, and the trace is exact (stderr 0). The times of the
  exact tr G and of the residual are reported apart;
* for comparison (``--trace-method hutchinson`` or ``both``), plain Hutchinson on H
  (``hutchinson_trace``): with ``both``, ``--hutchinson-probes`` probes (default 32) give its
  relative standard error per probe and the probes (and time) that 1% would need; with
  ``hutchinson``, probes are added in blocks of 32 until ``--rtol`` or ``--max-probes``;
* the top-5 eigenvalues by Lanczos (``lanczos_eigenvalues(H, 5, tol=1e-3)``);
* the spectral density by stochastic Lanczos quadrature (``lanczos_spectral_density``, 40 steps, one
  probe by default: PyHessian's default is 100 steps and one probe);

with the wall time of each (torch's default number of threads), the peak resident set size of the
process (``resource.getrusage``; target < 2 GB) and, on a GPU, the peak GPU memory. The load average
of the machine is printed at the start and the end (other processes sharing the cores slow every
stage).

    .venv/bin/python benchmarks/bench_scale.py                    # the full run (CPU)
    .venv/bin/python benchmarks/bench_scale.py --examples 1024    # reduced: the first 1024 examples
    .venv/bin/python benchmarks/bench_scale.py --device cuda      # on a GPU (skips without CUDA)
    .venv/bin/python benchmarks/bench_scale.py --examples 512 --trace-method both --skip eigenvalues density

A reduced run keeps the full 10,000-example dataset in memory (so the memory figure stays that of the
full run) but streams only its first ``--examples``; it prints each stage's time extrapolated to all
10,000 examples by the number of batches (every stage is a number of passes over the data, each pass
a fixed cost per batch; the numbers of probes and Lanczos steps are those of the reduced Hessian).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from flatminima.curvature import (
    HessianOperator,
    ggn_control_trace,
    hutchinson_trace,
    lanczos_eigenvalues,
    lanczos_spectral_density,
)
from flatminima.curvature import _ggn_exact as ggn_exact  # its stage is timed apart

EXAMPLES = 10_000


def make_model(widths: tuple[int, ...] = (32, 64, 128, 384), hidden: int = 1024) -> nn.Sequential:
    """The CNN of the module docstring (941,706 parameters with the default widths)."""
    layers: list[nn.Module] = []
    channels = 3
    for width in widths:
        layers += [
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = width
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    ]
    return nn.Sequential(*layers)


def make_data(examples: int = EXAMPLES, seed: int = 0) -> TensorDataset:
    """Gaussian 3x32x32 images with labels from a random linear teacher on 4x4-pooled images."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(examples, 3, 32, 32, generator=g)
    teacher = torch.randn(3 * 4 * 4, 10, generator=g)
    y = (nn.functional.adaptive_avg_pool2d(X, 4).flatten(1) @ teacher).argmax(dim=1)
    return TensorDataset(X, y)


class DeviceBatches:
    """Re-iterable (inputs, targets) batches of a DataLoader, moved to ``device`` one batch at a time."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for inputs, targets in self.loader:
            yield inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.loader)


def calibrate_batch_norm(model: nn.Module, batches: Any, count: int = 4) -> None:
    """Running BatchNorm statistics from the first ``count`` batches (cumulative average), then eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for index, (inputs, _) in enumerate(batches):
            if index == count:
                break
            model(inputs)
    model.eval()


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


class StageTimer:
    """Times every call of a module-level function (here the exact tr G inside ggn_control_trace)."""

    def __init__(self, module: Any, name: str) -> None:
        self.module, self.name, self.seconds = module, name, 0.0
        self.original = getattr(module, name)

    def __enter__(self) -> StageTimer:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(self.module, self.name, timed_call)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.module, self.name, self.original)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other processes sharing the cores)."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument("--examples", type=int, default=EXAMPLES, help="stream the first N examples")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rtol", type=float, default=0.01, help="the trace's relative standard error")
    parser.add_argument("--max-probes", type=int, default=3200, help="probe budget of the trace")
    parser.add_argument(
        "--trace-method",
        default="ggn_control",
        choices=("ggn_control", "hutchinson", "both"),
        help="ggn_control_trace (default), plain hutchinson_trace to --rtol, or both (Hutchinson with "
        "--hutchinson-probes probes, for its rse per probe)",
    )
    parser.add_argument("--hutchinson-probes", type=int, default=32, help="Hutchinson's probes with 'both'")
    parser.add_argument("--ggn-chunk", type=int, default=None, help="examples per vmapped per-example call")
    parser.add_argument("--top", type=int, default=5, help="Lanczos: number of top eigenvalues")
    parser.add_argument("--lanczos-tol", type=float, default=1e-3)
    parser.add_argument("--lanczos-max-iterations", type=int, default=120)
    parser.add_argument("--density-iterations", type=int, default=40)
    parser.add_argument("--density-repeats", type=int, default=1)
    parser.add_argument("--skip", nargs="*", default=[], choices=("trace", "eigenvalues", "density"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here; skipping.")
        return 0
    torch.manual_seed(0)
    model = make_model().to(device)
    data = make_data()
    subset = data if args.examples >= len(data) else Subset(data, range(args.examples))
    loader = DataLoader(subset, batch_size=args.batch_size, shuffle=False, pin_memory=device.type == "cuda")
    batches = DeviceBatches(loader, device)
    calibrate_batch_norm(model, batches)
    n_params = sum(p.numel() for p in model.parameters())
    full_batches = math.ceil(len(data) / args.batch_size)
    scale = full_batches / len(loader)
    print(
        f"torch {torch.__version__} on {device} ({torch.get_num_threads()} threads); CNN with "
        f"{n_params:,} parameters; {len(subset):,} of {len(data):,} examples in {len(loader)} batches of "
        f"{args.batch_size}" + (f"; times x{scale:.2f} extrapolate to all {len(data):,}" if scale > 1 else "")
    )
    print(
        f"peak RSS after building the data and model: {peak_rss_mib():.0f} MiB; load average {load_average()}"
    )

    rows: list[tuple[str, float, str]] = []

    def report(stage: str, seconds: float, detail: str, *, part: bool = False) -> None:
        if not part:  # a part of a stage already counted is printed only
            rows.append((stage, seconds, detail))
        extra = f"  (x{scale:.2f}: {seconds * scale:8.1f} s)" if scale > 1 else ""
        print(f"{stage:<28}{seconds:9.1f} s{extra}  peak RSS {peak_rss_mib():6.0f} MiB  {detail}", flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        H, seconds = timed(
            device,
            lambda: HessianOperator.from_model(model, nn.functional.cross_entropy, batches, mode="eval"),
        )
        report("build (one checking pass)", seconds, f"n = {H.size:,}")
        (value, grad), seconds = timed(device, lambda: H.value_and_grad_at(H.point))
        report("one full-data gradient", seconds, f"loss {float(value):.4f}, |grad| {float(grad.norm()):.3e}")
        generator = torch.Generator().manual_seed(0)
        if "trace" not in args.skip and args.trace_method in ("ggn_control", "both"):
            with StageTimer(ggn_exact, "ggn_trace") as ggn_timer:
                result, seconds = timed(
                    device,
                    lambda: ggn_control_trace(
                        H,
                        args.max_probes,
                        generator=generator,
                        rtol=args.rtol,
                        chunk_size=args.ggn_chunk,
                    ),
                )
            report(
                "  exact tr G",
                ggn_timer.seconds,
                f"tr G = {result.ggn_trace:.6e} "
                f"({result.vjps_per_example} per-example VJPs x {result.num_examples:,} examples)",
                part=True,
            )
            zero = len(result.zero_blocks)
            blocks = len(result.block_residuals)
            report(
                "  residual tr R",
                seconds - ggn_timer.seconds,
                f"tr R = {result.residual:.3e} +- {result.stderr:.1e} ({result.num_matvecs} products; "
                f"{zero} of {blocks} blocks exactly 0 at screening; {result.num_samples} samples)",
                part=True,
            )
            report(
                f"ggn_control to {100 * args.rtol:g}% rse",
                seconds,
                f"tr H = {result.value:.6e} +- {result.stderr:.1e} (rse {result.relative_error:.1e}, "
                f"converged={result.converged})",
            )
        if "trace" not in args.skip and args.trace_method in ("hutchinson", "both"):
            fixed = args.trace_method == "both"
            probes = args.hutchinson_probes if fixed else args.max_probes
            estimate, seconds = timed(
                device,
                lambda: hutchinson_trace(
                    H,
                    probes,
                    generator=generator,
                    rtol=None if fixed else args.rtol,
                    min_probes=min(10, probes),
                ),
            )
            spread = estimate.stderr * math.sqrt(estimate.num_samples)  # one probe's standard deviation
            needed = math.ceil((spread / (args.rtol * abs(estimate.value))) ** 2)
            per_probe = seconds / estimate.num_samples
            report(
                f"Hutchinson, {estimate.num_samples} probes"
                if fixed
                else f"Hutchinson to {100 * args.rtol:g}% rse",
                seconds,
                f"tr H = {estimate.value:.4e} +- {estimate.stderr:.1e} (rse {estimate.relative_error:.1e}, "
                f"{estimate.num_samples} probes, converged={estimate.converged}; "
                f"{per_probe:.2f} s per probe; one probe's rse {spread / abs(estimate.value):.2f}, so "
                f"{100 * args.rtol:g}% asks for ~{needed} probes, ~{needed * per_probe * scale / 3600:.1f} h "
                f"on all {len(data):,} examples)",
            )
        if "eigenvalues" not in args.skip:
            result, seconds = timed(
                device,
                lambda: lanczos_eigenvalues(
                    H,
                    args.top,
                    generator=generator,
                    tol=args.lanczos_tol,
                    max_iterations=args.lanczos_max_iterations,
                ),
            )
            values = ", ".join(f"{float(v):.4g}" for v in result.eigenvalues)
            report(
                f"Lanczos top-{args.top}",
                seconds,
                f"[{values}] ({result.num_matvecs} products, converged={result.converged})",
            )
        if "density" not in args.skip:
            density, seconds = timed(
                device,
                lambda: lanczos_spectral_density(
                    H, args.density_iterations, num_repeats=args.density_repeats, generator=generator
                ),
            )
            nodes = density.nodes[density.weights > 0]
            report(
                "spectral density (SLQ)",
                seconds,
                f"{density.num_matvecs} products; Ritz values in [{float(nodes.min()):.3g}, "
                f"{float(nodes.max()):.3g}], trace/n {float(density.mean().value):.3e}",
            )
    total = sum(seconds for _, seconds, _ in rows)
    print(
        f"total {total:.1f} s" + (f" (extrapolated x{scale:.2f}: {total * scale:.1f} s)" if scale > 1 else "")
    )
    print(f"peak RSS {peak_rss_mib():.0f} MiB (target < 2048 MiB); load average {load_average()}")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
