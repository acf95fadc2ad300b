"""Fixtures of the nonconvex-solver and optimizer tests; makes ``nonconvex_cases`` importable.

The tests pin torch to one intra-op thread while they run (restored afterwards): the problems are tiny,
and on a shared 2-core machine oversubscribed OpenMP threads slow small kernels down by orders of
magnitude. The suite runs with ``--import-mode=importlib``, which does not put test folders on
``sys.path``; this file does, for the helper module of this folder.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
