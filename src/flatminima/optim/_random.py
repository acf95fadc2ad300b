"""Noise draws from an explicit generator (never the global RNG), shared by the optimizers and solvers."""

from __future__ import annotations

from typing import Any

import torch

from flatminima._checks import check_generator
from flatminima.errors import InputDataError, InputTypeError

DISTRIBUTIONS = ("rademacher", "gaussian")


def require_generator(owner: str, generator: Any) -> torch.Generator:
    """Return ``generator`` if it is a ``torch.Generator``; a stochastic method cannot run without one.

    Raises:
        InputTypeError: naming the method, when ``generator`` is None or not a generator.
    """
    if generator is None:
        raise InputTypeError(
            f"{owner} is stochastic and needs generator=torch.Generator (e.g. "
            "torch.Generator().manual_seed(0)); got generator=None."
        )
    return check_generator("generator", generator)


def check_distribution(distribution: Any) -> str:
    """Return ``distribution`` if it is one of :data:`DISTRIBUTIONS`."""
    if distribution not in DISTRIBUTIONS:
        raise InputDataError(
            f"distribution must be one of {', '.join(repr(d) for d in DISTRIBUTIONS)}; "
            f"got distribution={distribution!r}."
        )
    return str(distribution)


def standard_normal_like(like: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """N(0, 1) entries shaped like ``like``, drawn in float64 on the generator's device, then moved.

    Drawing in float64 makes the noise stream independent of ``like``'s dtype (float32 and float64 runs
    see the same numbers up to rounding).
    """
    draw = torch.randn(like.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return draw.to(device=like.device, dtype=like.dtype)


def rademacher_like(like: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Independent +-1 entries shaped like ``like`` (drawn on the generator's device, then moved)."""
    bits = torch.randint(0, 2, like.shape, generator=generator, device=generator.device)
    return (2 * bits - 1).to(device=like.device, dtype=like.dtype)


def noise_like(like: torch.Tensor, distribution: str, *, generator: torch.Generator) -> torch.Tensor:
    """Rademacher (+-1) or standard Gaussian entries shaped like ``like``; both have mean 0, variance 1."""
    if distribution == "rademacher":
        return rademacher_like(like, generator=generator)
    return standard_normal_like(like, generator=generator)
