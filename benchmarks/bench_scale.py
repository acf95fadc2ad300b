"""Curvature of a ~1M-parameter CNN over 10,000 streamed examples: wall time and peak memory.

The model: four 3x3 convolutions (3->32->64->128->256 channels), each followed by BatchNorm (eval
mode, running statistics estimated on the first batches), ReLU and 2x2 max-pooling, on 3x32x32
inputs, then global average pooling and a linear layer 256->1024, ReLU, 1024->10 (1.04M parameters);
cross-entropy. The data: 10,000 synthetic examples from a fixed ``torch.Generator`` (Gaussian images,
labels from a random linear teacher on 4x4-pooled images; nothing downloaded), streamed through a
``DataLoader`` in batches of 256: no step holds more than one batch's activations, so memory does not
grow with the dataset.

Measured, each over the whole dataset (``HessianOperator.from_model(..., mode="eval")``):

* one full-data gradient (the unit of cost);
* Hutchinson's trace to 1% relative standard error (``hutchinson_trace(..., rtol=0.01)``, blocks of 32
  probes; it stops when reached and the number of probes is reported);
* the top-5 eigenvalues by Lanczos (``lanczos_eigenvalues(H, 5, tol=1e-3)``);
* the spectral density by stochastic Lanczos quadrature (``lanczos_spectral_density``, 40 steps, one
  probe by default: PyHessian's default is 100 steps and one probe);

with the wall time of each (torch's default number of threads), the peak resident set size of the
process (``resource.getrusage``; target < 2 GB) and, on a GPU, the peak GPU memory.

    .venv/bin/python benchmarks/bench_scale.py                    # the full run (CPU)
    .venv/bin/python benchmarks/bench_scale.py --examples 1024    # reduced: the first 1024 examples
    .venv/bin/python benchmarks/bench_scale.py --device cuda      # on a GPU (skips without CUDA)

A reduced run keeps the full 10,000-example dataset in memory (so the memory figure stays that of the
full run) but streams only its first ``--examples``; it prints each stage's time extrapolated to all
10,000 examples by the number of batches (every stage is a number of passes over the data, each pass
a fixed cost per batch; the numbers of probes and Lanczos steps are those of the reduced Hessian).
"""

from __future__ import annotations

import argparse
import math
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
    hutchinson_trace,
    lanczos_eigenvalues,
    lanczos_spectral_density,
)

EXAMPLES = 10_000


def make_model(widths: tuple[int, ...] = (32, 64, 128, 384), hidden: int = 1024) -> nn.Sequential:
    """The CNN of the module docstring (1.04M parameters with the default widths)."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument("--examples", type=int, default=EXAMPLES, help="stream the first N examples")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rtol", type=float, default=0.01, help="Hutchinson's relative standard error")
    parser.add_argument("--max-probes", type=int, default=3200, help="Hutchinson's probe budget")
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
    print(f"peak RSS after building the data and model: {peak_rss_mib():.0f} MiB")

    rows: list[tuple[str, float, str]] = []

    def report(stage: str, seconds: float, detail: str) -> None:
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
        if "trace" not in args.skip:
            estimate, seconds = timed(
                device,
                lambda: hutchinson_trace(H, args.max_probes, generator=generator, rtol=args.rtol),
            )
            spread = estimate.stderr * math.sqrt(estimate.num_samples)  # one probe's standard deviation
            needed = math.ceil((spread / (args.rtol * abs(estimate.value))) ** 2)
            report(
                f"Hutchinson to {100 * args.rtol:g}% rse",
                seconds,
                f"tr H = {estimate.value:.4e} +- {estimate.stderr:.1e} ({estimate.num_samples} probes, "
                f"converged={estimate.converged}; {seconds / estimate.num_samples:.2f} s per probe; "
                f"the probes' spread asks for ~{needed} probes)",
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
    print(f"peak RSS {peak_rss_mib():.0f} MiB (target < 2048 MiB)")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
