"""Shared fixtures: explicit generators, dtypes and devices (CUDA params skip without a GPU)."""

from __future__ import annotations

import doctest
import importlib
from collections.abc import Callable

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA is not available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docstring_examples() -> Callable[[str], doctest.TestResults]:
    """Run the docstring examples of a module by name (torch in scope, whitespace normalized)."""

    def run(name: str) -> doctest.TestResults:
        module = importlib.import_module(name)
        return doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, extraglobs={"torch": torch})

    return run
