"""Every docstring example of flatminima.curvature runs and prints what it shows."""

from __future__ import annotations

import doctest
import pkgutil
from collections.abc import Callable

import pytest

import flatminima.curvature

MODULES = sorted(
    name for _, name, _ in pkgutil.iter_modules(flatminima.curvature.__path__, prefix="flatminima.curvature.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples(name)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
