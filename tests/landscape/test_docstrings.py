"""Every docstring example of flatminima.landscape and flatminima.networks runs and prints what it shows."""

from __future__ import annotations

import doctest
import pkgutil
from collections.abc import Callable

import pytest

import flatminima.landscape
import flatminima.networks

MODULES = sorted(
    name
    for package in (flatminima.landscape, flatminima.networks)
    for _, name, _ in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples(name)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
