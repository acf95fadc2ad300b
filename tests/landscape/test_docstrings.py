"""Every docstring example of flatminima.landscape and flatminima.networks runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import flatminima.landscape
import flatminima.networks

MODULES = sorted(
    name
    for package in (flatminima.landscape, flatminima.networks)
    for _, name, _ in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.NORMALIZE_WHITESPACE, extraglobs={"torch": __import__("torch")}
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
