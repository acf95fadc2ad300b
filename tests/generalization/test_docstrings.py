"""Every docstring example of the generalization package runs and gives what it shows."""

from __future__ import annotations

import doctest
from collections.abc import Callable

import pytest

MODULES = [
    "flatminima.generalization.digits",
    "flatminima.generalization.kl",
    "flatminima.generalization.linear_stability",
    "flatminima.generalization.stability",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples(name)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0


def test_public_names_are_exported_and_listed_in_the_package_docstring() -> None:
    import flatminima.generalization as package

    for name in package.__all__:
        assert hasattr(package, name)
        assert name in (package.__doc__ or ""), name
