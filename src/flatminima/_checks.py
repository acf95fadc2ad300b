"""Argument validation with one-line messages that name the argument, the requirement and the value.

Every public entry point validates its inputs with these helpers, never with ``assert``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from flatminima.errors import InputDataError, InputTypeError


def check_int_in_range(
    name: str, value: Any, *, low: int | None = None, high: int | None = None, high_name: str = ""
) -> int:
    """Return ``value`` if it is an integer with ``low <= value <= high``; raise otherwise.

    Raises:
        InputTypeError: if ``value`` is not an integer (bools are rejected).
        InputDataError: if ``value`` is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name} must be an integer; got {value!r} of type {type(value).__name__}.")
    if low is not None and high is not None and not low <= value <= high:
        bound = f"{high_name} = {high}" if high_name else str(high)
        raise InputDataError(f"{name} must satisfy {low} <= {name} <= {bound}; got {name}={value}.")
    if low is not None and value < low:
        raise InputDataError(f"{name} must be >= {low}; got {name}={value}.")
    if high is not None and value > high:
        bound = f"{high_name} = {high}" if high_name else str(high)
        raise InputDataError(f"{name} must be <= {bound}; got {name}={value}.")
    return value


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` if it is a finite real number inside the given (half-)open interval."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputTypeError(f"{name} must be a real number; got {value!r} of type {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value):
        raise InputDataError(f"{name} must be finite; got {name}={value}.")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "" if low is None else f"{low} {'<' if low_open else '<='} "
        right = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise InputDataError(f"{name} must satisfy {left}{name}{right}; got {name}={value}.")
    return value


def check_shape_pair(name: str, value: Any) -> tuple[int, int]:
    """Return ``(d1, d2)`` if ``value`` is a pair of positive integers."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise InputDataError(f"{name} must be a pair (d1, d2) of positive integers; got {name}={value!r}.")
    d1 = check_int_in_range(f"{name}[0]", value[0], low=1)
    d2 = check_int_in_range(f"{name}[1]", value[1], low=1)
    return d1, d2


def check_tensor(
    name: str,
    value: Any,
    *,
    shape: Sequence[int | None] | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Return ``value`` if it is a floating tensor of the given shape (``None``: any size), entries finite."""
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}.")
    if not value.is_floating_point():
        raise InputTypeError(f"{name} must have a floating dtype; got {name}.dtype={value.dtype}.")
    if shape is not None:
        ok = value.ndim == len(shape) and all(
            want is None or have == want for have, want in zip(value.shape, shape, strict=True)
        )
        if not ok:
            wanted = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise InputDataError(f"{name} must have shape {wanted}; got {name}.shape={tuple(value.shape)}.")
    if finite and not all_finite(value):
        raise InputDataError(f"{name} must have finite entries; got NaN or inf in {name}.")
    return value


def all_finite(value: torch.Tensor, *, chunk_size: int = 1 << 20) -> bool:
    """True iff every entry is finite; checks in chunks so large tensors need no tensor-sized temporary."""
    flat = value.reshape(-1)
    return all(bool(torch.isfinite(chunk).all()) for chunk in flat.split(chunk_size))


def check_same_dtype_device(**tensors: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    """Check that every tensor shares one dtype and one device; return them.

    Raises:
        InputDataError: naming each tensor with its dtype or device when they differ.
    """
    items = list(tensors.items())
    if not items:
        raise InputDataError("check_same_dtype_device needs at least one tensor.")
    _, first = items[0]
    if any(t.dtype != first.dtype for _, t in items):
        listing = ", ".join(f"{n} is {t.dtype}" for n, t in items)
        raise InputDataError(f"expected one dtype for all inputs; got {listing}.")
    if any(t.device != first.device for _, t in items):
        listing = ", ".join(f"{n} on {t.device}" for n, t in items)
        raise InputDataError(f"expected one device for all inputs; got {listing}.")
    return first.dtype, first.device


def check_generator(name: str, value: Any) -> torch.Generator:
    """Return ``value`` if it is a ``torch.Generator`` (stochastic code never uses the global RNG)."""
    if not isinstance(value, torch.Generator):
        raise InputTypeError(
            f"{name} must be a torch.Generator (e.g. torch.Generator().manual_seed(0)); "
            f"got {type(value).__name__}."
        )
    return value


def first_nonfinite(
    value: torch.Tensor, *, chunk_size: int = 1 << 20
) -> tuple[tuple[int, ...], float, int] | None:
    """(index, value, count) of the first non-finite entry of ``value`` in row-major order, or None.

    ``count`` is the number of non-finite entries. Scans in chunks (no tensor-sized temporary) and only
    counts once a bad entry was found.
    """
    flat = value.detach().reshape(-1)
    offset = 0
    for chunk in flat.split(chunk_size):
        bad = ~torch.isfinite(chunk)
        if bool(bad.any()):
            position = offset + int(bad.nonzero()[0, 0])
            count = sum(int((~torch.isfinite(part)).sum()) for part in flat.split(chunk_size))
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(position), tuple(value.shape)))
            return index, float(flat[position]), count
        offset += chunk.numel()
    return None


def check_finite_entries(name: str, value: torch.Tensor) -> torch.Tensor:
    """Return ``value`` if every entry is finite; else raise naming the first bad index and its value.

    Raises:
        InputDataError: e.g. ``observations must have finite entries; got observations[3]=nan (the first
            of 2 non-finite entries).``
    """
    found = first_nonfinite(value)
    if found is None:
        return value
    index, bad, count = found
    where = ", ".join(str(i) for i in index)
    more = f"the first of {count} non-finite entries" if count > 1 else "the only non-finite entry"
    raise InputDataError(f"{name} must have finite entries; got {name}[{where}]={bad} ({more}).")
