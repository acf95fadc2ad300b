"""Every docstring example of the nonconvex solvers and the optimizers runs and gives what it shows."""

from __future__ import annotations

import doctest
import importlib

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
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.NORMALIZE_WHITESPACE, extraglobs={"torch": __import__("torch")}
    )
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
