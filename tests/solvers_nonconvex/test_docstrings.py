"""Every docstring example of the nonconvex solvers and the optimizers runs and gives what it shows."""

from __future__ import annotations

import doctest
from collections.abc import Callable

import pytest

MODULES = [
    "flatminima.optim.entropy_sgd",
    "flatminima.optim.label_noise",
    "flatminima.optim.penalty",
    "flatminima.optim.sam",
    "flatminima.optim.swa",
    "flatminima.solvers.nonconvex.descent",
    "flatminima.solvers.nonconvex.entropy",
    "flatminima.solvers.nonconvex.label_noise",
    "flatminima.solvers.nonconvex.penalty",
    "flatminima.solvers.nonconvex.sam",
    "flatminima.solvers.nonconvex.swa",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, docstring_examples: Callable[[str], doctest.TestResults]) -> None:
    result = docstring_examples(name)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
