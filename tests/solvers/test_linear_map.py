"""The rescaled measurement map B = A(D1^{-1} . D2^{-1}): its Gram matrix and adjoint against dense rows."""

from __future__ import annotations

import pytest
import torch

from flatminima.problems import BilinearSensing, MatrixCompletion, MatrixSensing, Problem
from flatminima.solvers.convex import linear_map
from flatminima.solvers.convex.linear_map import ScaledMap, rescaling_inverses, symmetric_gram

PROBLEMS: list[Problem] = [
    MatrixSensing(shape=(5, 6), rank=1, num_measurements=40),
    BilinearSensing(shape=(5, 6), rank=1, num_measurements=40),
    MatrixCompletion(shape=(6, 6), rank=1, probability=0.7),
]


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
@pytest.mark.parametrize("copy_limit", [0, 10**9], ids=["chunked", "scaled-copy"])
def test_gram_is_rows_times_rows(problem: Problem, copy_limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """B B^* equals R R^T for the dense rows R of B, on both the chunked and the scaled-copy paths."""
    monkeypatch.setattr(linear_map, "_GRAM_COPY_LIMIT", copy_limit)
    instance = problem.sample(generator=torch.Generator().manual_seed(2))
    left, right, _ = rescaling_inverses(instance.operator)
    bmap = ScaledMap(instance.operator, left, right)
    rows = bmap.dense_rows()
    assert torch.allclose(bmap.gram(), rows @ rows.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 3, 4, 7, 13])
def test_symmetric_gram_matches_the_product(n: int) -> None:
    H = torch.randn(n, 6, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    G = symmetric_gram(H)
    assert torch.equal(G, G.T)
    assert torch.allclose(G, H @ H.T, rtol=1e-13, atol=1e-13)
