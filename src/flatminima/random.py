"""Explicit random streams: generators from seeds and independent child streams.

Library code never touches the global RNG. Integers become generators only at the boundary (CLI, sweep
specifications) through :func:`make_generator`; one trial seed is split into named child streams with
:func:`child_generators`, so changing the solver never changes the instance.
"""

from __future__ import annotations

import hashlib

import torch

from flatminima._checks import check_int_in_range


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a ``torch.Generator`` on ``device`` seeded with ``seed``.

    Example:
        >>> g = make_generator(0)
        >>> float(torch.rand(1, generator=g)) == float(torch.rand(1, generator=make_generator(0)))
        True
    """
    check_int_in_range("seed", seed, low=0)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def derive_seed(seed: int, stream: str) -> int:
    """Return a 63-bit seed for the child stream ``stream`` of ``seed`` (stable across runs and machines)."""
    check_int_in_range("seed", seed, low=0)
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def child_generators(seed: int, *streams: str) -> dict[str, torch.Generator]:
    """Return independent CPU generators, one per named stream, all derived from ``seed``.

    Example:
        >>> gens = child_generators(7, "instance", "init")
        >>> sorted(gens)
        ['init', 'instance']
    """
    return {stream: make_generator(derive_seed(seed, stream)) for stream in streams}
